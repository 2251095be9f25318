//! Mailboxes and messages in the store (migration 0015).
//!
//! Every function runs in the caller's connection or transaction; writes go through
//! the store writer thread (`StoreWriter::transact`). Input is validated before
//! anything is written: a bad mailbox or message is [`Error::Invalid`] naming every
//! field at fault, and nothing changes. PINs are hashed by the caller before the
//! transaction ([`crate::accounts::password::hash_secret`]: argon2id takes tens of
//! milliseconds, too long for the writer thread).

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::error::{Error, FieldProblem, Result};

fn sql<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

/// Longest message a mailbox may allow (ms).
pub const MAX_MESSAGE_MS: i64 = 600_000;
/// Shortest "longest message" a mailbox may set (ms).
pub const MIN_MAX_MESSAGE_MS: i64 = 5_000;

/// A mailbox to add ([`add_mailbox`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMailbox {
    /// The mailbox number (an extension's, or a queue overflow's target).
    pub number: String,
    /// The owner user's id, if any.
    pub owner_user_id: Option<i64>,
    /// argon2id PHC hash of the PIN (`None`: only the own-mailbox code opens it).
    pub pin_hash: Option<String>,
    /// The greeting file's name in `voicemail/greetings/`, without `.wav`.
    pub greeting: Option<String>,
    /// Longest message (ms).
    pub max_message_ms: i64,
    /// Most messages kept.
    pub max_messages: i64,
    /// Busy calls to the extension go to the mailbox.
    pub on_busy: bool,
    /// Unanswered calls to the extension go to the mailbox.
    pub on_no_answer: bool,
    /// Ring time before an unanswered call goes to the mailbox (`None`: the ring
    /// timeout).
    pub no_answer_ms: Option<i64>,
}

impl NewMailbox {
    /// A mailbox `number` with the defaults: 2 min messages, 50 kept, busy and no
    /// answer both go there after the ring timeout, no PIN, no greeting, no owner.
    pub fn new(number: &str) -> NewMailbox {
        NewMailbox {
            number: number.to_owned(),
            owner_user_id: None,
            pin_hash: None,
            greeting: None,
            max_message_ms: 120_000,
            max_messages: 50,
            on_busy: true,
            on_no_answer: true,
            no_answer_ms: None,
        }
    }

    /// Every problem with the mailbox (empty: valid).
    pub fn problems(&self) -> Vec<FieldProblem> {
        let mut out = Vec::new();
        let mut bad = |field: &str, message: &str| {
            out.push(FieldProblem {
                field: field.to_owned(),
                message: message.to_owned(),
            })
        };
        if !super::valid_number(&self.number) {
            bad("number", "must be 2 to 6 digits");
        }
        if let Some(h) = &self.pin_hash {
            if let Err(e) = crate::accounts::password::check_phc(h) {
                bad("pin_hash", &e);
            }
        }
        if let Some(g) = &self.greeting {
            if !crate::prompts::valid_name(g) {
                bad("greeting", "must be 1-64 of a-z, 0-9, '-', '_'");
            }
        }
        if !(MIN_MAX_MESSAGE_MS..=MAX_MESSAGE_MS).contains(&self.max_message_ms) {
            bad("max_message_ms", "must be 5000 to 600000");
        }
        if !(1..=1000).contains(&self.max_messages) {
            bad("max_messages", "must be 1 to 1000");
        }
        if let Some(n) = self.no_answer_ms {
            if !(5_000..=120_000).contains(&n) {
                bad("no_answer_ms", "must be 5000 to 120000");
            }
        }
        out
    }
}

/// A stored mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MailboxRow {
    /// Row id.
    pub id: i64,
    /// The mailbox number.
    pub number: String,
    /// The owner user's id.
    pub owner_user_id: Option<i64>,
    /// A PIN is set.
    pub has_pin: bool,
    /// The greeting file's name (without `.wav`).
    pub greeting: Option<String>,
    /// Longest message (ms).
    pub max_message_ms: i64,
    /// Most messages kept.
    pub max_messages: i64,
    /// Busy calls go there.
    pub on_busy: bool,
    /// Unanswered calls go there.
    pub on_no_answer: bool,
    /// Ring time before an unanswered call goes there (ms; `None`: ring timeout).
    pub no_answer_ms: Option<i64>,
}

impl MailboxRow {
    /// Longest message.
    pub fn max_message(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.max_message_ms).unwrap_or(0))
    }
}

/// A message to register ([`insert_message`]), once its file is finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The mailbox number.
    pub mailbox: String,
    /// The call that left it ('' when unknown).
    pub call_id: String,
    /// Calling number ('' when withheld or unknown).
    pub caller_number: String,
    /// Calling name.
    pub caller_name: String,
    /// When the recording started, ms since the Unix epoch.
    pub received_at_ms: i64,
    /// Length of the audio.
    pub duration_ms: i64,
    /// File name relative to the voicemail directory.
    pub file: String,
    /// File size in bytes.
    pub size_bytes: i64,
    /// sha256 of the file, lower-case hex.
    pub sha256: String,
    /// Repaired after a crash.
    pub interrupted: bool,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageRow {
    /// Row id.
    pub id: i64,
    /// The mailbox number.
    pub mailbox: String,
    /// The call that left it.
    pub call_id: String,
    /// Calling number (unmasked: masking is per viewer).
    pub caller_number: String,
    /// Calling name.
    pub caller_name: String,
    /// When it was received, ms since the Unix epoch.
    pub received_at_ms: i64,
    /// Length of the audio (ms).
    pub duration_ms: i64,
    /// File name relative to the voicemail directory.
    pub file: String,
    /// File size in bytes.
    pub size_bytes: i64,
    /// sha256 of the file.
    pub sha256: String,
    /// Listened to (saved); false: new.
    pub heard: bool,
    /// Repaired after a crash.
    pub interrupted: bool,
}

/// Whether `name` is a file name a message row may hold: `[A-Za-z0-9._-]`, 5-128
/// characters, not hidden, no path.
pub fn valid_file_name(name: &str) -> bool {
    (5..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Adds a mailbox; returns its id. A number already used is [`Error::Invalid`] too.
pub fn add_mailbox(conn: &Connection, path: &Path, mailbox: &NewMailbox) -> Result<i64> {
    let mut problems = mailbox.problems();
    if problems.is_empty() && mailbox_id(conn, path, &mailbox.number)?.is_some() {
        problems.push(FieldProblem {
            field: "number".to_owned(),
            message: "a mailbox with this number exists".to_owned(),
        });
    }
    if let Some(owner) = mailbox.owner_user_id {
        let known: Option<i64> = conn
            .query_row("SELECT id FROM users WHERE id = ?1", [owner], |r| r.get(0))
            .optional()
            .map_err(sql(path, "read mailbox owner"))?;
        if known.is_none() {
            problems.push(FieldProblem {
                field: "owner_user_id".to_owned(),
                message: "no such user".to_owned(),
            });
        }
    }
    if !problems.is_empty() {
        return Err(Error::Invalid {
            entity: "mailbox",
            key: mailbox.number.clone(),
            problems,
        });
    }
    conn.execute(
        "INSERT INTO voicemail_boxes (number, owner_user_id, pin_hash, greeting, max_message_ms,
             max_messages, on_busy, on_no_answer, no_answer_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            mailbox.number,
            mailbox.owner_user_id,
            mailbox.pin_hash,
            mailbox.greeting,
            mailbox.max_message_ms,
            mailbox.max_messages,
            mailbox.on_busy,
            mailbox.on_no_answer,
            mailbox.no_answer_ms,
            crate::store::system_clock_ms(),
        ],
    )
    .map_err(sql(path, "insert mailbox"))?;
    Ok(conn.last_insert_rowid())
}

fn mailbox_id(conn: &Connection, path: &Path, number: &str) -> Result<Option<i64>> {
    conn.query_row(
        "SELECT id FROM voicemail_boxes WHERE number = ?1",
        [number],
        |r| r.get(0),
    )
    .optional()
    .map_err(sql(path, "read mailbox"))
}

/// Every mailbox, by number.
pub fn mailboxes(conn: &Connection, path: &Path) -> Result<Vec<MailboxRow>> {
    let mut stmt = conn
        .prepare(
            "SELECT id, number, owner_user_id, pin_hash IS NOT NULL, greeting, max_message_ms,
                    max_messages, on_busy, on_no_answer, no_answer_ms
             FROM voicemail_boxes ORDER BY number",
        )
        .map_err(sql(path, "read mailboxes"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(MailboxRow {
                id: r.get(0)?,
                number: r.get(1)?,
                owner_user_id: r.get(2)?,
                has_pin: r.get(3)?,
                greeting: r.get(4)?,
                max_message_ms: r.get(5)?,
                max_messages: r.get(6)?,
                on_busy: r.get(7)?,
                on_no_answer: r.get(8)?,
                no_answer_ms: r.get(9)?,
            })
        })
        .map_err(sql(path, "read mailboxes"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql(path, "read mailboxes"))
}

const MESSAGE_COLUMNS: &str = "m.id, b.number, m.call_id, m.caller_number, m.caller_name,
    m.received_at_ms, m.duration_ms, m.file, m.size_bytes, m.sha256, m.heard, m.interrupted";

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        id: r.get(0)?,
        mailbox: r.get(1)?,
        call_id: r.get(2)?,
        caller_number: r.get(3)?,
        caller_name: r.get(4)?,
        received_at_ms: r.get(5)?,
        duration_ms: r.get(6)?,
        file: r.get(7)?,
        size_bytes: r.get(8)?,
        sha256: r.get(9)?,
        heard: r.get(10)?,
        interrupted: r.get(11)?,
    })
}

/// Every message, by mailbox and then oldest first.
pub fn messages(conn: &Connection, path: &Path) -> Result<Vec<MessageRow>> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM voicemail_messages m
             JOIN voicemail_boxes b ON b.id = m.mailbox_id
             ORDER BY b.number, m.received_at_ms, m.id"
        ))
        .map_err(sql(path, "read messages"))?;
    let rows = stmt
        .query_map([], message_row)
        .map_err(sql(path, "read messages"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql(path, "read messages"))
}

/// The message `id`, if it exists.
pub fn message(conn: &Connection, path: &Path, id: i64) -> Result<Option<MessageRow>> {
    conn.query_row(
        &format!(
            "SELECT {MESSAGE_COLUMNS} FROM voicemail_messages m
             JOIN voicemail_boxes b ON b.id = m.mailbox_id WHERE m.id = ?1"
        ),
        [id],
        message_row,
    )
    .optional()
    .map_err(sql(path, "read message"))
}

/// Registers a finished message; returns its row. Refused ([`Error::Invalid`],
/// nothing written) for an unknown mailbox, a full one, a bad file name or hash, or a
/// negative duration.
pub fn insert_message(conn: &Connection, path: &Path, m: &NewMessage) -> Result<MessageRow> {
    let mut problems = Vec::new();
    let mut bad = |field: &str, message: String| {
        problems.push(FieldProblem {
            field: field.to_owned(),
            message,
        })
    };
    let boxed: Option<(i64, i64)> = conn
        .query_row(
            "SELECT id, max_messages FROM voicemail_boxes WHERE number = ?1",
            [&m.mailbox],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql(path, "read mailbox"))?;
    match boxed {
        None => bad("mailbox", "no such mailbox".to_owned()),
        Some((id, max)) => {
            let held: i64 = conn
                .query_row(
                    "SELECT count(*) FROM voicemail_messages WHERE mailbox_id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .map_err(sql(path, "count messages"))?;
            if held >= max {
                bad("mailbox", format!("full ({held} of {max} messages)"));
            }
        }
    }
    if !valid_file_name(&m.file) {
        bad(
            "file",
            "must be 5-128 of A-Z a-z 0-9 . _ - and not hidden".to_owned(),
        );
    }
    if m.sha256.len() != 64
        || !m
            .sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        bad("sha256", "must be 64 lower-case hex digits".to_owned());
    }
    if m.duration_ms < 0 {
        bad("duration_ms", "must not be negative".to_owned());
    }
    if m.size_bytes < 44 {
        bad(
            "size_bytes",
            "a WAV file has at least its 44-byte header".to_owned(),
        );
    }
    let Some((mailbox_id, _)) = boxed.filter(|_| problems.is_empty()) else {
        return Err(Error::Invalid {
            entity: "voicemail message",
            key: m.file.clone(),
            problems,
        });
    };
    conn.execute(
        "INSERT INTO voicemail_messages (mailbox_id, call_id, caller_number, caller_name,
             received_at_ms, duration_ms, file, size_bytes, sha256, interrupted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            mailbox_id,
            m.call_id,
            m.caller_number,
            m.caller_name,
            m.received_at_ms,
            m.duration_ms,
            m.file,
            m.size_bytes,
            m.sha256,
            m.interrupted,
        ],
    )
    .map_err(sql(path, "insert message"))?;
    let id = conn.last_insert_rowid();
    message(conn, path, id)?.ok_or_else(|| Error::NotFound {
        entity: "voicemail message",
        key: id.to_string(),
    })
}

/// Marks message `id` heard (saved). False when there is no such message.
pub fn mark_heard(conn: &Connection, path: &Path, id: i64) -> Result<bool> {
    let n = conn
        .execute(
            "UPDATE voicemail_messages SET heard = 1 WHERE id = ?1",
            [id],
        )
        .map_err(sql(path, "mark message heard"))?;
    Ok(n == 1)
}

/// The suffix of a message file being deleted (see [`delete_message`]).
pub const TOMBSTONE_SUFFIX: &str = ".del";

/// Deletes message `id`: its file is renamed to a `.del` tombstone, the row is
/// deleted in this transaction, and the caller removes the tombstone once the
/// transaction committed ([`remove_tombstone`]; start-up finishes it after a crash,
/// [`super::writer::recover`]). Returns the deleted row, `None` when there is no such
/// message (nothing changes). A file already missing is not an error (logged).
pub fn delete_message(
    conn: &Connection,
    path: &Path,
    dir: &Path,
    id: i64,
) -> Result<Option<MessageRow>> {
    let Some(row) = message(conn, path, id)? else {
        return Ok(None);
    };
    let file = dir.join(&row.file);
    let tomb = dir.join(format!("{}{TOMBSTONE_SUFFIX}", row.file));
    match std::fs::rename(&file, &tomb) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(file = %file.display(), "voicemail message file already gone");
        }
        Err(source) => {
            return Err(Error::FileWrite { path: file, source });
        }
    }
    conn.execute("DELETE FROM voicemail_messages WHERE id = ?1", [id])
        .map_err(sql(path, "delete message"))?;
    Ok(Some(row))
}

/// Removes the tombstone of a message [`delete_message`] deleted (after the commit).
pub fn remove_tombstone(dir: &Path, row: &MessageRow) {
    let tomb = dir.join(format!("{}{TOMBSTONE_SUFFIX}", row.file));
    match std::fs::remove_file(&tomb) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(file = %tomb.display(), error = %e, "voicemail tombstone not removed")
        }
    }
}

/// Whether `pin` opens mailbox `number` (argon2id against its `pin_hash`). False for
/// an unknown mailbox or one without a PIN; a stored hash that does not parse is an
/// error.
pub fn check_pin(conn: &Connection, path: &Path, number: &str, pin: &str) -> Result<bool> {
    let hash: Option<Option<String>> = conn
        .query_row(
            "SELECT pin_hash FROM voicemail_boxes WHERE number = ?1",
            [number],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql(path, "read mailbox PIN"))?;
    let Some(Some(hash)) = hash else {
        return Ok(false);
    };
    crate::accounts::password::verify_secret(pin, &hash)
}
