//! Voicemail: mailboxes, their messages, and the crash-safe message files.
//!
//! ```text
//!  call control ──Output::Capture / CaptureEnd──▶ daemon ──▶ media engine (FrameSink)
//!                                                   │              │ 20 ms frames, bounded
//!                                                   ▼              ▼
//!                                   writer thread ([`writer`]) ──▶ voicemail/msg-*.wav.part
//!                                                   │ finished: header final, fsync, rename
//!                                                   ▼
//!                                  store ([`store`]): voicemail_messages row ──▶ call control
//!  start-up: [`writer::recover`] ── *.wav.part repaired, registered (interrupted)
//! ```
//!
//! - **Mailboxes** are rows of `voicemail_boxes` (migration 0015), configured in the
//!   store like queues (HQ will sync them; [`store::add_mailbox`] for the box and
//!   tests): a number (the extension it serves, or the number a queue's
//!   `voicemail` overflow names), an owner user, an argon2id PIN hash
//!   ([`crate::accounts::password`]), a greeting, the longest message, the most
//!   messages kept, and whether the extension's busy / unanswered calls go there
//!   (and after how long). Call control gets them at start ([`service::load`]) as
//!   [`crate::call::VoicemailSettings`].
//! - **Greetings** are WAV files in `voicemail/greetings/` ([`GREETINGS_DIR`]) in the
//!   prompts' format (PCM mono 8 kHz 16-bit), named by the mailbox's `greeting`
//!   column; the daemon loads them at start as prompts called
//!   [`greeting_prompt`]`(number)`. A mailbox without one plays the system prompt
//!   [`SYSTEM_GREETING`] if the box has it, else only the beep.
//! - **Messages** are mono 16-bit PCM WAV files at 8 kHz in `voicemail/`
//!   ([`VOICEMAIL_DIR`], next to `recordings/`) named `msg-<mailbox>-<ms>.wav`, written
//!   by one writer thread ([`writer`]) with the recorder's crash-safe discipline
//!   (header sizes every second, fdatasync at most 2 s apart, `.part` until finished,
//!   repaired at start-up), and indexed in `voicemail_messages` (caller, times,
//!   duration, size, sha256, new/heard). Deleting a message renames its file to a
//!   `.del` tombstone, deletes the row, then the file ([`store::delete_message`]); a
//!   crash in between is finished at start-up.
//!
//! Limits: messages stay on the box (no outbox rows: the sync protocol has no
//! voicemail record type yet, and message audio would need the recordings' chunked
//! upload); a message cut by a crash keeps its audio but loses its caller (its row
//! says `interrupted`); greetings are read at start only.

pub mod service;
pub mod store;
pub mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

/// The voicemail directory under the data directory.
pub const VOICEMAIL_DIR: &str = "voicemail";
/// The greetings directory inside [`VOICEMAIL_DIR`].
pub const GREETINGS_DIR: &str = "greetings";
/// The system greeting prompt ("please leave a message after the tone") played by a
/// mailbox without its own, when the box has it (`prompts/vm-greeting.wav`).
pub const SYSTEM_GREETING: &str = "vm-greeting";
/// Shortest message kept: shorter ones (a caller who hangs up at the beep) are
/// dropped.
pub const MIN_MESSAGE_MS: i64 = 1000;

/// The prompt name under which the daemon loads mailbox `number`'s own greeting.
pub fn greeting_prompt(number: &str) -> String {
    format!("vm-greeting-{number}")
}

/// The voicemail directory of the store at `db`: the store is always
/// `<data_dir>/branchline.db` ([`crate::config::PathsConfig::db_path`]), the messages
/// are in `<data_dir>/voicemail` (for the API, which knows the store's path only).
pub fn dir_of_store(db: &Path) -> PathBuf {
    dir(db.parent().unwrap_or_else(|| Path::new(".")))
}

/// The voicemail directory of a data directory.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join(VOICEMAIL_DIR)
}

/// The file name of a message for mailbox `mailbox` received at `received_ms`
/// (`msg-<mailbox>-<ms>.wav`); `n` > 0 makes it unique when two messages for the same
/// mailbox start in the same millisecond (`msg-<mailbox>-<ms>-<n>.wav`).
pub fn message_file_name(mailbox: &str, received_ms: i64, n: u32) -> String {
    if n == 0 {
        format!("msg-{mailbox}-{received_ms}.wav")
    } else {
        format!("msg-{mailbox}-{received_ms}-{n}.wav")
    }
}

/// The mailbox and receive time a message file's name carries (see
/// [`message_file_name`]), for files found at start-up without their row.
pub fn parse_message_file_name(name: &str) -> Option<(String, i64)> {
    let rest = name.strip_prefix("msg-")?.strip_suffix(".wav")?;
    let mut parts = rest.split('-');
    let mailbox = parts.next()?;
    let ms: i64 = parts.next()?.parse().ok()?;
    if let Some(n) = parts.next() {
        n.parse::<u32>().ok()?;
    }
    if parts.next().is_some() || !valid_number(mailbox) {
        return None;
    }
    Some((mailbox.to_owned(), ms))
}

/// Is `number` a valid mailbox number (2-6 digits, like extensions and queues)?
pub fn valid_number(number: &str) -> bool {
    (2..=6).contains(&number.len()) && number.bytes().all(|b| b.is_ascii_digit())
}
