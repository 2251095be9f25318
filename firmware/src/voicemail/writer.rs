//! The voicemail message writer: one thread that writes every message being left as a
//! mono 16-bit PCM WAV file at 8 kHz, crash-safely, and [`recover`], which finishes at
//! start-up what a crash left behind.
//!
//! - Real time: the media engine hands each 20 ms frame to a [`MessageSink`], which
//!   passes it over a bounded channel ([`FRAME_QUEUE`]) with `try_send`: a full channel
//!   drops the frame and counts it ([`MessageWriter::dropped_frames`]), the engine's
//!   tick never waits. Start and stop travel on the same channel (so they stay in
//!   order with the frames) with a blocking send from the board loop; the thread only
//!   appends to files, so the channel drains in microseconds.
//! - Crash safety, as the call recorder's ([`crate::recorder`], layout in
//!   [`crate::recorder::wav`] with one channel): the file is `<name>.part` while it is
//!   written, its header's sizes are rewritten after each second of audio and the file
//!   fdatasync'ed at most [`SYNC_INTERVAL`] apart; finishing writes the final header,
//!   fsyncs, renames to `<name>` and fsyncs the directory, then hashes the file
//!   (sha256) for its row. A message shorter than [`super::MIN_MESSAGE_MS`] or asked
//!   not to be kept is deleted.
//! - Results go back to the daemon's main loop as [`Outcome`]s, which registers the
//!   kept ones in the store ([`super::store::insert_message`]) and tells call control.
//! - The thread ends when the last [`MessageWriter`] and sink are gone; a message
//!   still open then is finished as it is (the next start registers it, [`recover`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::media_engine::FrameSink;
use crate::recorder::wav::{self, Verdict, FRAME_SAMPLES, HEADER_LEN};
use crate::store::Store;

use super::store::{self as vm_store, NewMessage, TOMBSTONE_SUFFIX};

/// Frames in flight to the writer at most (8 messages x 1 s); beyond, sinks drop
/// frames and count them.
pub const FRAME_QUEUE: usize = 8 * 50;
/// Longest time between two fdatasyncs of a message with new data.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// Channels of a message file.
pub const CHANNELS: u16 = 1;
/// Bytes of one 20 ms mono frame in the file.
pub const FRAME_BYTES: u64 = FRAME_SAMPLES as u64 * 2;
/// Frames between two header updates (one second).
const HEADER_EVERY: u64 = 50;
/// Suffix of a message being written.
pub const PART_SUFFIX: &str = ".part";
/// Directory (inside the voicemail directory) for files start-up could not use.
pub const QUARANTINE_DIR: &str = "quarantine";

/// Errors of the message files. Variants carry the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum VoicemailError {
    /// A file or directory operation failed.
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file could not be hashed.
    #[error(transparent)]
    Hash(#[from] crate::sync::files::LocalFileError),
    /// The store refused or failed a registration.
    #[error(transparent)]
    Store(#[from] crate::error::Error),
    /// The writer thread could not be started.
    #[error("voicemail writer thread: {source}")]
    Thread {
        /// The OS error.
        source: std::io::Error,
    },
}

fn io_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> VoicemailError + 'a {
    move |source| VoicemailError::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

/// A finished message file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The capture it was (call control's id).
    pub capture: u64,
    /// File name in the voicemail directory.
    pub file: String,
    /// Length of the audio (ms).
    pub duration_ms: i64,
    /// File size (bytes).
    pub size_bytes: i64,
    /// sha256 of the file, lower-case hex.
    pub sha256: String,
}

/// What became of a capture.
#[derive(Debug)]
pub enum Outcome {
    /// The message file is finished.
    Written(Written),
    /// Not kept: asked so, or shorter than [`super::MIN_MESSAGE_MS`] (the file is gone).
    Dropped {
        /// The capture.
        capture: u64,
        /// Its length (ms).
        duration_ms: i64,
    },
    /// The file could not be written (the partial file is left for [`recover`]).
    Failed {
        /// The capture.
        capture: u64,
        /// What failed.
        error: VoicemailError,
    },
}

enum Job {
    Start {
        capture: u64,
        name: String,
    },
    Frame {
        capture: u64,
        pcm: Box<[i16; FRAME_SAMPLES]>,
    },
    Stop {
        capture: u64,
        keep: bool,
    },
}

/// Handle to the writer thread. See the module docs.
#[derive(Debug, Clone)]
pub struct MessageWriter {
    jobs: std_mpsc::SyncSender<Job>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Start { capture, name } => write!(f, "Start({capture}, {name})"),
            Job::Frame { capture, .. } => write!(f, "Frame({capture})"),
            Job::Stop { capture, keep } => write!(f, "Stop({capture}, {keep})"),
        }
    }
}

impl MessageWriter {
    /// Starts the writer thread on directory `dir` (made if missing); outcomes go to
    /// `outcomes`.
    pub fn spawn(
        dir: PathBuf,
        outcomes: mpsc::UnboundedSender<Outcome>,
    ) -> Result<(MessageWriter, std::thread::JoinHandle<()>), VoicemailError> {
        std::fs::create_dir_all(&dir).map_err(io_err(&dir, "create the directory"))?;
        let (jobs, rx) = std_mpsc::sync_channel(FRAME_QUEUE);
        let thread = std::thread::Builder::new()
            .name("voicemail-writer".to_owned())
            .spawn(move || run(&dir, &rx, &outcomes))
            .map_err(|source| VoicemailError::Thread { source })?;
        Ok((
            MessageWriter {
                jobs,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            thread,
        ))
    }

    /// Starts message file `name` for `capture`; its frames come through the returned
    /// sink (give it to the media engine).
    pub fn start(&self, capture: u64, name: String) -> MessageSink {
        if self.jobs.send(Job::Start { capture, name }).is_err() {
            tracing::error!(capture, "voicemail writer gone; message not recorded");
        }
        MessageSink {
            capture,
            jobs: self.jobs.clone(),
            dropped: Arc::clone(&self.dropped),
        }
    }

    /// Ends `capture`: finished and kept (if long enough), or deleted.
    pub fn stop(&self, capture: u64, keep: bool) {
        if self.jobs.send(Job::Stop { capture, keep }).is_err() {
            tracing::error!(capture, "voicemail writer gone; message not finished");
        }
    }

    /// Frames dropped because the writer's channel was full.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Where the media engine puts a captured end's frames for one message.
#[derive(Debug)]
pub struct MessageSink {
    capture: u64,
    jobs: std_mpsc::SyncSender<Job>,
    dropped: Arc<AtomicU64>,
}

impl FrameSink for MessageSink {
    fn frame(&mut self, pcm: &[i16; FRAME_SAMPLES]) {
        let job = Job::Frame {
            capture: self.capture,
            pcm: Box::new(*pcm),
        };
        if self.jobs.try_send(job).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One message being written.
struct Open {
    name: String,
    part: PathBuf,
    file: File,
    data_len: u64,
    frames_since_header: u64,
    synced_at: Instant,
    dirty: bool,
}

impl Open {
    fn create(dir: &Path, name: String) -> Result<Open, VoicemailError> {
        let part = dir.join(format!("{name}{PART_SUFFIX}"));
        let mut file = File::create(&part).map_err(io_err(&part, "create"))?;
        file.write_all(&wav::header_for(CHANNELS, 0))
            .map_err(io_err(&part, "write the header"))?;
        file.sync_data().map_err(io_err(&part, "sync"))?;
        Ok(Open {
            name,
            part,
            file,
            data_len: 0,
            frames_since_header: 0,
            synced_at: Instant::now(),
            dirty: false,
        })
    }

    fn frame(&mut self, pcm: &[i16; FRAME_SAMPLES]) -> Result<(), VoicemailError> {
        let mut bytes = [0u8; FRAME_BYTES as usize];
        for (out, s) in bytes.chunks_exact_mut(2).zip(pcm) {
            out.copy_from_slice(&s.to_le_bytes());
        }
        self.file
            .write_all_at(&bytes, HEADER_LEN + self.data_len)
            .map_err(io_err(&self.part, "append audio"))?;
        self.data_len += FRAME_BYTES;
        self.dirty = true;
        self.frames_since_header += 1;
        if self.frames_since_header >= HEADER_EVERY {
            self.frames_since_header = 0;
            self.write_header()?;
        }
        if self.synced_at.elapsed() >= SYNC_INTERVAL {
            self.sync()?;
        }
        Ok(())
    }

    fn write_header(&mut self) -> Result<(), VoicemailError> {
        self.file
            .write_all_at(&wav::header_for(CHANNELS, self.data_len), 0)
            .map_err(io_err(&self.part, "update the header"))
    }

    fn sync(&mut self) -> Result<(), VoicemailError> {
        if self.dirty {
            self.file.sync_data().map_err(io_err(&self.part, "sync"))?;
            self.dirty = false;
        }
        self.synced_at = Instant::now();
        Ok(())
    }

    fn duration_ms(&self) -> i64 {
        i64::try_from(self.data_len * 1000 / (u64::from(wav::SAMPLE_RATE) * 2)).unwrap_or(i64::MAX)
    }

    /// Final header, fsync, rename; returns the finished file's path.
    fn finish(mut self, dir: &Path) -> Result<PathBuf, VoicemailError> {
        self.write_header()?;
        self.file.sync_all().map_err(io_err(&self.part, "sync"))?;
        let done = dir.join(&self.name);
        std::fs::rename(&self.part, &done).map_err(io_err(&self.part, "rename"))?;
        sync_dir(dir)?;
        Ok(done)
    }
}

fn sync_dir(dir: &Path) -> Result<(), VoicemailError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "sync the directory"))
}

fn run(dir: &Path, jobs: &std_mpsc::Receiver<Job>, outcomes: &mpsc::UnboundedSender<Outcome>) {
    let mut open: HashMap<u64, Open> = HashMap::new();
    let failed = |capture: u64, error: VoicemailError| {
        tracing::error!(capture, error = %error, "voicemail message not written");
        let _ = outcomes.send(Outcome::Failed { capture, error });
    };
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Start { capture, name } => match Open::create(dir, name) {
                Ok(o) => {
                    open.insert(capture, o);
                }
                Err(e) => failed(capture, e),
            },
            Job::Frame { capture, pcm } => {
                let Some(o) = open.get_mut(&capture) else {
                    continue; // its start failed, or it was stopped already
                };
                if let Err(e) = o.frame(&pcm) {
                    open.remove(&capture);
                    failed(capture, e);
                }
            }
            Job::Stop { capture, keep } => {
                let Some(o) = open.remove(&capture) else {
                    continue;
                };
                let duration_ms = o.duration_ms();
                if !keep || duration_ms < super::MIN_MESSAGE_MS {
                    drop(o.file);
                    if let Err(e) = std::fs::remove_file(&o.part) {
                        tracing::warn!(file = %o.part.display(), error = %e, "dropped message not removed");
                    }
                    let _ = outcomes.send(Outcome::Dropped {
                        capture,
                        duration_ms,
                    });
                    continue;
                }
                let name = o.name.clone();
                let result = o.finish(dir).and_then(|path| {
                    let (sha256, size) = crate::sync::files::file_sha256(&path)?;
                    Ok(Written {
                        capture,
                        file: name,
                        duration_ms,
                        size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
                        sha256,
                    })
                });
                match result {
                    Ok(w) => {
                        let _ = outcomes.send(Outcome::Written(w));
                    }
                    Err(e) => failed(capture, e),
                }
            }
        }
    }
    // Every handle is gone (shutdown): finish what is open; start-up registers it.
    for (capture, o) in open {
        if let Err(e) = o.finish(dir) {
            tracing::error!(capture, error = %e, "voicemail message not finished at shutdown");
        }
    }
}

/// What [`recover`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Files registered (repaired `.part` files and finished files without a row).
    pub registered: Vec<String>,
    /// Files moved to `quarantine/` (not this layout, or an unknown mailbox).
    pub quarantined: Vec<String>,
    /// Too short to keep: deleted.
    pub dropped: Vec<String>,
    /// Deletions a crash cut, finished (or undone when the row is still there).
    pub tombstones: usize,
}

/// Finishes at start-up what a crash left in the voicemail directory `dir` (before
/// the store writer starts): `.del` tombstones are removed (their row is gone) or put
/// back (the row is still there); `.part` files are repaired (sizes from the file
/// length, a torn last frame cut) and renamed; every message file without a row is
/// registered, marked interrupted (its caller is unknown), if its mailbox exists and
/// it is long enough, else quarantined or deleted. A missing directory is nothing to
/// do.
pub fn recover(store: &mut Store, dir: &Path) -> Result<Recovered, VoicemailError> {
    let mut done = Recovered::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(source) => {
            return Err(VoicemailError::Io {
                path: dir.to_owned(),
                op: "read the directory",
                source,
            })
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let db = store.path().to_owned();
    let registered: std::collections::HashSet<String> =
        store.transact("read voicemail files", |tx, path| {
            Ok(vm_store::messages(tx, path)?
                .into_iter()
                .map(|m| m.file)
                .collect())
        })?;
    let mut wavs = Vec::new();
    for name in names {
        if let Some(file) = name.strip_suffix(TOMBSTONE_SUFFIX) {
            let tomb = dir.join(&name);
            if registered.contains(file) {
                std::fs::rename(&tomb, dir.join(file)).map_err(io_err(&tomb, "restore"))?;
            } else {
                std::fs::remove_file(&tomb).map_err(io_err(&tomb, "remove"))?;
            }
            done.tombstones += 1;
        } else if let Some(file) = name.strip_suffix(PART_SUFFIX) {
            let part = dir.join(&name);
            match repair(&part)? {
                Ok(()) => {
                    let target = dir.join(file);
                    std::fs::rename(&part, &target).map_err(io_err(&part, "rename"))?;
                    wavs.push(file.to_owned());
                }
                Err(reason) => {
                    quarantine(dir, &name, reason)?;
                    done.quarantined.push(name);
                }
            }
        } else if name.ends_with(".wav") && !registered.contains(&name) {
            wavs.push(name);
        }
    }
    sync_dir(dir)?;
    let mailboxes: Vec<String> = store.transact("read mailboxes", |tx, path| {
        Ok(vm_store::mailboxes(tx, path)?
            .into_iter()
            .map(|m| m.number)
            .collect())
    })?;
    for name in wavs {
        let path = dir.join(&name);
        let parsed = super::parse_message_file_name(&name)
            .filter(|(mailbox, _)| mailboxes.contains(mailbox));
        let Some((mailbox, received_at_ms)) = parsed else {
            quarantine(dir, &name, "not a message of a known mailbox")?;
            done.quarantined.push(name);
            continue;
        };
        let len = std::fs::metadata(&path)
            .map_err(io_err(&path, "stat"))?
            .len();
        let duration_ms =
            i64::try_from(len.saturating_sub(HEADER_LEN) * 1000 / 16_000).unwrap_or(i64::MAX);
        if duration_ms < super::MIN_MESSAGE_MS {
            std::fs::remove_file(&path).map_err(io_err(&path, "remove"))?;
            done.dropped.push(name);
            continue;
        }
        let (sha256, size) = crate::sync::files::file_sha256(&path)?;
        let message = NewMessage {
            mailbox,
            call_id: String::new(),
            caller_number: String::new(),
            caller_name: String::new(),
            received_at_ms,
            duration_ms,
            file: name.clone(),
            size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
            sha256,
            interrupted: true,
        };
        let stored = store.transact("register recovered voicemail", |tx, path| {
            vm_store::insert_message(tx, path, &message)
        });
        match stored {
            Ok(_) => done.registered.push(name),
            // A full mailbox: the file is kept aside, not lost.
            Err(crate::error::Error::Invalid { problems, .. }) => {
                tracing::warn!(file = name, db = %db.display(), ?problems, "recovered voicemail not registered");
                quarantine(dir, &name, "could not be registered")?;
                done.quarantined.push(name);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// Repairs a `.part` message file in place: `Ok(Err(reason))` when it is not one.
fn repair(part: &Path) -> Result<Result<(), &'static str>, VoicemailError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(part)
        .map_err(io_err(part, "open"))?;
    let len = file.metadata().map_err(io_err(part, "stat"))?.len();
    let mut head = vec![0u8; usize::try_from(len.min(HEADER_LEN)).unwrap_or(0)];
    file.read_exact_at(&mut head, 0)
        .map_err(io_err(part, "read the header"))?;
    match wav::inspect_for(CHANNELS, &head, len) {
        Verdict::Intact { .. } => Ok(Ok(())),
        Verdict::Repair {
            keep_len, header, ..
        } => {
            file.set_len(keep_len).map_err(io_err(part, "truncate"))?;
            file.write_all_at(&header, 0)
                .map_err(io_err(part, "write the header"))?;
            file.sync_all().map_err(io_err(part, "sync"))?;
            tracing::warn!(file = %part.display(), keep_len, "voicemail message cut by a crash repaired");
            Ok(Ok(()))
        }
        Verdict::Quarantine { reason } => Ok(Err(reason)),
    }
}

fn quarantine(dir: &Path, name: &str, reason: &str) -> Result<(), VoicemailError> {
    let qdir = dir.join(QUARANTINE_DIR);
    std::fs::create_dir_all(&qdir).map_err(io_err(&qdir, "create"))?;
    let from = dir.join(name);
    std::fs::rename(&from, qdir.join(name)).map_err(io_err(&from, "quarantine"))?;
    tracing::warn!(file = %from.display(), reason, "voicemail file quarantined");
    Ok(())
}
