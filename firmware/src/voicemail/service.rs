//! The daemon's side of voicemail: what the board loop does with call control's
//! voicemail outputs, and loading the mailboxes at start.
//!
//! - [`load`]: mailboxes and messages from the store, the mailboxes' greeting files
//!   into the prompt library, as [`VoicemailSettings`] for call control.
//! - [`VoicemailService`] (owned by the board loop): `Capture` starts a message file in
//!   the [`MessageWriter`] and hands its [`super::writer::MessageSink`] to the media
//!   engine; `CaptureEnd` stops both; a written message is registered through the
//!   store task and then reported to call control; `PlayMessage` reads and decodes
//!   the file off the loop (`spawn_blocking`) and plays it unless something else was
//!   played to that end meanwhile; `CheckMailboxPin` runs argon2id off the loop.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::call::{
    Deposit, MailboxSettings, MediaEnd, MessageInfo, VoicemailCodes, VoicemailSettings,
};
use crate::media_engine::MediaEngine;
use crate::prompts::{Playback, Player, Prompt, PromptLibrary};
use crate::store::Store;
use crate::tones::Country;

use super::store::{self as vm_store, MessageRow, NewMessage};
use super::writer::{MessageWriter, Outcome, Written};

/// The mailboxes and messages of the store at `db` as call control's settings; each
/// mailbox's greeting file (`voicemail/greetings/<name>.wav`) goes into `prompts` as
/// [`super::greeting_prompt`] (a bad file is logged, and the mailbox plays the system
/// greeting or the beep instead).
pub fn load(
    db: &Path,
    dir: &Path,
    codes: VoicemailCodes,
    prompts: &mut PromptLibrary,
) -> crate::error::Result<VoicemailSettings> {
    let reader = Store::reader(db)?;
    let boxes = vm_store::mailboxes(reader.connection(), db)?;
    let messages = vm_store::messages(reader.connection(), db)?;
    let mut mailboxes = Vec::new();
    for b in boxes {
        let greeting = b.greeting.as_ref().and_then(|g| {
            let path = dir.join(super::GREETINGS_DIR).join(format!("{g}.wav"));
            let name = super::greeting_prompt(&b.number);
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| Prompt::decode(&name, &path, &bytes).map_err(|e| e.to_string()))
            {
                Ok(p) => {
                    prompts.insert(p);
                    Some(name)
                }
                Err(e) => {
                    tracing::error!(mailbox = b.number, file = %path.display(), error = e, "voicemail greeting not loaded");
                    None
                }
            }
        });
        mailboxes.push(MailboxSettings {
            number: b.number.clone(),
            greeting,
            max_message: b.max_message(),
            max_messages: usize::try_from(b.max_messages).unwrap_or(0),
            on_busy: b.on_busy,
            on_no_answer: b.on_no_answer,
            no_answer: b
                .no_answer_ms
                .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
        });
    }
    Ok(VoicemailSettings {
        codes,
        mailboxes,
        messages: messages.iter().map(|m| info(dir, m)).collect(),
    })
}

/// Call control's view of a stored message.
pub fn info(dir: &Path, m: &MessageRow) -> MessageInfo {
    MessageInfo {
        id: m.id,
        mailbox: m.mailbox.clone(),
        file: dir.join(&m.file),
        duration: Duration::from_millis(u64::try_from(m.duration_ms).unwrap_or(0)),
        heard: m.heard,
    }
}

/// A store job of voicemail (run by the daemon's store task, [`run_job`]).
#[derive(Debug)]
pub enum StoreJob {
    /// Register a written message; its row goes back to the main loop.
    Register {
        /// The message.
        message: NewMessage,
        /// The capture it was.
        capture: u64,
        /// Where [`Done::Stored`] goes.
        reply: mpsc::UnboundedSender<Done>,
    },
    /// Mark a message heard.
    Heard(i64),
    /// Delete a message and its file.
    Delete(i64),
}

/// Runs a voicemail store job on the store writer.
pub async fn run_job(writer: &crate::store::StoreWriter, dir: &Path, job: StoreJob) {
    match job {
        StoreJob::Register {
            message,
            capture,
            reply,
        } => {
            let file = message.file.clone();
            let result = writer
                .transact("register voicemail message", move |tx, path| {
                    vm_store::insert_message(tx, path, &message)
                })
                .await;
            let stored = match result {
                Ok(row) => {
                    tracing::info!(
                        id = row.id,
                        mailbox = row.mailbox,
                        file,
                        duration_ms = row.duration_ms,
                        "voicemail message registered"
                    );
                    Some(info(dir, &row))
                }
                Err(e) => {
                    // The file stays; the next start registers (or quarantines) it.
                    tracing::error!(file, error = %e, "voicemail message not registered");
                    None
                }
            };
            let _ = reply.send(Done::Stored(capture, stored));
        }
        StoreJob::Heard(id) => {
            let result = writer
                .transact("mark voicemail heard", move |tx, path| {
                    vm_store::mark_heard(tx, path, id)
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(id, error = %e, "voicemail message not marked heard");
            }
        }
        StoreJob::Delete(id) => {
            let d = dir.to_owned();
            let result = writer
                .transact("delete voicemail message", move |tx, path| {
                    vm_store::delete_message(tx, path, &d, id)
                })
                .await;
            match result {
                Ok(Some(row)) => {
                    vm_store::remove_tombstone(dir, &row);
                    tracing::info!(id, file = row.file, "voicemail message deleted");
                }
                Ok(None) => tracing::warn!(id, "voicemail message to delete was gone"),
                Err(e) => tracing::error!(id, error = %e, "voicemail message not deleted"),
            }
        }
    }
}

/// Results that come back to the main loop from work done off it.
#[derive(Debug)]
pub enum Done {
    /// A mailbox PIN check: `(check, ok)`.
    Pin(u64, bool),
    /// A message file decoded for `end`, valid while `generation` is the end's.
    Play(MediaEnd, u64, Player),
    /// A capture finished: `(capture, stored message)`.
    Stored(u64, Option<MessageInfo>),
}

/// The board loop's voicemail part. See the module docs.
#[derive(Debug)]
pub struct VoicemailService {
    writer: Option<MessageWriter>,
    dir: PathBuf,
    db: PathBuf,
    country: Country,
    /// Captures running, with their message file name.
    captures: HashMap<u64, (Deposit, String)>,
    /// Ports being captured: the board loop passes their frames to the media engine.
    captured_ports: HashSet<u8>,
    /// Per end, the number of the last play/stop, so a file decoded late does not
    /// override what was played since.
    generations: HashMap<MediaEnd, u64>,
    done: mpsc::UnboundedSender<Done>,
}

impl VoicemailService {
    /// The service; `writer` is `None` when the writer thread could not start
    /// (messages are then not recorded: logged). Results of work off the loop come
    /// on `done`.
    pub fn new(
        writer: Option<MessageWriter>,
        dir: PathBuf,
        db: PathBuf,
        country: Country,
        done: mpsc::UnboundedSender<Done>,
    ) -> VoicemailService {
        VoicemailService {
            writer,
            dir,
            db,
            country,
            captures: HashMap::new(),
            captured_ports: HashSet::new(),
            generations: HashMap::new(),
            done,
        }
    }

    /// Whether the frames of `port` go to the media engine for a capture.
    pub fn captures_port(&self, port: u8) -> bool {
        self.captured_ports.contains(&port)
    }

    /// Something else plays to (or stops playing to) `end`: a message file still
    /// being read for it is not played.
    pub fn played(&mut self, end: MediaEnd) {
        *self.generations.entry(end).or_default() += 1;
    }

    /// `Output::Capture`: the message file and the engine's capture start. `false`
    /// when no writer runs (the caller reports the capture done, empty).
    pub fn capture(&mut self, media: &MediaEngine, deposit: Deposit) -> bool {
        let Some(writer) = &self.writer else {
            tracing::error!(
                mailbox = deposit.mailbox,
                "voicemail writer not running: message not recorded"
            );
            return false;
        };
        let taken: HashSet<&str> = self.captures.values().map(|(_, n)| n.as_str()).collect();
        let name = (0..)
            .map(|n| super::message_file_name(&deposit.mailbox, deposit.received_at_ms, n))
            .find(|n| !taken.contains(n.as_str()) && !self.dir.join(n).exists())
            .unwrap_or_default();
        let sink = writer.start(deposit.capture, name.clone());
        media.capture(deposit.end, Box::new(sink));
        if let MediaEnd::Port(p) = deposit.end {
            self.captured_ports.insert(p);
        }
        self.captures.insert(deposit.capture, (deposit, name));
        true
    }

    /// `Output::CaptureEnd`.
    pub fn capture_end(&mut self, media: &MediaEngine, end: MediaEnd, capture: u64, keep: bool) {
        media.stop_capture(end);
        if let MediaEnd::Port(p) = end {
            self.captured_ports.remove(&p);
        }
        if let Some(w) = &self.writer {
            w.stop(capture, keep);
        }
    }

    /// A writer outcome: a written message goes to the store (`jobs`), then to call
    /// control; a dropped or failed one is reported done at once.
    pub fn outcome(&mut self, outcome: Outcome, jobs: impl FnOnce(StoreJob)) {
        let (capture, written) = match outcome {
            Outcome::Written(w) => (w.capture, Some(w)),
            Outcome::Dropped {
                capture,
                duration_ms,
            } => {
                tracing::info!(
                    capture,
                    duration_ms,
                    "voicemail message too short or not kept: dropped"
                );
                (capture, None)
            }
            Outcome::Failed { capture, .. } => (capture, None),
        };
        let Some((deposit, _)) = self.captures.remove(&capture) else {
            return;
        };
        match written {
            Some(Written {
                file,
                duration_ms,
                size_bytes,
                sha256,
                ..
            }) => jobs(StoreJob::Register {
                message: NewMessage {
                    mailbox: deposit.mailbox,
                    call_id: deposit.call_id,
                    caller_number: deposit.caller_number,
                    caller_name: deposit.caller_name,
                    received_at_ms: deposit.received_at_ms,
                    duration_ms,
                    file,
                    size_bytes,
                    sha256,
                    interrupted: false,
                },
                capture,
                reply: self.done.clone(),
            }),
            None => {
                let _ = self.done.send(Done::Stored(capture, None));
            }
        }
    }

    /// `Output::PlayMessage`: the file is read and decoded off the loop.
    pub fn play_message(&mut self, end: MediaEnd, file: PathBuf) {
        self.played(end);
        let generation = self.generations.get(&end).copied().unwrap_or_default();
        let (done, country) = (self.done.clone(), self.country);
        tokio::task::spawn_blocking(move || {
            let name = "voicemail-message";
            let prompt = std::fs::read(&file)
                .map_err(|e| e.to_string())
                .and_then(|b| Prompt::decode(name, &file, &b).map_err(|e| e.to_string()));
            match prompt {
                Ok(p) => {
                    let mut lib = PromptLibrary::default();
                    lib.insert(p);
                    let player = lib.player(
                        &Playback {
                            once: vec![name.to_owned()],
                            then: None,
                        },
                        country,
                    );
                    let _ = done.send(Done::Play(end, generation, player));
                }
                Err(e) => {
                    tracing::error!(file = %file.display(), error = e, "voicemail message not played")
                }
            }
        });
    }

    /// A decoded message for `end`: played unless something else was played since.
    pub fn play_decoded(
        &self,
        media: &MediaEngine,
        end: MediaEnd,
        generation: u64,
        player: Player,
    ) {
        if self.generations.get(&end).copied().unwrap_or_default() == generation {
            media.play(end, player);
        }
    }

    /// `Output::CheckMailboxPin`: argon2id off the loop.
    pub fn check_pin(&self, check: u64, mailbox: String, pin: crate::acd::codes::Pin) {
        let (db, done) = (self.db.clone(), self.done.clone());
        tokio::task::spawn_blocking(move || {
            let ok = Store::reader(&db)
                .and_then(|r| vm_store::check_pin(r.connection(), &db, &mailbox, pin.expose()))
                .unwrap_or_else(|e| {
                    tracing::error!(mailbox, error = %e, "mailbox PIN not checked");
                    false
                });
            let _ = done.send(Done::Pin(check, ok));
        });
    }

    /// The writer, to finish it at shutdown.
    pub fn take_writer(&mut self) -> Option<MessageWriter> {
        self.writer.take()
    }
}
