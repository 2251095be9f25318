//! Applying the change feed, trimming and conflicts against a real store in a temp
//! dir (the real migrations, the real writer thread).

use std::path::PathBuf;

use branchline_sync::wire::{
    self, Change, Conflict, DownResponse, Entity, EntityKind, FilePolicy, GroupMembership,
};
use rusqlite::Connection;

use super::store::SyncStore;
use crate::accounts::{self, Accounts, AuthSettings, HashParams, NewUser, PageRequest};
use crate::audit::Actor;
use crate::error::Error;
use crate::store::{ExtensionRow, Store};

const FAST: HashParams = HashParams {
    m_kib: 64,
    t: 1,
    p: 1,
};
const T0: i64 = 1_700_000_000_000;

struct Env {
    _dir: tempfile::TempDir,
    path: PathBuf,
    sync: SyncStore,
    accounts: Accounts,
    hash: String,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("branchline.db");
    let store = Store::open(&path).expect("open");
    let (writer, _thread) = store.spawn_writer();
    writer
        .replace_board(
            vec![(1, "fxs"), (2, "fxs")],
            vec![ExtensionRow {
                number: "101".to_owned(),
                name: "Reception".to_owned(),
                port: Some(1),
                call_waiting: true,
            }],
        )
        .await
        .expect("board");
    let settings = AuthSettings {
        hash: FAST,
        ..AuthSettings::default()
    };
    Env {
        sync: SyncStore::new(writer.clone(), path.clone()),
        accounts: Accounts::new(writer, path.clone(), settings),
        hash: accounts::password::hash_secret("a-Good-passphrase-42", FAST).expect("hash"),
        path,
        _dir: dir,
    }
}

impl Env {
    fn db(&self) -> Connection {
        Connection::open(&self.path).expect("open db")
    }

    fn count(&self, query: &str) -> i64 {
        self.db().query_row(query, [], |r| r.get(0)).expect("count")
    }

    fn outbox_len(&self) -> i64 {
        self.count("SELECT COUNT(*) FROM outbox")
    }

    fn cursor(&self) -> i64 {
        self.sync.state().expect("state").down_cursor
    }

    fn user(&self, name: &str, roles: &[&str], groups: &[(&str, bool)]) -> wire::User {
        wire::User {
            username: name.to_owned(),
            display_name: format!("{name} from HQ"),
            password_hash: self.hash.clone(),
            pin_hash: None,
            agent_id: None,
            extension: None,
            enabled: true,
            must_change_password: false,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            groups: groups
                .iter()
                .map(|(g, admin)| GroupMembership {
                    group: (*g).to_owned(),
                    admin: *admin,
                })
                .collect(),
        }
    }

    async fn local_user(&self, name: &str) {
        self.accounts
            .create_user(
                &Actor::new("root", "console"),
                NewUser {
                    username: name.to_owned(),
                    password: "a-Good-passphrase-42".to_owned(),
                    enabled: true,
                    roles: vec!["agent".to_owned()],
                    ..NewUser::default()
                },
                T0,
            )
            .await
            .expect("local user");
    }
}

fn upsert(revision: i64, row: Entity) -> Change {
    Change {
        revision,
        entity: row.kind(),
        key: row.key().to_owned(),
        row: Some(row),
    }
}

fn delete(revision: i64, entity: EntityKind, key: &str) -> Change {
    Change {
        revision,
        entity,
        key: key.to_owned(),
        row: None,
    }
}

fn page(changes: Vec<Change>) -> DownResponse {
    let cursor = changes.last().map_or(0, |c| c.revision);
    DownResponse::Page {
        version: wire::PROTOCOL_VERSION,
        changes,
        cursor,
        more: false,
    }
}

fn role(name: &str, perms: &[(&str, &str, &str)]) -> Entity {
    Entity::Role(wire::Role {
        name: name.to_owned(),
        description: format!("{name} role"),
        permissions: perms
            .iter()
            .map(|(r, a, s)| wire::Permission {
                resource: (*r).to_owned(),
                action: (*a).to_owned(),
                scope: (*s).to_owned(),
            })
            .collect(),
    })
}

fn group(name: &str) -> Entity {
    Entity::Group(wire::Group {
        name: name.to_owned(),
        description: String::new(),
    })
}

#[tokio::test]
async fn a_page_applies_users_roles_groups_and_moves_the_cursor_without_echo() {
    let env = env().await;
    let outbox_before = env.outbox_len();
    let generation_before = env.count("SELECT rbac_generation FROM box_state");
    let applied = env
        .sync
        .apply_down(
            page(vec![
                upsert(3, role("night_shift", &[("calls", "view", "group")])),
                upsert(4, group("team-a")),
                upsert(
                    5,
                    Entity::User(env.user("hana", &["night_shift", "agent"], &[("team-a", true)])),
                ),
                upsert(
                    6,
                    Entity::Queue(wire::Queue {
                        number: "600".to_owned(),
                        name: "Sales".to_owned(),
                        strategy: "longest_idle".to_owned(),
                        max_wait_s: 120,
                        overflow: None,
                        agents: vec!["hana".to_owned()],
                    }),
                ),
            ]),
            T0,
        )
        .await
        .expect("page applies");
    assert_eq!(applied.upserted, 4);
    assert_eq!(applied.cursor, 6);
    assert_eq!(env.cursor(), 6);
    // No echo: applying HQ's rows wrote no outbox rows (not even audit rows).
    assert_eq!(env.outbox_len(), outbox_before);
    assert!(env.count("SELECT rbac_generation FROM box_state") > generation_before);

    let reader = env.sync.reader().expect("reader");
    let hana = accounts::user_by_name(&reader, "hana")
        .expect("read")
        .expect("hana exists");
    assert_eq!(hana.revision, 5);
    assert_eq!(hana.roles, ["agent", "night_shift"]);
    assert_eq!(hana.groups.len(), 1);
    assert!(hana.groups[0].is_group_admin);
    assert_eq!(
        env.count("SELECT revision FROM roles WHERE name = 'night_shift'"),
        3
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM hq_rows WHERE kind = 'queue' AND key = '600'"),
        1
    );
    // The hash is taken as given: hana logs in with HQ's password.
    env.accounts
        .verify_login("hana", "a-Good-passphrase-42", "test", T0)
        .await
        .expect("hana logs in");

    // An update keeps the row id; a delete removes the user.
    let mut changed = env.user("hana", &["agent"], &[]);
    changed.display_name = "Hana R.".to_owned();
    env.sync
        .apply_down(page(vec![upsert(9, Entity::User(changed))]), T0)
        .await
        .expect("update");
    let again = accounts::user_by_name(&reader, "hana")
        .expect("read")
        .expect("still there");
    assert_eq!(again.id, hana.id);
    assert_eq!(again.display_name, "Hana R.");
    assert!(again.groups.is_empty());
    env.sync
        .apply_down(page(vec![delete(10, EntityKind::User, "hana")]), T0)
        .await
        .expect("delete");
    assert!(accounts::user_by_name(&reader, "hana")
        .expect("read")
        .is_none());
    assert_eq!(env.cursor(), 10);
    // The login above wrote its audit row (and that row's outbox row); nothing else.
    assert_eq!(env.outbox_len(), outbox_before + 1);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM outbox WHERE kind <> 'audit'"),
        0
    );
}

#[tokio::test]
async fn a_page_with_one_bad_row_is_refused_whole_and_changes_nothing() {
    let env = env().await;
    env.sync
        .apply_down(page(vec![upsert(2, group("team-a"))]), T0)
        .await
        .expect("first page");
    let users_before = env.count("SELECT COUNT(*) FROM users");
    let bad_pages = [
        (
            vec![
                upsert(3, Entity::User(env.user("ivan", &["agent"], &[]))),
                upsert(4, Entity::User(env.user("jana", &["no_such_role"], &[]))),
            ],
            "unknown role \"no_such_role\"",
        ),
        (
            vec![
                upsert(3, Entity::User(env.user("ivan", &["agent"], &[]))),
                upsert(4, role("auditor", &[("calls", "peek", "site")])),
            ],
            "peek",
        ),
        (
            vec![upsert(
                3,
                Entity::User(env.user("ivan", &[], &[("no_team", false)])),
            )],
            "unknown group",
        ),
        (
            vec![upsert(
                3,
                Entity::User(wire::User {
                    password_hash: "plaintext".to_owned(),
                    ..env.user("ivan", &[], &[])
                }),
            )],
            "password_hash",
        ),
        (
            vec![upsert(3, Entity::User(env.user("installer", &[], &[])))],
            "reserved",
        ),
        (
            // Revisions must come after the cursor (2).
            vec![upsert(2, Entity::User(env.user("ivan", &[], &[])))],
            "does not come after",
        ),
        (
            // The row's key must be the change's key.
            vec![Change {
                key: "someone_else".to_owned(),
                ..upsert(3, Entity::User(env.user("ivan", &[], &[])))
            }],
            "differs",
        ),
    ];
    for (changes, expected) in bad_pages {
        let e = env
            .sync
            .apply_down(page(changes), T0 + 5)
            .await
            .expect_err("refused");
        assert!(matches!(e, Error::SyncRefused { .. }), "{e:?}");
        assert!(e.to_string().contains(expected), "{e} lacks {expected:?}");
        assert!(e.to_string().contains("nothing applied"), "{e}");
        // Nothing applied, the cursor did not move, the error shows in the status.
        assert_eq!(env.count("SELECT COUNT(*) FROM users"), users_before);
        assert_eq!(
            env.count("SELECT COUNT(*) FROM roles WHERE name = 'auditor'"),
            0
        );
        assert_eq!(env.cursor(), 2);
        let state = env.sync.state().expect("state");
        assert_eq!(state.last_error.as_deref(), Some(e.to_string().as_str()));
        assert_eq!(state.last_error_ms, Some(T0 + 5));
    }
}

#[tokio::test]
async fn a_snapshot_replaces_what_hq_masters_but_keeps_local_pending_rows() {
    let env = env().await;
    env.sync
        .apply_down(
            page(vec![
                upsert(2, role("night_shift", &[("calls", "view", "own")])),
                upsert(3, group("team-a")),
                upsert(
                    4,
                    Entity::User(env.user("old_hq_user", &["night_shift"], &[("team-a", false)])),
                ),
                upsert(
                    5,
                    Entity::Extension(wire::Extension {
                        number: "201".to_owned(),
                        name: "HQ only".to_owned(),
                        port: Some(2),
                        call_waiting: false,
                    }),
                ),
                upsert(
                    6,
                    Entity::Extension(wire::Extension {
                        number: "101".to_owned(),
                        name: "Front desk".to_owned(),
                        port: None,
                        call_waiting: false,
                    }),
                ),
                upsert(
                    7,
                    Entity::Blacklist(wire::BlacklistEntry {
                        pattern: "1900*".to_owned(),
                        reason: "premium".to_owned(),
                    }),
                ),
            ]),
            T0,
        )
        .await
        .expect("page");
    // The port map stays the config's: HQ's port 2 for 201 is not taken, 101 keeps 1.
    assert_eq!(
        env.count("SELECT COUNT(*) FROM extensions WHERE number = '201' AND port IS NULL"),
        1
    );
    assert_eq!(
        env.count("SELECT port FROM extensions WHERE number = '101' AND name = 'Front desk'"),
        1
    );
    // A user made on the box while offline, its edit still in the outbox.
    env.local_user("local_pending").await;
    let outbox_before = env.outbox_len();

    let snapshot = DownResponse::Snapshot {
        version: wire::PROTOCOL_VERSION,
        rows: vec![
            // Users before roles on purpose: the box orders them.
            upsert(
                40,
                Entity::User(env.user("new_hq_user", &["day_shift"], &[])),
            ),
            upsert(30, role("day_shift", &[("queues", "view", "site")])),
        ],
        cursor: 50,
    };
    let applied = env
        .sync
        .apply_down(snapshot, T0 + 1)
        .await
        .expect("snapshot");
    assert_eq!(applied.cursor, 50);
    assert_eq!(env.cursor(), 50);
    let reader = env.sync.reader().expect("reader");
    let names: Vec<String> = accounts::list_users(&reader, PageRequest::default())
        .expect("users")
        .items
        .into_iter()
        .map(|u| u.username)
        .collect();
    // Gone: old_hq_user. Kept: the installer (none in this store: not bootstrapped),
    // the local pending user, and the new one.
    assert_eq!(names, ["local_pending", "new_hq_user"]);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM roles WHERE name = 'night_shift'"),
        0
    );
    assert_eq!(env.count("SELECT COUNT(*) FROM groups"), 0);
    assert_eq!(env.count("SELECT COUNT(*) FROM hq_rows"), 0);
    // 201 was HQ's only: gone. 101 is the config's: back to a local row.
    assert_eq!(
        env.count("SELECT COUNT(*) FROM extensions WHERE number = '201'"),
        0
    );
    assert_eq!(
        env.count("SELECT revision FROM extensions WHERE number = '101' AND port = 1"),
        0
    );
    // Built-in roles are untouched.
    assert_eq!(env.count("SELECT COUNT(*) FROM roles WHERE builtin = 1"), 7);
    assert_eq!(env.outbox_len(), outbox_before);

    // Once HQ acknowledged the local user's edit (trimmed) and a new snapshot still
    // lacks it, it goes too.
    let last = env.count("SELECT MAX(seq) FROM outbox");
    env.sync
        .commit_ack(vec![], Some(last), None, T0 + 2)
        .await
        .expect("ack");
    env.sync
        .apply_down(
            DownResponse::Snapshot {
                version: wire::PROTOCOL_VERSION,
                rows: vec![upsert(30, role("day_shift", &[]))],
                cursor: 60,
            },
            T0 + 3,
        )
        .await
        .expect("second snapshot");
    assert_eq!(env.count("SELECT COUNT(*) FROM users"), 0);
}

fn display_of(env: &Env, username: &str) -> (String, i64) {
    env.db()
        .query_row(
            "SELECT display_name, revision FROM users WHERE username = ?1",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("user row")
}

#[tokio::test]
async fn a_feed_change_waits_while_the_boxs_own_edit_of_the_row_is_pending() {
    let env = env().await;
    // Made on the box while offline: the create is in the outbox.
    env.local_user("offline_kim").await;
    let display = |env: &Env| display_of(env, "offline_kim");
    let before = display(&env);
    // An older row for it comes down first (e.g. the revision of an earlier edit of the
    // box, or HQ's): not applied over the pending edit, but the cursor moves on.
    let applied = env
        .sync
        .apply_down(
            page(vec![
                upsert(10, Entity::User(env.user("offline_kim", &["agent"], &[]))),
                upsert(11, group("team-b")),
            ]),
            T0,
        )
        .await
        .expect("page");
    assert_eq!((applied.skipped, applied.upserted), (1, 1));
    assert_eq!(env.cursor(), 11);
    assert_eq!(display(&env), before, "the box's own edit is kept");
    // HQ acknowledged the edit (the outbox is trimmed): the next change of the row is
    // HQ's verdict and is applied.
    let last = env
        .sync
        .outbox_page(0, 1000)
        .expect("outbox")
        .records
        .last()
        .expect("rows")
        .seq;
    env.sync
        .commit_ack(vec![], Some(last), None, T0)
        .await
        .expect("ack");
    let applied = env
        .sync
        .apply_down(
            page(vec![upsert(
                12,
                Entity::User(env.user("offline_kim", &["agent"], &[])),
            )]),
            T0,
        )
        .await
        .expect("page");
    assert_eq!((applied.skipped, applied.upserted), (0, 1));
    assert_eq!(
        display(&env),
        ("offline_kim from HQ".to_owned(), 12),
        "applied once nothing is pending"
    );
    // A bad row is still refused, with the whole page, when its key has a pending edit.
    env.local_user("offline_lou").await;
    let lou = display_of(&env, "offline_lou");
    let mut bad = env.user("offline_lou", &["agent"], &[]);
    bad.password_hash = "plain-text".to_owned();
    let err = env
        .sync
        .apply_down(
            page(vec![
                upsert(13, group("team-c")),
                upsert(14, Entity::User(bad)),
            ]),
            T0,
        )
        .await
        .expect_err("a bad row is refused");
    assert!(err.to_string().contains("offline_lou"), "{err}");
    assert_eq!(env.cursor(), 12);
    assert_eq!(display_of(&env, "offline_lou"), lou);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM groups WHERE name = 'team-c'"),
        0
    );
}

#[tokio::test]
async fn a_refused_snapshot_changes_nothing() {
    let env = env().await;
    env.sync
        .apply_down(
            page(vec![upsert(
                3,
                Entity::User(env.user("keep_me", &["agent"], &[])),
            )]),
            T0,
        )
        .await
        .expect("page");
    let e = env
        .sync
        .apply_down(
            DownResponse::Snapshot {
                version: wire::PROTOCOL_VERSION,
                rows: vec![upsert(9, Entity::User(env.user("x_user", &["ghost"], &[])))],
                cursor: 9,
            },
            T0,
        )
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("snapshot refused"), "{e}");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM users WHERE username = 'keep_me'"),
        1
    );
    assert_eq!(env.cursor(), 3);
}

#[tokio::test]
async fn trimming_never_goes_beyond_what_was_sent_or_acknowledged() {
    let env = env().await;
    for name in ["kim", "lou", "max"] {
        env.local_user(name).await;
    }
    let page = env.sync.outbox_page(0, 1000).expect("page");
    let seqs: Vec<i64> = page.records.iter().map(|r| r.seq).collect();
    assert!(seqs.len() >= 6, "3 user rows and 3 audit rows: {seqs:?}");
    assert_eq!(page.backlog.depth, seqs.len() as i64);
    // Bounded pages.
    let first_two = env.sync.outbox_page(0, 2).expect("page");
    assert_eq!(first_two.records.len(), 2);
    assert_eq!(first_two.backlog.depth, seqs.len() as i64);

    // The uploader core decides how far to trim (never beyond what it sent or HQ
    // acknowledged, see its tests); the store deletes exactly that far, no further.
    let applied = env
        .sync
        .commit_ack(vec![], Some(seqs[1]), Some(FilePolicy::None), T0)
        .await
        .expect("ack");
    assert_eq!(applied.trimmed, 2);
    let page = env.sync.outbox_page(0, 1000).expect("page");
    assert_eq!(page.records[0].seq, seqs[2]);
    // The depth (from the first and last seq) is the row count after a trim.
    assert_eq!(page.backlog.depth, env.outbox_len());
    assert_eq!(page.backlog.depth, seqs.len() as i64 - 2);
    let applied = env
        .sync
        .commit_ack(vec![], Some(seqs[3]), None, T0)
        .await
        .expect("ack");
    assert_eq!(applied.trimmed, 2);
    // An ack that trims nothing (a heartbeat) deletes nothing.
    let applied = env
        .sync
        .commit_ack(vec![], None, None, T0)
        .await
        .expect("ack");
    assert_eq!(applied.trimmed, 0);
    assert_eq!(
        env.sync.outbox_page(0, 1000).expect("page").records[0].seq,
        seqs[4]
    );
    let state = env.sync.state().expect("state");
    assert_eq!(state.acked_seq, seqs[3]);
    assert_eq!(state.last_up_ok_ms, Some(T0));
    assert_eq!(state.file_policy, Some(FilePolicy::None));
    // A new row after trimming gets a fresh seq (never reused).
    env.local_user("ned").await;
    let rest = env.sync.outbox_page(0, 1000).expect("page");
    assert!(rest.records.last().expect("rows").seq > *seqs.last().expect("seqs"));
    assert_eq!(rest.backlog.depth, env.outbox_len());
    // Everything acknowledged: empty, no oldest row.
    let last = rest.records.last().expect("rows").seq;
    env.sync
        .commit_ack(vec![], Some(last), None, T0)
        .await
        .expect("ack");
    let empty = env.sync.outbox_page(0, 1000).expect("page");
    assert_eq!(
        (empty.backlog.depth, empty.backlog.oldest_created_at_ms),
        (0, None)
    );
    assert_eq!(empty.backlog.last_seq, last);
}

#[tokio::test]
async fn a_conflict_takes_hqs_row_and_is_audited_in_the_same_transaction() {
    let env = env().await;
    env.sync
        .apply_down(
            page(vec![upsert(
                7,
                Entity::User(env.user("olga", &["agent"], &[])),
            )]),
            T0,
        )
        .await
        .expect("page");
    // An offline edit on the box, based on revision 7.
    let reader = env.sync.reader().expect("reader");
    let olga = accounts::user_by_name(&reader, "olga")
        .expect("read")
        .expect("olga");
    env.accounts
        .update_user(
            &Actor::new("root", "console"),
            olga.id,
            accounts::UserPatch {
                display_name: Some("Olga (box edit)".to_owned()),
                ..accounts::UserPatch::default()
            },
            T0 + 1,
        )
        .await
        .expect("offline edit");
    let edit = env
        .sync
        .outbox_page(0, 1000)
        .expect("page")
        .records
        .into_iter()
        .find(|r| r.kind == wire::RecordKind::UserChange)
        .expect("edit in outbox");
    let audit_before = env.count("SELECT COUNT(*) FROM audit_log");

    let mut hq_row = env.user("olga", &["supervisor"], &[]);
    hq_row.display_name = "Olga (HQ edit)".to_owned();
    let conflicts = vec![
        Conflict {
            seq: edit.seq,
            entity: EntityKind::User,
            key: "olga".to_owned(),
            base_revision: 7,
            current: Some(upsert(12, Entity::User(hq_row))),
            reason: "changed at HQ since revision 7".to_owned(),
        },
        // A conflict whose HQ row is invalid: audited with the error, not applied.
        Conflict {
            seq: edit.seq,
            entity: EntityKind::User,
            key: "pete".to_owned(),
            base_revision: 0,
            current: Some(upsert(13, Entity::User(env.user("pete", &["ghost"], &[])))),
            reason: "exists at HQ".to_owned(),
        },
    ];
    let last = env.count("SELECT MAX(seq) FROM outbox");
    let applied = env
        .sync
        .commit_ack(conflicts, Some(last), None, T0 + 2)
        .await
        .expect("ack");
    assert_eq!(applied.conflicts_applied, 1);
    let olga = accounts::user_by_name(&reader, "olga")
        .expect("read")
        .expect("olga");
    assert_eq!(olga.display_name, "Olga (HQ edit)");
    assert_eq!(olga.revision, 12);
    assert_eq!(olga.roles, ["supervisor"]);
    assert!(accounts::user_by_name(&reader, "pete")
        .expect("read")
        .is_none());

    assert_eq!(
        env.count("SELECT COUNT(*) FROM audit_log"),
        audit_before + 2
    );
    let (detail, result): (String, String) = env
        .db()
        .query_row(
            "SELECT detail, result FROM audit_log WHERE action = 'sync_conflict' AND target = 'olga'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("conflict audited");
    let detail: serde_json::Value = serde_json::from_str(&detail).expect("json");
    assert_eq!(result, "failed");
    assert_eq!(detail["base_revision"], 7);
    assert_eq!(detail["key"], "olga");
    assert_eq!(detail["reason"], "changed at HQ since revision 7");
    assert_eq!(detail["hq_revision"], 12);
    let pete: String = env
        .db()
        .query_row(
            "SELECT detail FROM audit_log WHERE action = 'sync_conflict' AND target = 'pete'",
            [],
            |r| r.get(0),
        )
        .expect("pete audited");
    assert!(pete.contains("unknown role"), "{pete}");
    // Trimmed in the same transaction; only the two new audit rows remain, and the
    // resolution wrote no user_change row (no echo).
    assert_eq!(env.outbox_len(), 2);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM outbox WHERE kind = 'user_change'"),
        0
    );
    // HQ deleted the row: the box deletes its copy.
    let last = env.count("SELECT MAX(seq) FROM outbox");
    env.sync
        .commit_ack(
            vec![Conflict {
                seq: last,
                entity: EntityKind::User,
                key: "olga".to_owned(),
                base_revision: 12,
                current: None,
                reason: "deleted at HQ".to_owned(),
            }],
            Some(last),
            None,
            T0 + 3,
        )
        .await
        .expect("ack");
    assert!(accounts::user_by_name(&reader, "olga")
        .expect("read")
        .is_none());
}

#[tokio::test]
async fn the_epoch_is_made_once_per_store() {
    let first = env().await;
    let epoch = first.sync.state().expect("state").epoch;
    assert_eq!(epoch.len(), 32);
    assert!(epoch.bytes().all(|b| b.is_ascii_hexdigit()));
    // Reopening keeps it; a new store (factory reset deletes the file) gets another.
    let again = Store::open(&first.path).expect("reopen");
    drop(again);
    assert_eq!(first.sync.state().expect("state").epoch, epoch);
    let other = env().await;
    assert_ne!(other.sync.state().expect("state").epoch, epoch);
}

#[tokio::test]
async fn the_outbox_watch_moves_after_each_commit_that_wrote_an_outbox_row() {
    let env = env().await;
    let mut watch = env.sync.writer().outbox_watch();
    let before = *watch.borrow_and_update();
    env.local_user("quinn").await;
    assert!(watch.has_changed().expect("writer alive"));
    assert!(*watch.borrow_and_update() > before);
    // A write with no outbox row does not wake it.
    env.sync
        .writer()
        .set_port_state(1, "ringing")
        .await
        .expect("port state");
    assert!(!watch.has_changed().expect("writer alive"));
}

#[tokio::test]
async fn the_config_keeps_the_port_map_and_hq_keeps_names_across_restarts() {
    let env = env().await;
    env.sync
        .apply_down(
            page(vec![
                upsert(
                    3,
                    Entity::Extension(wire::Extension {
                        number: "101".to_owned(),
                        name: "Front desk".to_owned(),
                        port: Some(2),
                        call_waiting: false,
                    }),
                ),
                upsert(
                    4,
                    Entity::Extension(wire::Extension {
                        number: "102".to_owned(),
                        name: "Sales".to_owned(),
                        port: None,
                        call_waiting: true,
                    }),
                ),
            ]),
            T0,
        )
        .await
        .expect("page");
    // A restart with a config mapping 102 to port 2 and no longer listing 101.
    env.sync
        .writer()
        .replace_board(
            vec![(1, "fxs"), (2, "fxs")],
            vec![ExtensionRow {
                number: "102".to_owned(),
                name: "Config name".to_owned(),
                port: Some(2),
                call_waiting: false,
            }],
        )
        .await
        .expect("board");
    let reader = env.sync.reader().expect("reader");
    assert_eq!(
        reader.extensions().expect("extensions"),
        [
            // HQ's row stays, without a port (the config no longer maps it).
            ExtensionRow {
                number: "101".to_owned(),
                name: "Front desk".to_owned(),
                port: None,
                call_waiting: false,
            },
            // The config's port, HQ's name and call waiting.
            ExtensionRow {
                number: "102".to_owned(),
                name: "Sales".to_owned(),
                port: Some(2),
                call_waiting: true,
            },
        ]
    );
}

#[tokio::test]
async fn the_same_conflict_twice_is_audited_once() {
    let env = env().await;
    let conflict = Conflict {
        seq: 41,
        entity: EntityKind::Group,
        key: "night".to_owned(),
        base_revision: 3,
        current: Some(upsert(9, group("night"))),
        reason: "changed at HQ".to_owned(),
    };
    for _ in 0..2 {
        env.sync
            .commit_ack(vec![conflict.clone()], None, None, T0)
            .await
            .expect("ack");
    }
    assert_eq!(
        env.count("SELECT COUNT(*) FROM audit_log WHERE action = 'sync_conflict'"),
        1
    );
    assert_eq!(
        env.count("SELECT revision FROM groups WHERE name = 'night'"),
        9
    );
}

#[tokio::test]
async fn the_wan_task_follows_the_trunk_with_hysteresis_and_routing_follows_it() {
    use super::wan::{initial_snapshot, trunk_status, wan_led, WanTask};
    use crate::call::TrunkStatus;
    use crate::config::TrunkTransport;

    let env = env().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let target = listener.local_addr().expect("addr").to_string();
    let accept = tokio::spawn(async move {
        // Accept and drop connections until aborted.
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    });
    let first = initial_snapshot(None, Some(&target));
    assert_eq!(trunk_status(&first), TrunkStatus::Unusable);
    assert_eq!(first.hq.state, "not configured");
    let (publish, mut wan) = tokio::sync::watch::channel(first);
    let (_samples, hq_samples) = tokio::sync::mpsc::unbounded_channel();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(
        WanTask {
            hq: None,
            trunk: Some((target.clone(), TrunkTransport::Tcp)),
            probe_interval: std::time::Duration::from_millis(100),
            hq_samples,
            publish,
            store: env.sync.clone(),
        }
        .run(stop.clone()),
    );
    let until = |wan: &mut tokio::sync::watch::Receiver<super::wan::WanSnapshot>,
                 want: TrunkStatus| {
        let mut wan = wan.clone();
        async move {
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                wan.wait_for(|s| trunk_status(s) == want),
            )
            .await
            .expect("in time")
            .expect("task alive")
            .clone()
        }
    };
    let up = until(&mut wan, TrunkStatus::Usable).await;
    assert_eq!(up.trunk.state, "online");
    assert!(up.trunk.last_ok_ms.is_some());
    // Only the trunk is watched, and it answers: the LED is on (HQ, not configured,
    // does not count).
    assert_eq!(wan_led(&up), super::wan::WanLed::On);
    // The change was stored for `branchd sync-status` (the task publishes first and
    // stores after, so wait for the write rather than racing it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let stored = loop {
        let wan = env.sync.state().expect("state").wan;
        match wan {
            Some(w) if w["trunk"]["state"] == "online" => break w,
            _ if std::time::Instant::now() > deadline => panic!("WAN state not stored: {wan:?}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    assert_eq!(stored["trunk"]["probe"], target.as_str());

    accept.abort();
    let _ = accept.await;
    let down = until(&mut wan, TrunkStatus::Unusable).await;
    assert_eq!(down.trunk.state, "offline");
    assert!(down
        .trunk
        .last_failure
        .as_deref()
        .is_some_and(|f| f.contains("tcp connect")));
    stop.cancel();
    task.await.expect("task ends");
}

fn blacklisted(pattern: &str, reason: &str) -> Entity {
    Entity::Blacklist(wire::BlacklistEntry {
        pattern: pattern.to_owned(),
        reason: reason.to_owned(),
    })
}

#[tokio::test]
async fn blacklist_entries_from_hq_land_in_their_table_and_wake_the_reload() {
    let env = env().await;
    let changed = env.sync.writer().blacklist_changed();
    // A local entry the box added itself.
    let writer = env.sync.writer().clone();
    writer
        .transact("local entry", |tx, path| {
            let entry = crate::blacklist::store::NewEntry {
                pattern: "5551234".to_owned(),
                reason: "local".to_owned(),
                action: Some("reject".to_owned()),
            }
            .validate()
            .expect("valid");
            crate::blacklist::store::add_local(tx, path, &entry, "root", T0)
        })
        .await
        .expect("local");
    let applied = env
        .sync
        .apply_down(
            page(vec![
                upsert(2, blacklisted("0900*", "premium")),
                upsert(3, blacklisted("+4930111", "")),
                upsert(4, role("night", &[])),
            ]),
            T0,
        )
        .await
        .expect("page");
    assert!(applied.blacklist_changed);
    tokio::time::timeout(std::time::Duration::from_secs(1), changed.notified())
        .await
        .expect("the reload was poked");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM blacklist WHERE source = 'hq' AND revision IN (2, 3)"),
        2
    );
    assert_eq!(env.count("SELECT COUNT(*) FROM hq_rows"), 0);
    let reason: String = env
        .db()
        .query_row(
            "SELECT reason FROM blacklist WHERE pattern = '0900*'",
            [],
            |r| r.get(0),
        )
        .expect("row");
    assert_eq!(reason, "premium");

    // A page without blacklist rows does not poke it.
    let applied = env
        .sync
        .apply_down(page(vec![upsert(5, role("day", &[]))]), T0)
        .await
        .expect("page");
    assert!(!applied.blacklist_changed);

    // HQ deletes one: gone. A delete for the local entry's pattern leaves it alone.
    let applied = env
        .sync
        .apply_down(
            page(vec![
                delete(6, EntityKind::Blacklist, "+4930111"),
                delete(7, EntityKind::Blacklist, "5551234"),
            ]),
            T0,
        )
        .await
        .expect("page");
    assert!(applied.blacklist_changed);
    assert_eq!(applied.deleted, 1);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM blacklist WHERE pattern = '+4930111'"),
        0
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM blacklist WHERE pattern = '5551234' AND source = 'local'"),
        1
    );

    // A snapshot replaces HQ's entries and keeps the local one.
    let applied = env
        .sync
        .apply_down(
            DownResponse::Snapshot {
                version: wire::PROTOCOL_VERSION,
                rows: vec![upsert(20, blacklisted("0800*", "toll free abuse"))],
                cursor: 30,
            },
            T0,
        )
        .await
        .expect("snapshot");
    assert!(applied.blacklist_changed);
    let mut patterns: Vec<(String, String)> = env
        .db()
        .prepare("SELECT pattern, source FROM blacklist ORDER BY pattern")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    patterns.sort();
    assert_eq!(
        patterns,
        [
            ("0800*".to_owned(), "hq".to_owned()),
            ("5551234".to_owned(), "local".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_bad_blacklist_pattern_from_hq_refuses_the_page() {
    let env = env().await;
    for (bad, problem) in [
        ("09*00", "pattern"),
        ("*", "pattern"),
        ("1234567890123456789012", "pattern"),
    ] {
        let err = env
            .sync
            .apply_down(
                page(vec![
                    upsert(2, blacklisted("0800*", "")),
                    upsert(3, blacklisted(bad, "")),
                ]),
                T0,
            )
            .await
            .expect_err("refused");
        let text = err.to_string();
        assert!(
            matches!(err, Error::SyncRefused { revision: 3, .. }) && text.contains(problem),
            "{bad}: {text}"
        );
        // Nothing of the page is applied.
        assert_eq!(env.count("SELECT COUNT(*) FROM blacklist"), 0);
        assert_eq!(env.cursor(), 0);
    }
    let err = env
        .sync
        .apply_down(
            page(vec![upsert(2, blacklisted("0800*", "bad\u{7}reason"))]),
            T0,
        )
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("reason"), "{err}");
}

fn contact(id: &str, name: &str, numbers: &[&str]) -> Entity {
    Entity::Contact(wire::Contact {
        id: id.to_owned(),
        name: name.to_owned(),
        numbers: numbers.iter().map(|n| (*n).to_owned()).collect(),
    })
}

#[tokio::test]
async fn hq_contacts_become_hq_customers_and_deletes_and_snapshots_spare_local_ones() {
    let env = env().await;
    let writer = env.sync.writer().clone();
    writer
        .transact("local customer", |tx, path| {
            let s = crate::customers::store::schema(tx, path)?;
            let v = s
                .schema
                .check(&crate::customers::Draft {
                    name: "Local".to_owned(),
                    numbers: vec!["5550001".to_owned()],
                    ..crate::customers::Draft::default()
                })
                .expect("valid");
            crate::customers::store::insert_local(tx, path, &s, &v, "root", T0)
        })
        .await
        .expect("local");
    let applied = env
        .sync
        .apply_down(
            page(vec![
                upsert(2, contact("c1", "Ann", &["+4930111", "5550002"])),
                upsert(3, contact("c2", "", &["5550001"])),
            ]),
            T0,
        )
        .await
        .expect("page");
    assert_eq!(applied.upserted, 2);
    assert_eq!(env.count("SELECT COUNT(*) FROM hq_rows"), 0);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM customers WHERE source = 'hq' AND revision IN (2, 3)"),
        2
    );
    let db = env.db();
    let ann = crate::customers::lookup_by_number(&db, "+4930111").expect("ann");
    assert_eq!(ann.name, "Ann");
    // A nameless contact is named by its id; the box's own customer wins its number.
    assert_eq!(
        crate::customers::lookup_by_number(&db, "5550001").map(|m| m.name),
        Some("Local".to_owned())
    );
    drop(db);

    // An update replaces the numbers; a delete of a local customer's key does nothing.
    env.sync
        .apply_down(
            page(vec![
                upsert(4, contact("c1", "Ann B", &["5550003"])),
                delete(5, EntityKind::Contact, "1"),
            ]),
            T0,
        )
        .await
        .expect("page");
    let db = env.db();
    assert!(crate::customers::lookup_by_number(&db, "+4930111").is_none());
    assert_eq!(
        crate::customers::lookup_by_number(&db, "5550003").map(|m| m.name),
        Some("Ann B".to_owned())
    );
    drop(db);
    assert_eq!(env.count("SELECT COUNT(*) FROM customers"), 3);

    // A snapshot keeps only HQ's contacts it holds, and every local customer.
    env.sync
        .apply_down(
            DownResponse::Snapshot {
                version: wire::PROTOCOL_VERSION,
                rows: vec![upsert(20, contact("c2", "Cleo", &["5550009"]))],
                cursor: 30,
            },
            T0,
        )
        .await
        .expect("snapshot");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM customers WHERE source = 'local' AND name = 'Local'"),
        1
    );
    assert_eq!(
        env.count(
            "SELECT COUNT(*) FROM customers WHERE source = 'hq' AND hq_id = 'c2' AND name = 'Cleo'"
        ),
        1
    );
    assert_eq!(env.count("SELECT COUNT(*) FROM customers"), 2);

    // A contact whose number does not normalise refuses the page whole.
    let err = env
        .sync
        .apply_down(
            page(vec![
                upsert(31, contact("c3", "Ok", &["5550010"])),
                upsert(32, contact("c4", "Bad", &["call me"])),
            ]),
            T0,
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(err, Error::SyncRefused { revision: 32, .. })
            && err.to_string().contains("numbers[0]"),
        "{err}"
    );
    assert_eq!(env.count("SELECT COUNT(*) FROM customers"), 2);
    assert_eq!(env.cursor(), 30);
}

#[tokio::test]
async fn users_from_hq_wake_the_call_centers_reload_and_other_rows_do_not() {
    let env = env().await;
    let changed = env.sync.writer().acd_changed();
    let applied = env
        .sync
        .apply_down(page(vec![upsert(2, blacklisted("0900*", "premium"))]), T0)
        .await
        .expect("page");
    assert!(!applied.acd_changed);
    let mut agent = env.user("ivan", &["agent"], &[]);
    agent.agent_id = Some("300".to_owned());
    let applied = env
        .sync
        .apply_down(page(vec![upsert(3, Entity::User(agent))]), T0)
        .await
        .expect("page");
    assert!(applied.acd_changed);
    tokio::time::timeout(std::time::Duration::from_secs(1), changed.notified())
        .await
        .expect("the reload was poked");
}

fn hq_queue(number: &str, name: &str, strategy: &str, agents: &[&str]) -> Entity {
    Entity::Queue(wire::Queue {
        number: number.to_owned(),
        name: name.to_owned(),
        strategy: strategy.to_owned(),
        max_wait_s: 90,
        overflow: Some("+4930999".to_owned()),
        agents: agents.iter().map(|a| (*a).to_owned()).collect(),
    })
}

#[tokio::test]
async fn queues_from_hq_become_the_call_centers_and_reconfigure_it() {
    let env = env().await;
    let changed = env.sync.writer().acd_changed();
    let mut ivan = env.user("ivan", &["agent"], &[]);
    ivan.agent_id = Some("300".to_owned());
    let plain = env.user("olga", &["agent"], &[]);
    let applied = env
        .sync
        .apply_down(
            page(vec![
                upsert(2, Entity::User(ivan)),
                upsert(3, Entity::User(plain)),
                upsert(
                    4,
                    hq_queue("7010", "Sales EU", "round_robin", &["ivan", "olga", "zed"]),
                ),
            ]),
            T0,
        )
        .await
        .expect("page");
    assert!(applied.acd_changed);
    tokio::time::timeout(std::time::Duration::from_secs(1), changed.notified())
        .await
        .expect("the reload was poked");
    // The call center's rows: name from the display name, HQ's revision, max wait and
    // overflow; only ivan is a member (olga has no agent ID, zed is unknown).
    let reader = env.sync.reader().expect("reader");
    let config = crate::acd::store::load_config(reader.connection(), reader.path()).expect("loads");
    let q = &config.queues()[0];
    assert_eq!((q.name.as_str(), q.number.as_str()), ("sales-eu", "7010"));
    assert_eq!(q.strategy, crate::acd::Strategy::RoundRobin);
    assert_eq!(q.max_wait, Some(std::time::Duration::from_secs(90)));
    assert_eq!(
        q.members
            .iter()
            .map(|m| m.agent.as_str())
            .collect::<Vec<_>>(),
        ["300"]
    );
    assert_eq!(
        env.count("SELECT revision FROM queues WHERE number = '7010'"),
        4
    );
    assert_eq!(
        env.count(
            "SELECT COUNT(*) FROM queue_overflow WHERE event = 'max_wait' AND target = '+4930999'"
        ),
        1
    );
    // A queue the box made (revision 0) with the same name: HQ's gets its number added.
    env.db()
        .execute_batch(
            "INSERT INTO queues (name, number, strategy) VALUES ('support', '7020', 'ring_all')",
        )
        .expect("local queue");
    env.sync
        .apply_down(
            page(vec![
                upsert(5, hq_queue("7010", "Sales EU", "ring_all", &["ivan"])),
                upsert(6, hq_queue("7011", "Support", "fewest_calls", &[])),
            ]),
            T0,
        )
        .await
        .expect("page");
    assert_eq!(
        env.count(
            "SELECT COUNT(*) FROM queues WHERE name = 'support-7011' AND strategy = 'fewest_calls'"
        ),
        1
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM queues WHERE number = '7010' AND strategy = 'ring_all'"),
        1
    );
    // A strategy the box does not know refuses the page: nothing of it is written.
    let err = env
        .sync
        .apply_down(
            page(vec![
                upsert(7, hq_queue("7012", "New", "random", &[])),
                upsert(8, hq_queue("7013", "Other", "ring_all", &[])),
            ]),
            T0,
        )
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("strategy"), "{err}");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM queues WHERE number IN ('7012', '7013')"),
        0
    );
    // HQ deletes its queue (members and overflow go with it); the box's own stays.
    env.sync
        .apply_down(page(vec![delete(9, EntityKind::Queue, "7010")]), T0)
        .await
        .expect("delete");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM queues WHERE number = '7010'"),
        0
    );
    assert_eq!(env.count("SELECT COUNT(*) FROM queue_overflow"), 1);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM hq_rows WHERE kind = 'queue' AND key = '7010'"),
        0
    );
    env.sync
        .apply_down(page(vec![delete(10, EntityKind::Queue, "7020")]), T0)
        .await
        .expect("delete");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM queues WHERE number = '7020'"),
        1
    );
}

fn dial_route(name: &str, prefix: &str, via: &[&str]) -> Entity {
    Entity::DialRoute(wire::DialRoute {
        name: name.to_owned(),
        prefix: prefix.to_owned(),
        via: via.iter().map(|v| (*v).to_owned()).collect(),
        needs_permission: None,
    })
}

#[tokio::test]
async fn dial_routes_from_hq_reach_call_control_and_a_bad_one_refuses_the_page() {
    use crate::call::TrunkStatus;
    let env = env().await;
    let changed = env.sync.writer().dial_routes_changed();
    let routes = |env: &Env| {
        let reader = Store::reader(&env.path).expect("reader");
        super::apply::dial_routes(reader.connection(), &env.path).expect("routes")
    };
    let applied = env
        .sync
        .apply_down(
            page(vec![
                upsert(2, dial_route("national", "0", &["fxo", "sip"])),
                upsert(3, dial_route("international", "00", &["sip"])),
            ]),
            T0,
        )
        .await
        .expect("page");
    assert!(applied.dial_routes_changed);
    tokio::time::timeout(std::time::Duration::from_secs(1), changed.notified())
        .await
        .expect("the reload was poked");
    let loaded = routes(&env);
    assert_eq!(loaded.len(), 2);
    assert_eq!(
        loaded.routes_for("0049", TrunkStatus::Usable),
        [crate::call::OutsideVia::SipTrunk]
    );
    assert_eq!(
        loaded.routes_for("0301", TrunkStatus::Usable),
        [
            crate::call::OutsideVia::Fxo,
            crate::call::OutsideVia::SipTrunk
        ]
    );

    // A route call control would refuse refuses the whole page.
    for (bad, problem) in [
        (dial_route("x", "0+1", &["sip"]), "prefix"),
        (dial_route("x", "1", &["isdn"]), "via[0]"),
        (dial_route("x", "1", &[]), "via"),
        (dial_route("x", "1", &["fxo", "fxo"]), "twice"),
    ] {
        let err = env
            .sync
            .apply_down(
                page(vec![
                    upsert(4, dial_route("local", "1", &["fxo"])),
                    upsert(5, bad),
                ]),
                T0,
            )
            .await
            .expect_err("refused");
        assert!(
            matches!(err, Error::SyncRefused { revision: 5, .. })
                && err.to_string().contains(problem),
            "{err}"
        );
        assert_eq!(routes(&env).len(), 2, "nothing of the page applied");
    }

    // Other rows do not reload the routes; a delete does.
    let applied = env
        .sync
        .apply_down(page(vec![upsert(4, blacklisted("0900*", "premium"))]), T0)
        .await
        .expect("page");
    assert!(!applied.dial_routes_changed);
    let applied = env
        .sync
        .apply_down(
            page(vec![delete(5, EntityKind::DialRoute, "international")]),
            T0,
        )
        .await
        .expect("page");
    assert!(applied.dial_routes_changed);
    assert_eq!(
        routes(&env).routes_for("0049", TrunkStatus::Usable),
        [
            crate::call::OutsideVia::Fxo,
            crate::call::OutsideVia::SipTrunk
        ]
    );
}

#[tokio::test]
async fn a_dial_routes_permission_reaches_call_control_and_a_bad_name_refuses_the_page() {
    use crate::call::{CallerPermissions, TrunkStatus};
    let env = env().await;
    let needing = |name: &str, prefix: &str, permission: &str| {
        let Entity::DialRoute(mut d) = dial_route(name, prefix, &["sip"]) else {
            unreachable!("a dial route")
        };
        d.needs_permission = Some(permission.to_owned());
        Entity::DialRoute(d)
    };
    let routes = |env: &Env| {
        let reader = Store::reader(&env.path).expect("reader");
        super::apply::dial_routes(reader.connection(), &env.path).expect("routes")
    };
    env.sync
        .apply_down(
            page(vec![
                upsert(2, dial_route("national", "0", &["fxo"])),
                upsert(3, needing("international", "00", "international")),
            ]),
            T0,
        )
        .await
        .expect("page");
    let loaded = routes(&env);
    let refused = loaded
        .decide("0049", TrunkStatus::Usable, &CallerPermissions::none())
        .expect_err("refused without the permission");
    assert_eq!(refused.permission, "international");
    let intl = CallerPermissions::new(["international".to_owned()]);
    assert!(loaded.decide("0049", TrunkStatus::Usable, &intl).is_ok());

    // A permission name the box cannot hold refuses the whole page.
    let err = env
        .sync
        .apply_down(
            page(vec![upsert(4, needing("premium", "0900", "Premium Calls"))]),
            T0,
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(err, Error::SyncRefused { revision: 4, .. })
            && err.to_string().contains("needs_permission"),
        "{err}"
    );
    assert_eq!(routes(&env).len(), 2, "nothing of the page applied");

    // Such a name stored by an older firmware keeps the route, refusing everyone:
    // its numbers never fall through to the shorter `national` route.
    let conn = Connection::open(&env.path).expect("open");
    let old = serde_json::to_string(&needing("international", "00", "Intl")).expect("json");
    conn.execute(
        "UPDATE hq_rows SET row = ?1 WHERE kind = 'dial_route' AND key = 'international'",
        [&old],
    )
    .expect("rewrite the stored row");
    let loaded = routes(&env);
    assert_eq!(loaded.len(), 2);
    let refused = loaded
        .decide("0049", TrunkStatus::Usable, &intl)
        .expect_err("nobody holds the bad name");
    assert_eq!(
        (refused.route.as_str(), refused.permission.as_str()),
        ("international", "Intl")
    );
    assert!(loaded.decide("0301", TrunkStatus::Usable, &intl).is_ok());
}
