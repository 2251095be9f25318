//! Accounts, audit and masking against a real store in a temp dir, with the real
//! migrations and built-in roles.

use std::path::PathBuf;

use rusqlite::Connection;

use super::*;
use crate::audit::AuditProblem;
use crate::cdr::{Cdr, Direction, Disposition, HangupSide};
use crate::mask::{cdr_view, list_cdrs, MaskPattern, NumberDirectory};
use crate::rbac::{Action, Authorizer};
use crate::store::ExtensionRow;

/// Cheap argon2 parameters for tests that do not check the parameters themselves.
const FAST: HashParams = HashParams {
    m_kib: 64,
    t: 1,
    p: 1,
};
const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;
const PASSWORD: &str = "a-Good-passphrase-42";

struct Env {
    dir: tempfile::TempDir,
    path: PathBuf,
    accounts: Accounts,
    thread: std::thread::JoinHandle<()>,
}

fn root() -> Actor {
    Actor::new("root", "console")
}

async fn open(dir: tempfile::TempDir, params: HashParams) -> Env {
    let path = dir.path().join("branchline.db");
    let store = Store::open(&path).expect("open");
    let (writer, thread) = store.spawn_writer();
    let ext = |n: &str, port| ExtensionRow {
        number: n.to_owned(),
        name: format!("ext {n}"),
        port: Some(port),
        call_waiting: true,
    };
    writer
        .replace_board(
            vec![(1, "fxs"), (2, "fxs"), (3, "fxs"), (4, "fxs")],
            vec![ext("101", 1), ext("102", 2), ext("103", 3), ext("104", 4)],
        )
        .await
        .expect("board");
    let settings = AuthSettings {
        hash: params,
        ..AuthSettings::default()
    };
    Env {
        accounts: Accounts::new(writer, path.clone(), settings),
        dir,
        path,
        thread,
    }
}

async fn env() -> Env {
    open(tempfile::tempdir().expect("tempdir"), FAST).await
}

impl Env {
    /// Stops the writer thread (so raw SQLite edits see a quiet database) and returns
    /// the directory.
    async fn close(self) -> (tempfile::TempDir, PathBuf) {
        let writer = self.accounts.writer().clone();
        drop(self.accounts);
        writer.close().await;
        self.thread.join().expect("writer thread");
        (self.dir, self.path)
    }

    fn reader(&self) -> StoreReader {
        self.accounts.reader().expect("reader")
    }

    async fn user(&self, username: &str, roles: &[&str], ext: Option<&str>) -> User {
        self.accounts
            .create_user(
                &root(),
                NewUser {
                    username: username.to_owned(),
                    password: PASSWORD.to_owned(),
                    extension: ext.map(str::to_owned),
                    enabled: true,
                    roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                    ..NewUser::default()
                },
                T0,
            )
            .await
            .expect("create user")
    }
}

fn count(path: &Path, sql: &str) -> i64 {
    Connection::open(path)
        .expect("open")
        .query_row(sql, [], |r| r.get(0))
        .expect("count")
}

fn outbox_payloads(reader: &StoreReader, kind: &str) -> Vec<serde_json::Value> {
    reader
        .outbox(0, 10_000)
        .expect("outbox")
        .into_iter()
        .filter(|r| r.kind == kind)
        .map(|r| r.payload)
        .collect()
}

#[tokio::test]
async fn create_user_validates_everything_at_once() {
    let env = env().await;
    let e = env
        .accounts
        .create_user(
            &root(),
            NewUser {
                username: "Bad Name".to_owned(),
                password: "short".to_owned(),
                extension: Some("999".to_owned()),
                agent_id: Some("1".to_owned()),
                pin: Some("12".to_owned()),
                roles: vec!["nope".to_owned(), "installer".to_owned()],
                groups: vec!["ghosts".to_owned()],
                display_name: "x".repeat(65),
                ..NewUser::default()
            },
            T0,
        )
        .await
        .expect_err("invalid");
    let Error::Invalid { problems, .. } = &e else {
        panic!("{e}")
    };
    let fields: BTreeSet<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    for f in [
        "username",
        "password",
        "extension",
        "agent_id",
        "pin",
        "roles",
        "groups",
        "display_name",
    ] {
        assert!(fields.contains(f), "{f} missing in {e}");
    }
    assert_eq!(count(&env.path, "SELECT COUNT(*) FROM users"), 0);
    // The failure is audited.
    let rows = audit::list(&env.reader(), 0, 100).expect("audit");
    assert_eq!(rows.last().map(|r| r.result.as_str()), Some("failed"));

    let alice = env.user("alice", &["agent"], Some("101")).await;
    assert_eq!(alice.display_name, "alice");
    let e = env
        .accounts
        .create_user(
            &root(),
            NewUser {
                username: "alice".to_owned(),
                password: PASSWORD.to_owned(),
                extension: Some("101".to_owned()),
                ..NewUser::default()
            },
            T0,
        )
        .await
        .expect_err("taken");
    assert!(e.to_string().contains("already taken"), "{e}");
    let page = list_users(
        &env.reader(),
        PageRequest {
            limit: 1,
            offset: 0,
        },
    )
    .expect("page");
    assert_eq!((page.items.len(), page.total), (1, 1));
    assert!(list_users(
        &env.reader(),
        PageRequest {
            limit: 501,
            offset: 0
        }
    )
    .is_err());
    assert!(list_users(
        &env.reader(),
        PageRequest {
            limit: 0,
            offset: 0
        }
    )
    .is_err());
    env.close().await;
}

#[tokio::test]
async fn lockout_after_five_failures_survives_a_restart_and_expires() {
    let env = env().await;
    env.user("bob", &["agent"], None).await;
    for i in 1..=4 {
        let e = env
            .accounts
            .verify_login("bob", "wrong password!", "api:10.0.0.9", T0 + i)
            .await
            .expect_err("wrong");
        assert!(matches!(e, LoginError::InvalidCredentials), "{e}");
    }
    let e = env
        .accounts
        .verify_login("bob", "wrong password!", "api:10.0.0.9", T0 + 5)
        .await
        .expect_err("fifth");
    assert!(
        matches!(e, LoginError::Locked { until_ms } if until_ms == T0 + 5 + 15 * MINUTE),
        "{e}"
    );
    // The right password does not help while locked.
    let e = env
        .accounts
        .verify_login("bob", PASSWORD, "api:10.0.0.9", T0 + MINUTE)
        .await
        .expect_err("locked");
    assert!(matches!(e, LoginError::Locked { .. }), "{e}");

    // Restart: the lockout is in the database.
    let (dir, _) = env.close().await;
    let env = open(dir, FAST).await;
    let e = env
        .accounts
        .verify_login("bob", PASSWORD, "api:10.0.0.9", T0 + 14 * MINUTE)
        .await
        .expect_err("still locked after restart");
    assert!(matches!(e, LoginError::Locked { .. }), "{e}");
    let ok = env
        .accounts
        .verify_login("bob", PASSWORD, "api:10.0.0.9", T0 + 16 * MINUTE)
        .await
        .expect("lockout over");
    assert_eq!(ok.subject.username, "bob");
    assert!(!ok.subject.locked);
    let bob = user_by_name(&env.reader(), "bob")
        .expect("read")
        .expect("bob");
    assert_eq!((bob.failed_logins, bob.locked_until_ms), (0, None));
    // Unknown users look like wrong passwords.
    let e = env
        .accounts
        .verify_login("nobody", PASSWORD, "api:10.0.0.9", T0)
        .await
        .expect_err("unknown");
    assert!(matches!(e, LoginError::InvalidCredentials));
    // Every attempt is audited and the chain holds.
    let rows = audit::list(&env.reader(), 0, 100).expect("audit");
    assert_eq!(rows.iter().filter(|r| r.action == "login").count(), 9);
    assert_eq!(
        audit::verify_store(&env.reader()).expect("verify"),
        rows.len() as i64
    );
    env.close().await;
}

#[tokio::test]
async fn disabled_users_cannot_log_in() {
    let env = env().await;
    let carol = env.user("carol", &["agent"], None).await;
    env.accounts
        .update_user(
            &root(),
            carol.id,
            UserPatch {
                enabled: Some(false),
                ..UserPatch::default()
            },
            T0,
        )
        .await
        .expect("disable");
    let e = env
        .accounts
        .verify_login("carol", PASSWORD, "console", T0)
        .await
        .expect_err("disabled");
    assert!(matches!(e, LoginError::Disabled), "{e}");
    let subject = load_subject(&env.reader(), carol.id, T0).expect("subject");
    assert!(!subject.enabled);
    env.close().await;
}

#[tokio::test]
async fn stored_hashes_carry_the_owasp_argon2id_parameters() {
    let env = open(tempfile::tempdir().expect("tempdir"), HashParams::default()).await;
    env.user("dave", &["agent"], None).await;
    let hash: String = Connection::open(&env.path)
        .expect("open")
        .query_row(
            "SELECT password_hash FROM users WHERE username = 'dave'",
            [],
            |r| r.get(0),
        )
        .expect("hash");
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    let ok = env
        .accounts
        .verify_login("dave", PASSWORD, "console", T0)
        .await
        .expect("login");
    assert_eq!(ok.subject.username, "dave");
    env.close().await;
}

#[tokio::test]
async fn passwords_change_and_reset() {
    let env = env().await;
    let erin = env.user("erin", &["agent"], None).await;
    let me = Actor::new("erin", "api:10.0.0.2");
    let e = env
        .accounts
        .change_own_password(&me, erin.id, "not my password", "another-passphrase-7", T0)
        .await
        .expect_err("wrong old");
    assert!(matches!(e, Error::WrongPassword { .. }), "{e}");
    let e = env
        .accounts
        .change_own_password(&me, erin.id, PASSWORD, "password123", T0)
        .await
        .expect_err("common");
    assert!(e.to_string().contains("common"), "{e}");
    env.accounts
        .change_own_password(&me, erin.id, PASSWORD, "another-passphrase-7", T0)
        .await
        .expect("change");
    env.accounts
        .verify_login("erin", "another-passphrase-7", "console", T0)
        .await
        .expect("new password works");
    env.accounts
        .reset_password(&root(), erin.id, "reset-by-admin-2024", T0)
        .await
        .expect("reset");
    let ok = env
        .accounts
        .verify_login("erin", "reset-by-admin-2024", "console", T0)
        .await
        .expect("login");
    assert!(ok.must_change_password);
    env.accounts
        .set_pin(&root(), erin.id, Some("4711"), T0)
        .await
        .expect("pin");
    assert!(env
        .accounts
        .set_pin(&root(), erin.id, Some("47"), T0)
        .await
        .is_err());
    env.accounts
        .update_user(
            &root(),
            erin.id,
            UserPatch {
                agent_id: Some(Some("42".to_owned())),
                ..UserPatch::default()
            },
            T0,
        )
        .await
        .expect("agent id");
    assert_eq!(
        env.accounts
            .verify_agent_pin("42", "4711", T0)
            .await
            .expect("pin"),
        Some(erin.id)
    );
    assert_eq!(
        env.accounts
            .verify_agent_pin("42", "4712", T0)
            .await
            .expect("pin"),
        None
    );
    env.close().await;
}

#[tokio::test]
async fn builtin_roles_are_immutable_and_custom_roles_work() {
    let env = env().await;
    let reader = env.reader();
    let admin = role_id(&reader, "admin").expect("read").expect("admin");
    let g0 = reader.rbac_generation().expect("generation");
    let e = env
        .accounts
        .delete_role(&root(), admin, T0)
        .await
        .expect_err("builtin");
    assert!(
        matches!(e, Error::BuiltinRoleImmutable { op: "deleted", .. }),
        "{e}"
    );
    let e = env
        .accounts
        .update_role(
            &root(),
            admin,
            RoleSpec {
                name: "admin".to_owned(),
                ..RoleSpec::default()
            },
            T0,
        )
        .await
        .expect_err("builtin");
    assert!(
        matches!(e, Error::BuiltinRoleImmutable { op: "edited", .. }),
        "{e}"
    );
    assert!(role(&reader, admin).expect("admin").permissions.len() > 100);

    let spec = RoleSpec {
        name: "night_shift".to_owned(),
        description: "after-hours queue watch".to_owned(),
        permissions: vec![
            "queues.view:site".parse().expect("perm"),
            "calls.view:group".parse().expect("perm"),
        ],
    };
    let night = env
        .accounts
        .create_role(&root(), spec.clone(), T0)
        .await
        .expect("create");
    assert!(!night.builtin);
    let g1 = reader.rbac_generation().expect("generation");
    assert!(g1 > g0);
    // Duplicate grants and provisioning are refused.
    let mut bad = spec.clone();
    bad.name = "dup".to_owned();
    bad.permissions
        .push("queues.view:own".parse().expect("perm"));
    bad.permissions
        .push("provisioning.view:site".parse().expect("perm"));
    let e = env
        .accounts
        .create_role(&root(), bad, T0)
        .await
        .expect_err("dup");
    assert!(
        e.to_string().contains("granted twice") && e.to_string().contains("provisioning"),
        "{e}"
    );

    let mut changed = spec;
    changed.permissions = vec!["queues.operate:site".parse().expect("perm")];
    let night = env
        .accounts
        .update_role(&root(), night.id, changed, T0)
        .await
        .expect("update");
    assert_eq!(night.permissions.len(), 1);
    let authz = Authorizer::load(&reader).expect("load");
    assert_eq!(authz.generation(), reader.rbac_generation().expect("g"));
    assert_eq!(
        authz
            .role(night.id)
            .and_then(|s| s.scope(Resource::Queues, Action::Operate)),
        Some(crate::rbac::Scope::Site)
    );

    let frank = env.user("frank", &["night_shift"], None).await;
    let e = env
        .accounts
        .delete_role(&root(), night.id, T0)
        .await
        .expect_err("in use");
    assert!(matches!(e, Error::RoleInUse { users: 1, .. }), "{e}");
    env.accounts
        .delete_user(&root(), frank.id, T0)
        .await
        .expect("delete user");
    env.accounts
        .delete_role(&root(), night.id, T0)
        .await
        .expect("delete role");
    assert!(role_id(&reader, "night_shift").expect("read").is_none());

    let kinds: Vec<String> = outbox_payloads(&reader, "role_change")
        .iter()
        .map(|p| p["op"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(kinds, ["create", "update", "delete"]);
    env.close().await;
}

#[tokio::test]
async fn local_edits_go_to_the_outbox_with_their_base_revision() {
    let env = env().await;
    let gina = env.user("gina", &["agent"], Some("102")).await;
    // As if HQ had synced this row down at revision 7.
    Connection::open(&env.path)
        .expect("open")
        .execute("UPDATE users SET revision = 7 WHERE id = ?1", [gina.id.0])
        .expect("set revision");
    let after = env
        .accounts
        .update_user(
            &root(),
            gina.id,
            UserPatch {
                display_name: Some("Gina R.".to_owned()),
                ..UserPatch::default()
            },
            T0 + 1000,
        )
        .await
        .expect("update");
    assert_eq!(after.updated_at_ms, T0 + 1000);
    let team = env
        .accounts
        .create_group(
            &root(),
            GroupSpec {
                name: "team-a".to_owned(),
                description: String::new(),
                members: vec![GroupMember {
                    user_id: gina.id,
                    is_group_admin: false,
                }],
            },
            T0,
        )
        .await
        .expect("group");
    assert_eq!(team.members.len(), 1);
    let reader = env.reader();
    let users = outbox_payloads(&reader, "user_change");
    assert_eq!(users.len(), 3);
    assert_eq!(users[0]["op"], "create");
    assert_eq!(users[0]["base_revision"], 0);
    assert_eq!(users[1]["op"], "update");
    assert_eq!(users[1]["base_revision"], 7);
    // The wire shape: an EntityEdit of a wire User, hashes included.
    let edit: branchline_sync::wire::EntityEdit =
        serde_json::from_value(users[1].clone()).expect("wire EntityEdit");
    let branchline_sync::wire::Entity::User(row) = edit.row else {
        panic!("not a user row: {edit:?}");
    };
    assert_eq!(row.display_name, "Gina R.");
    assert!(row.password_hash.starts_with("$argon2id$"));
    assert_eq!(row.roles, ["agent"]);
    assert_eq!(outbox_payloads(&reader, "group_change").len(), 1);
    // Joining the group is a change of gina's memberships: a third user update.
    let users = outbox_payloads(&reader, "user_change");
    assert_eq!(users.len(), 3);
    assert_eq!(users[2]["row"]["groups"][0]["group"], "team-a");
    // Every audit row is in the outbox too.
    assert_eq!(
        outbox_payloads(&reader, "audit").len() as i64,
        count(&env.path, "SELECT COUNT(*) FROM audit_log")
    );
    assert_eq!(
        list_groups(&reader, PageRequest::default())
            .expect("groups")
            .total,
        1
    );
    env.close().await;
}

#[tokio::test]
async fn csv_import_is_all_or_nothing_with_row_numbered_errors() {
    let env = env().await;
    env.accounts
        .create_group(
            &root(),
            GroupSpec {
                name: "sales".to_owned(),
                ..GroupSpec::default()
            },
            T0,
        )
        .await
        .expect("group");
    let bad = "username,display_name,extension,agent_id,enabled,roles,groups\n\
               hank,Hank,101,11,true,agent,sales\n\
               ivy,Ivy,,12,true,wizard,\n\
               hank,Hank again,102,13,true,agent,\n\
               joe,Jo,555,11,maybe,agent;supervisor,sales\n";
    let e = env
        .accounts
        .import_users_csv(&root(), bad, T0)
        .await
        .expect_err("bad rows");
    let text = e.to_string();
    let Error::CsvImport { errors } = &e else {
        panic!("{e}")
    };
    assert!(
        text.contains("row 3: roles: role \"wizard\" does not exist"),
        "{text}"
    );
    assert!(
        text.contains("row 4: username: duplicate of row 2"),
        "{text}"
    );
    assert!(text.contains("row 5: enabled"), "{text}");
    assert!(text.contains("row 5: extension"), "{text}");
    assert!(!errors.iter().any(|p| p.row == 2), "{text}");
    assert_eq!(count(&env.path, "SELECT COUNT(*) FROM users"), 0);

    let good = "username,display_name,extension,agent_id,enabled,roles,groups\n\
                hank,Hank,101,11,true,agent,sales\n\
                ivy,Ivy,,12,false,quality_inspector,\n\
                joe,\"Jo, Jr.\",102,,true,agent;supervisor,sales\n";
    let passwords = env
        .accounts
        .import_users_csv(&root(), good, T0)
        .await
        .expect("import");
    assert_eq!(passwords.len(), 3);
    assert_eq!(count(&env.path, "SELECT COUNT(*) FROM users"), 3);
    let ok = env
        .accounts
        .verify_login("hank", &passwords[0].password, "console", T0)
        .await
        .expect("generated password works");
    assert!(ok.must_change_password);

    let exported = export_users_csv(&env.reader()).expect("export");
    assert!(!exported.contains("$argon2"), "{exported}");
    let lines: Vec<&str> = exported.lines().collect();
    assert_eq!(
        lines[0],
        "username,display_name,extension,agent_id,enabled,roles,groups"
    );
    assert_eq!(lines[1], "hank,Hank,101,11,true,agent,sales");
    assert_eq!(lines[2], "ivy,Ivy,,12,false,quality_inspector,");
    assert_eq!(lines[3], "joe,\"Jo, Jr.\",102,,true,agent;supervisor,sales");
    // Importing the export again: every row is a duplicate of an existing user.
    let e = env
        .accounts
        .import_users_csv(&root(), &exported, T0)
        .await
        .expect_err("exists");
    assert!(e.to_string().contains("row 4: username"), "{e}");
    env.close().await;
}

#[tokio::test]
async fn the_installer_exists_until_enrollment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("branchline.db");
    let mut store = Store::open(&path).expect("open");
    let status = bootstrap_installer(&mut store, None, dir.path(), FAST, T0).expect("bootstrap");
    let label = dir.path().join(INSTALLER_LABEL_FILE);
    assert_eq!(status, InstallerStatus::CreatedWithLabel(label.clone()));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&label)
        .expect("label")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&label).expect("label");
    let password = text
        .trim()
        .strip_prefix("installer password: ")
        .expect("format")
        .to_owned();
    // A second start keeps the account and the password.
    assert_eq!(
        bootstrap_installer(&mut store, None, dir.path(), FAST, T0).expect("again"),
        InstallerStatus::Present
    );
    drop(store);

    let env = open(dir, FAST).await;
    let ok = env
        .accounts
        .verify_login("installer", &password, "api:192.0.2.1", T0)
        .await
        .expect("installer login");
    let authz = Authorizer::load(&env.reader()).expect("authz");
    assert!(authz
        .authorize(
            &ok.subject,
            Resource::Provisioning,
            Action::Edit,
            &crate::rbac::Target::Site
        )
        .is_allowed());
    assert!(!authz
        .authorize(
            &ok.subject,
            Resource::Calls,
            Action::View,
            &crate::rbac::Target::Site
        )
        .is_allowed());
    // Nobody else may hold the installer role.
    let e = env
        .accounts
        .create_user(
            &root(),
            NewUser {
                username: "fake".to_owned(),
                password: PASSWORD.to_owned(),
                roles: vec!["installer".to_owned()],
                ..NewUser::default()
            },
            T0,
        )
        .await
        .expect_err("reserved");
    assert!(e.to_string().contains("reserved"), "{e}");

    env.accounts
        .set_enrolled(&root(), T0 + 1)
        .await
        .expect("enroll");
    assert!(is_enrolled(&env.reader()).expect("state"));
    let e = env
        .accounts
        .verify_login("installer", &password, "api:192.0.2.1", T0 + 2)
        .await
        .expect_err("retired");
    assert!(matches!(e, LoginError::InstallerRetired), "{e}");
    assert!(e.to_string().contains("enrolled"));
    let subject = load_subject(&env.reader(), ok.subject.user_id, T0 + 2).expect("subject");
    assert!(!authz
        .authorize(
            &subject,
            Resource::Provisioning,
            Action::Edit,
            &crate::rbac::Target::Site
        )
        .is_allowed());
    let (dir, path) = env.close().await;
    let mut store = Store::open(&path).expect("reopen");
    assert_eq!(
        bootstrap_installer(&mut store, None, dir.path(), FAST, T0).expect("after"),
        InstallerStatus::Retired
    );
}

#[test]
fn the_installer_password_can_come_from_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("branchline.db");
    let mut store = Store::open(&path).expect("open");
    let hash = password::hash_secret("label-password-99", FAST).expect("hash");
    let status = bootstrap_installer(&mut store, Some(&hash), dir.path(), FAST, T0).expect("b");
    assert_eq!(status, InstallerStatus::CreatedFromConfig);
    assert!(!dir.path().join(INSTALLER_LABEL_FILE).exists());
    let stored: String = Connection::open(&path)
        .expect("open")
        .query_row(
            "SELECT password_hash FROM users WHERE username = 'installer'",
            [],
            |r| r.get(0),
        )
        .expect("hash");
    assert_eq!(stored, hash);
}

/// Opens the store after the writer stopped, for raw edits.
fn raw(path: &Path) -> Connection {
    Connection::open(path).expect("open raw")
}

fn verify(path: &Path) -> Result<i64> {
    let conn = raw(path);
    audit::verify(&conn, path)
}

async fn audited_store() -> (tempfile::TempDir, PathBuf, i64) {
    let env = env().await;
    for name in ["kim", "lee", "max", "ned"] {
        env.user(name, &["agent"], None).await;
    }
    let _ = env
        .accounts
        .verify_login("kim", "wrong password!", "api:10.0.0.1", T0)
        .await;
    crate::audit::audit_denied(
        env.accounts.writer(),
        Actor::new("kim", "api:10.0.0.1"),
        Action::View,
        Resource::Audit,
        "",
        &crate::rbac::DenyReason::NotGranted {
            username: "kim".to_owned(),
            resource: Resource::Audit,
            action: Action::View,
        },
        T0,
    )
    .await
    .expect("audit denied");
    let rows = audit::list(&env.reader(), 0, 100).expect("list");
    assert_eq!(rows.last().map(|r| r.result.as_str()), Some("denied"));
    let (dir, path) = env.close().await;
    let n = verify(&path).expect("intact chain verifies");
    assert_eq!(n, rows.len() as i64);
    (dir, path, n)
}

#[tokio::test]
async fn editing_any_column_of_any_row_breaks_the_chain_at_that_row() {
    let (_dir, path, n) = audited_store().await;
    let edits: &[(&str, &str)] = &[
        ("at_ms", "at_ms + 1"),
        ("actor", "'mallory'"),
        ("source", "source || '!'"),
        ("action", "'nothing'"),
        ("resource", "'roles'"),
        ("target", "'someone'"),
        (
            "result",
            "CASE result WHEN 'ok' THEN 'failed' ELSE 'ok' END",
        ),
        ("detail", "'{\"x\":1}'"),
        ("prev_hash", "'ab' || substr(prev_hash, 3)"),
        ("hash", "'ab' || substr(hash, 3)"),
    ];
    for id in 1..=n {
        for (column, value) in edits {
            let conn = raw(&path);
            let before: String = conn
                .query_row(
                    &format!("SELECT CAST({column} AS TEXT) FROM audit_log WHERE id = ?1"),
                    [id],
                    |r| r.get(0),
                )
                .expect("read");
            conn.execute(
                &format!("UPDATE audit_log SET {column} = {value} WHERE id = ?1"),
                [id],
            )
            .expect("tamper");
            let e = verify(&path).expect_err("tampered chain fails");
            match &e {
                Error::AuditBroken { id: bad, problem } => {
                    assert_eq!(*bad, id, "{column} of row {id}: {e}");
                    assert_eq!(*problem, AuditProblem::HashMismatch, "{column}: {e}");
                }
                other => panic!("{other}"),
            }
            // Put it back; the chain verifies again.
            let restore = if *column == "at_ms" {
                "UPDATE audit_log SET at_ms = CAST(?2 AS INTEGER) WHERE id = ?1".to_owned()
            } else {
                format!("UPDATE audit_log SET {column} = ?2 WHERE id = ?1")
            };
            conn.execute(&restore, rusqlite::params![id, before])
                .expect("restore");
            assert_eq!(verify(&path).expect("restored"), n);
        }
    }
}

#[tokio::test]
async fn deleting_rows_breaks_the_chain() {
    let (_dir, path, n) = audited_store().await;
    // Editing the id is also caught (the row is then missing at its old id).
    raw(&path)
        .execute("UPDATE audit_log SET id = 1000 WHERE id = 2", [])
        .expect("renumber");
    let e = verify(&path).expect_err("renumbered");
    assert!(
        matches!(
            e,
            Error::AuditBroken {
                id: 2,
                problem: AuditProblem::Gap { found: 3 }
            }
        ),
        "{e}"
    );
    raw(&path)
        .execute("UPDATE audit_log SET id = 2 WHERE id = 1000", [])
        .expect("renumber back");
    assert_eq!(verify(&path).expect("back"), n);

    // The last row.
    raw(&path)
        .execute("DELETE FROM audit_log WHERE id = ?1", [n])
        .expect("delete last");
    let e = verify(&path).expect_err("last row deleted");
    assert!(
        matches!(e, Error::AuditBroken { id, problem: AuditProblem::HeadMismatch { .. } } if id == n),
        "{e}"
    );
    // A middle row.
    raw(&path)
        .execute("DELETE FROM audit_log WHERE id = 3", [])
        .expect("delete middle");
    let e = verify(&path).expect_err("middle row deleted");
    assert!(
        matches!(
            e,
            Error::AuditBroken {
                id: 3,
                problem: AuditProblem::Gap { found: 4 }
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("row 3"), "{e}");
}

fn cdr(call_id: &str, caller: &str, callee: &str, direction: Direction) -> Cdr {
    Cdr {
        call_id: call_id.to_owned(),
        direction,
        caller: caller.to_owned(),
        caller_port: None,
        callee: callee.to_owned(),
        callee_port: None,
        started_at_ms: T0,
        answered_at_ms: Some(T0 + 1000),
        ended_at_ms: T0 + 61_000,
        disposition: Disposition::Answered,
        hangup_side: HangupSide::Caller,
        caller_sip_call_id: None,
        callee_sip_call_id: None,
        caller_quality: None,
        callee_quality: None,
        transfer_chain: Vec::new(),
        queue: None,
        blocked: None,
        survey_score: None,
        hold_ms: None,
        queue_overflow: None,
        interrupted: false,
        hangup_cause: None,
    }
}

#[tokio::test]
async fn cdrs_are_scoped_and_masked_for_each_role() {
    let env = env().await;
    let agent = env.user("olga", &["agent"], Some("101")).await;
    let colleague = env.user("pete", &["agent"], Some("102")).await;
    let outsider = env.user("quin", &["agent"], Some("103")).await;
    let sup = env.user("rita", &["supervisor"], Some("104")).await;
    let qi = env.user("sam", &["quality_inspector"], None).await;
    let admin = env.user("tess", &["admin"], None).await;
    env.accounts
        .create_group(
            &root(),
            GroupSpec {
                name: "team".to_owned(),
                description: String::new(),
                members: vec![
                    GroupMember {
                        user_id: agent.id,
                        is_group_admin: false,
                    },
                    GroupMember {
                        user_id: colleague.id,
                        is_group_admin: false,
                    },
                    GroupMember {
                        user_id: sup.id,
                        is_group_admin: true,
                    },
                ],
            },
            T0,
        )
        .await
        .expect("group");
    let writer = env.accounts.writer();
    let calls = [
        cdr("c1", "13812345678", "101", Direction::Inbound),
        cdr("c2", "102", "913999887766", Direction::Outbound),
        cdr("c3", "101", "103", Direction::Internal),
        cdr("c4", "+8613712345678", "103", Direction::Inbound),
    ];
    for c in &calls {
        writer.insert_cdr(c.clone()).await.expect("cdr");
    }
    let reader = env.reader();
    let authz = Authorizer::load(&reader).expect("authz");
    let dir = NumberDirectory::load(&reader).expect("directory");
    let pattern = MaskPattern::default();
    let subject = |u: &User| load_subject(&reader, u.id, T0).expect("subject");
    let visible = |u: &User| -> Vec<(String, String, String)> {
        list_cdrs(
            &reader,
            &subject(u),
            &authz,
            &pattern,
            &dir,
            0,
            i64::MAX,
            PageRequest::default(),
        )
        .expect("list")
        .items
        .into_iter()
        .map(|v| (v.call_id, v.caller, v.callee))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
    };
    let t = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    // The agent sees their own calls only, masked; extensions are never masked.
    assert_eq!(
        visible(&agent),
        [t("c1", "138****5678", "101"), t("c3", "101", "103")]
    );
    assert_eq!(
        visible(&outsider),
        [t("c3", "101", "103"), t("c4", "+861******5678", "103")]
    );
    // The supervisor sees the team's calls, unmasked; not the outsider's.
    assert_eq!(
        visible(&sup),
        [
            t("c1", "13812345678", "101"),
            t("c2", "102", "913999887766"),
            t("c3", "101", "103")
        ]
    );
    // The quality inspector sees every call, masked.
    assert_eq!(
        visible(&qi),
        [
            t("c1", "138****5678", "101"),
            t("c2", "102", "913*****7766"),
            t("c3", "101", "103"),
            t("c4", "+861******5678", "103"),
        ]
    );
    // The admin sees everything unmasked.
    assert_eq!(
        visible(&admin),
        [
            t("c1", "13812345678", "101"),
            t("c2", "102", "913999887766"),
            t("c3", "101", "103"),
            t("c4", "+8613712345678", "103"),
        ]
    );
    let view = cdr_view(&calls[0], &subject(&agent), &authz, &pattern, &dir);
    assert!(view.masked);
    assert_eq!(view.owner, Some(agent.id));
    // No view of any role that lacks numbers.view carries a full customer number.
    for u in [&agent, &colleague, &outsider, &qi] {
        let s = subject(u);
        for c in &calls {
            let json =
                serde_json::to_string(&cdr_view(c, &s, &authz, &pattern, &dir)).expect("json");
            for number in ["13812345678", "913999887766", "8613712345678"] {
                assert!(
                    !json.contains(number),
                    "{} got {number}: {json}",
                    u.username
                );
            }
        }
    }
    env.close().await;
}
