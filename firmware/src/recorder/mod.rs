//! Call recording: stereo 16-bit PCM WAV files at 8 kHz (caller left, agent/box side
//! right) written crash-safely, indexed in the store so they sync to HQ, repaired at
//! start-up after a crash, kept off a full disk and deleted by retention.
//!
//! ```text
//!  board loop ──start/stop (Recorder)──────┐
//!  board loop ──port frames (Tap)──────────┤ one channel ──▶ writer thread ──▶ rec-*.wav.part
//!  media engine ──frames to ports (Tap)────┘  (frames bounded:     │   header sizes every 1 s,
//!                                              full = dropped,     │   fdatasync every 2 s
//!                                              counted)            ▼
//!                         Finished (sha256, size) ──▶ register_task ──▶ recordings + outbox rows
//!  start-up: recover() ── *.wav.part repaired (or quarantined) ──▶ registered, interrupted
//! ```
//!
//! - What is recorded: the board loop decides through [`calls::CallRecorder`] by the
//!   policies of the extensions (analog and SIP phones), the queue and the agent of a
//!   call (`always`, or `on_demand` with the toggle code; the most demanding wins, see
//!   [`calls`]). A recording is keyed on one analog port: the caller's port for
//!   port-to-port calls (left = what the caller's port sends, right = what the callee's
//!   port sends), the analog port for analog <-> SIP calls (left/right = the port's two
//!   directions, the caller's on the left). It ends with the call's CDR, whose call id
//!   it is registered under; an on-demand recording may be paused and resumed on the
//!   way ([`Recorder::pause`]).
//! - Real time: taps only check a flag and hand the 20 ms frame over a channel; frames
//!   beyond [`FRAME_QUEUE`] in flight are dropped and counted ([`RecorderStats`]), never
//!   waited for. Decoding (the line controller's G.711 tables), mixing, writing and
//!   fsync happen on the writer thread.
//! - Crash safety: a recording is written as `rec-<start ms>-p<port>.wav.part` (layout
//!   in [`wav`]); the header's sizes are rewritten after each second of audio and the
//!   file fdatasync'ed at most [`SYNC_INTERVAL`] apart, so a power cut loses at most
//!   that much. Finished: the header is final, the file fsynced and renamed to `.wav`,
//!   then registered. At start-up [`recover`] repairs every `.part` file (sizes from
//!   the file length, a torn last frame cut), renames and registers it marked
//!   interrupted; files that are not the recorder's WAV go to `quarantine/` with a
//!   logged reason; a finished file whose registration a crash cut is registered then.
//! - Disk guard ([`guard`]): a recording is refused at start and stopped while running
//!   when free space on the recordings filesystem is (or would fall) below
//!   `[recording] min_free_mb`; logged and counted.
//! - Retention: [`index::retention_pass`], run by [`retention_task`].
//!
//! Limits: calls between two SIP legs are not recorded (the media engine relays their
//! RTP without decoding it, and recordings are keyed on analog ports); a recording cut by a crash carries its own name as call id because no
//! CDR is written for a call cut by a crash (the row has `port` and `started_at_ms` to
//! find the call); the `interrupted` flag and layout are in the box's store, not in the
//! wire `RecordingMeta` HQ receives; the stats are counters for the health page, not yet
//! shown on it.

pub mod calls;
pub mod guard;
pub mod index;
pub mod wav;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_calls;

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use line_proto::Audio;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::store::{system_clock_ms, Store, StoreWriter};
use crate::sync::files::file_sha256;

use self::guard::{decide, Decision, FreeSpace};
use self::index::Finished;
use self::wav::{FRAME_BYTES, FRAME_SAMPLES, HEADER_LEN};

/// Frames in flight to the writer at most (32 recordings x 2 directions x 1 s); beyond,
/// taps drop frames and count them.
pub const FRAME_QUEUE: usize = 32 * 2 * 50;
/// How often the header's sizes are brought up to date (as audio, and as wall time for
/// a recording whose frames stopped).
pub const HEADER_INTERVAL: Duration = Duration::from_secs(1);
/// Longest time between two fdatasyncs of a recording with new data.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// How far one channel may run ahead of the other before the late one is filled with
/// silence (frames): a direction that sends nothing still gives a playable file.
pub const MAX_SKEW_FRAMES: usize = 10;
/// Name of the directory (inside the recordings directory) files that are not the
/// recorder's WAV are moved to at start-up.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Suffix of a recording being written.
pub const PART_SUFFIX: &str = ".part";
/// How often retention runs.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Errors of the recorder's file work. Variants carry the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
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
    /// The store refused or failed the registration.
    #[error(transparent)]
    Store(#[from] crate::error::Error),
}

fn io_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> RecorderError + 'a {
    move |source| RecorderError::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

/// Which direction of an analog port a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// From the port: what its phone or line says.
    FromPort,
    /// To the port: what its phone or line hears.
    ToPort,
}

/// One direction of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    /// The port.
    pub port: u8,
    /// The direction.
    pub side: Side,
}

impl Source {
    fn flag(self) -> usize {
        usize::from(self.port) * 2 + usize::from(self.side == Side::ToPort)
    }
}

/// Where a recording's two channels come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The caller's audio.
    pub left: Source,
    /// The agent's (callee's, or the box's) audio.
    pub right: Source,
}

impl Layout {
    /// Port `caller` to port `callee`: each port's own voice.
    pub fn ports(caller: u8, callee: u8) -> Self {
        Self {
            left: Source {
                port: caller,
                side: Side::FromPort,
            },
            right: Source {
                port: callee,
                side: Side::FromPort,
            },
        }
    }

    /// Analog `port` talking to a SIP leg; `port_is_caller` puts the port's voice left.
    pub fn port_and_leg(port: u8, port_is_caller: bool) -> Self {
        let from = Source {
            port,
            side: Side::FromPort,
        };
        let to = Source {
            port,
            side: Side::ToPort,
        };
        if port_is_caller {
            Self {
                left: from,
                right: to,
            }
        } else {
            Self {
                left: to,
                right: from,
            }
        }
    }
}

/// Counters for the health page.
#[derive(Debug, Default)]
pub struct RecorderStats {
    started: AtomicU64,
    finished: AtomicU64,
    refused_low_disk: AtomicU64,
    stopped_low_disk: AtomicU64,
    dropped_frames: AtomicU64,
    write_errors: AtomicU64,
    repaired: AtomicU64,
    quarantined: AtomicU64,
}

/// A copy of [`RecorderStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Recordings started.
    pub started: u64,
    /// Recordings finished (file complete; registration follows).
    pub finished: u64,
    /// Recordings not started because of the disk guard.
    pub refused_low_disk: u64,
    /// Recordings stopped early because of the disk guard.
    pub stopped_low_disk: u64,
    /// Frames dropped because the writer was behind.
    pub dropped_frames: u64,
    /// Recordings ended early by a write error.
    pub write_errors: u64,
    /// Files repaired at start-up.
    pub repaired: u64,
    /// Files moved to quarantine at start-up.
    pub quarantined: u64,
}

impl RecorderStats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            started: g(&self.started),
            finished: g(&self.finished),
            refused_low_disk: g(&self.refused_low_disk),
            stopped_low_disk: g(&self.stopped_low_disk),
            dropped_frames: g(&self.dropped_frames),
            write_errors: g(&self.write_errors),
            repaired: g(&self.repaired),
            quarantined: g(&self.quarantined),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug)]
enum Msg {
    Start {
        key: u8,
        layout: Layout,
        started_at_ms: i64,
    },
    Frame {
        source: Source,
        audio: Audio,
    },
    Stop {
        key: u8,
        call_id: Option<String>,
    },
}

/// State shared by the taps and the writer.
#[derive(Debug)]
struct Shared {
    /// Per (port, side): some recording wants these frames.
    wanted: Vec<AtomicBool>,
    /// Frames sent and not yet taken by the writer.
    in_flight: AtomicUsize,
    stats: RecorderStats,
}

/// Where frames are handed to the recorder (the board loop for frames from ports, the
/// media engine for frames to ports); cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Tap {
    tx: std_mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

impl Tap {
    /// Frames handed over and not yet taken by the writer (at most [`FRAME_QUEUE`]).
    pub fn queued_frames(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// One 20 ms frame of `port` going `side`; ignored unless a recording wants it.
    pub fn frame(&self, port: u8, side: Side, audio: &Audio) {
        let source = Source { port, side };
        if !self.shared.wanted[source.flag()].load(Ordering::Relaxed) {
            return;
        }
        if self.shared.in_flight.fetch_add(1, Ordering::AcqRel) >= FRAME_QUEUE {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            bump(&self.shared.stats.dropped_frames);
            return;
        }
        let msg = Msg::Frame {
            source,
            audio: audio.clone(),
        };
        if self.tx.send(msg).is_err() {
            // The writer is gone (shutdown): nothing to record into.
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The board loop's handle: starts and stops recordings. Not shared (it remembers which
/// ports it recorded); the writer thread ends when it and every [`Tap`] are dropped.
#[derive(Debug)]
pub struct Recorder {
    tap: Tap,
    active: HashMap<u8, Layout>,
    paused: std::collections::HashSet<u8>,
}

impl Recorder {
    /// Starts the writer thread on `dir` with the disk `reserve` (bytes) read from
    /// `free`; finished recordings go to `finished` (for [`register_task`]).
    pub fn spawn(
        dir: PathBuf,
        reserve: u64,
        free: Box<dyn FreeSpace>,
        finished: mpsc::UnboundedSender<Finished>,
    ) -> Result<(Recorder, std::thread::JoinHandle<()>), RecorderError> {
        std::fs::create_dir_all(&dir).map_err(io_err(&dir, "create"))?;
        let shared = Arc::new(Shared {
            wanted: (0..512).map(|_| AtomicBool::new(false)).collect(),
            in_flight: AtomicUsize::new(0),
            stats: RecorderStats::default(),
        });
        let (tx, rx) = std_mpsc::channel();
        let writer = Writer::new(dir.clone(), reserve, free, shared.clone(), finished);
        let thread = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(&dir, "start the recorder thread"))?;
        Ok((
            Recorder {
                tap: Tap { tx, shared },
                active: HashMap::new(),
                paused: Default::default(),
            },
            thread,
        ))
    }

    /// A tap for frames.
    pub fn tap(&self) -> Tap {
        self.tap.clone()
    }

    /// The counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.tap.shared.stats.snapshot()
    }

    /// Whether a recording keyed on `key` was started and not stopped here.
    pub fn is_recording(&self, key: u8) -> bool {
        self.active.contains_key(&key)
    }

    /// Whether a running recording takes audio from `port`.
    pub fn records_port(&self, port: u8) -> bool {
        self.active
            .values()
            .any(|l| l.left.port == port || l.right.port == port)
    }

    /// Starts recording keyed on `key` (a no-op if one runs). The writer may still
    /// refuse it (disk guard).
    pub fn start(&mut self, key: u8, layout: Layout) {
        if self.active.contains_key(&key) {
            return;
        }
        self.active.insert(key, layout);
        let msg = Msg::Start {
            key,
            layout,
            started_at_ms: system_clock_ms(),
        };
        if self.tap.tx.send(msg).is_ok() {
            for s in [layout.left, layout.right] {
                self.tap.shared.wanted[s.flag()].store(true, Ordering::Relaxed);
            }
        }
    }

    /// The key of the running recording that takes audio from `port`, if any.
    pub fn key_of(&self, port: u8) -> Option<u8> {
        self.active
            .iter()
            .find(|(_, l)| l.left.port == port || l.right.port == port)
            .map(|(&k, _)| k)
    }

    /// Whether the recording keyed on `key` is paused ([`Recorder::pause`]).
    pub fn is_paused(&self, key: u8) -> bool {
        self.paused.contains(&key)
    }

    /// Pauses the recording keyed on `key`: its file stays open and takes no audio until
    /// [`Recorder::resume`]; [`Recorder::stop`] still finishes it.
    pub fn pause(&mut self, key: u8) {
        if self.active.contains_key(&key) && self.paused.insert(key) {
            self.rewant();
        }
    }

    /// Resumes a paused recording.
    pub fn resume(&mut self, key: u8) {
        if self.paused.remove(&key) {
            self.rewant();
        }
    }

    /// Sets the taps' flags from the running, unpaused recordings.
    fn rewant(&self) {
        let mut want = std::collections::HashSet::new();
        for (key, l) in &self.active {
            if !self.paused.contains(key) {
                want.insert(l.left.flag());
                want.insert(l.right.flag());
            }
        }
        for l in self.active.values() {
            for s in [l.left, l.right] {
                self.tap.shared.wanted[s.flag()].store(want.contains(&s.flag()), Ordering::Relaxed);
            }
        }
    }

    /// Ends the recording keyed on `key`, registered under `call_id` (the CDR's).
    pub fn stop(&mut self, key: u8, call_id: Option<String>) {
        let Some(layout) = self.active.remove(&key) else {
            return;
        };
        self.paused.remove(&key);
        for s in [layout.left, layout.right] {
            let still = self
                .active
                .iter()
                .any(|(k, l)| !self.paused.contains(k) && (l.left == s || l.right == s));
            if !still {
                self.tap.shared.wanted[s.flag()].store(false, Ordering::Relaxed);
            }
        }
        let _ = self.tap.tx.send(Msg::Stop { key, call_id });
    }
}

/// Two channels of 20 ms frames in, interleaved stereo bytes out; a channel more than
/// [`MAX_SKEW_FRAMES`] ahead is paired with silence.
#[derive(Debug, Default)]
struct Mixer {
    left: VecDeque<[i16; FRAME_SAMPLES]>,
    right: VecDeque<[i16; FRAME_SAMPLES]>,
}

const SILENCE: [i16; FRAME_SAMPLES] = [0; FRAME_SAMPLES];

impl Mixer {
    fn push(&mut self, left: bool, pcm: [i16; FRAME_SAMPLES], out: &mut Vec<u8>) {
        if left {
            self.left.push_back(pcm);
        } else {
            self.right.push_back(pcm);
        }
        while let (Some(l), Some(r)) = (self.left.front(), self.right.front()) {
            wav::interleave(l, r, out);
            self.left.pop_front();
            self.right.pop_front();
        }
        while self.left.len() > MAX_SKEW_FRAMES {
            if let Some(l) = self.left.pop_front() {
                wav::interleave(&l, &SILENCE, out);
            }
        }
        while self.right.len() > MAX_SKEW_FRAMES {
            if let Some(r) = self.right.pop_front() {
                wav::interleave(&SILENCE, &r, out);
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<u8>) {
        while !self.left.is_empty() || !self.right.is_empty() {
            let l = self.left.pop_front().unwrap_or(SILENCE);
            let r = self.right.pop_front().unwrap_or(SILENCE);
            wav::interleave(&l, &r, out);
        }
    }
}

/// One recording being written.
#[derive(Debug)]
struct Active {
    layout: Layout,
    port: u8,
    part: PathBuf,
    file: File,
    started_at_ms: i64,
    /// Audio bytes on disk after the header.
    data_len: u64,
    /// Audio not yet written.
    buf: Vec<u8>,
    mixer: Mixer,
    /// Sizes in the header lag the data.
    header_stale: bool,
    last_header: Instant,
    last_sync: Instant,
    synced: bool,
}

impl Active {
    /// Writes the buffered audio and the header's sizes; fdatasync when due (or
    /// `force`).
    fn flush(&mut self, now: Instant, force_sync: bool) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.file
                .write_all_at(&self.buf, HEADER_LEN + self.data_len)?;
            self.data_len += self.buf.len() as u64;
            self.buf.clear();
            self.header_stale = true;
            self.synced = false;
        }
        if self.header_stale {
            let (riff, data) = wav::size_fields(self.data_len);
            self.file.write_all_at(&riff, wav::RIFF_SIZE_OFFSET)?;
            self.file.write_all_at(&data, wav::DATA_SIZE_OFFSET)?;
            self.header_stale = false;
            self.last_header = now;
        }
        if !self.synced && (force_sync || now.duration_since(self.last_sync) >= SYNC_INTERVAL) {
            self.file.sync_data()?;
            self.synced = true;
            self.last_sync = now;
        }
        Ok(())
    }
}

/// The writer thread's state; driven by [`Writer::handle`] and [`Writer::tick`] so tests
/// can run it without the thread.
struct Writer {
    dir: PathBuf,
    reserve: u64,
    free: Box<dyn FreeSpace>,
    shared: Arc<Shared>,
    finished: mpsc::UnboundedSender<Finished>,
    active: HashMap<u8, Active>,
    /// Which recording each source feeds, and on which channel (true: left).
    routes: HashMap<Source, Vec<(u8, bool)>>,
}

impl Writer {
    fn new(
        dir: PathBuf,
        reserve: u64,
        free: Box<dyn FreeSpace>,
        shared: Arc<Shared>,
        finished: mpsc::UnboundedSender<Finished>,
    ) -> Self {
        Self {
            dir,
            reserve,
            free,
            shared,
            finished,
            active: HashMap::new(),
            routes: HashMap::new(),
        }
    }

    fn run(mut self, rx: std_mpsc::Receiver<Msg>) {
        let mut next_tick = Instant::now() + HEADER_INTERVAL;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(msg) => self.handle(msg, Instant::now()),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + HEADER_INTERVAL;
            }
        }
        let keys: Vec<u8> = self.active.keys().copied().collect();
        for key in keys {
            self.finish(key, None, Instant::now());
        }
    }

    fn handle(&mut self, msg: Msg, now: Instant) {
        match msg {
            Msg::Start {
                key,
                layout,
                started_at_ms,
            } => self.start(key, layout, started_at_ms, now),
            Msg::Frame { source, audio } => {
                self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                self.frame(source, &audio, now);
            }
            Msg::Stop { key, call_id } => self.finish(key, call_id, now),
        }
    }

    fn free_space(&self) -> u64 {
        match self.free.available(&self.dir) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "recordings: free space unknown; treated as full");
                0
            }
        }
    }

    fn start(&mut self, key: u8, layout: Layout, started_at_ms: i64, now: Instant) {
        if self.active.contains_key(&key) {
            return;
        }
        if let Decision::Refuse { available, reserve } =
            decide(self.free_space(), self.reserve, true)
        {
            bump(&self.shared.stats.refused_low_disk);
            tracing::warn!(
                port = key,
                available_mb = available >> 20,
                reserve_mb = reserve >> 20,
                "recording not started: the disk is nearly full"
            );
            self.unwant(layout);
            return;
        }
        let (part, file) = match self.create(key, started_at_ms) {
            Ok(x) => x,
            Err(e) => {
                bump(&self.shared.stats.write_errors);
                tracing::error!(port = key, error = %e, "recording not started");
                self.unwant(layout);
                return;
            }
        };
        bump(&self.shared.stats.started);
        tracing::info!(port = key, file = %part.display(), "recording started");
        self.routes
            .entry(layout.left)
            .or_default()
            .push((key, true));
        self.routes
            .entry(layout.right)
            .or_default()
            .push((key, false));
        self.active.insert(
            key,
            Active {
                layout,
                port: key,
                part,
                file,
                started_at_ms,
                data_len: 0,
                buf: Vec::with_capacity(wav::BYTE_RATE as usize + FRAME_BYTES as usize),
                mixer: Mixer::default(),
                header_stale: false,
                last_header: now,
                last_sync: now,
                synced: true,
            },
        );
    }

    /// Creates `rec-<ms>-p<port>.wav.part` (another suffix if taken) with an empty
    /// header, fsynced with its directory entry.
    fn create(&self, port: u8, started_at_ms: i64) -> Result<(PathBuf, File), RecorderError> {
        for n in 0..100u32 {
            let stem = if n == 0 {
                format!("rec-{started_at_ms}-p{port}")
            } else {
                format!("rec-{started_at_ms}-p{port}-{n}")
            };
            let part = self.dir.join(format!("{stem}.wav{PART_SUFFIX}"));
            if self.dir.join(format!("{stem}.wav")).exists() {
                continue;
            }
            let file = match File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&part)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&part, "create")(e)),
            };
            file.write_all_at(&wav::header(0), 0)
                .and_then(|()| file.sync_all())
                .map_err(io_err(&part, "write the header"))?;
            sync_dir(&self.dir);
            return Ok((part, file));
        }
        Err(RecorderError::Io {
            path: self.dir.clone(),
            op: "find a free recording name",
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        })
    }

    fn frame(&mut self, source: Source, audio: &Audio, now: Instant) {
        let Some(targets) = self.routes.get(&source) else {
            return;
        };
        let mut pcm = [0i16; FRAME_SAMPLES];
        audio.law.decode_block(&audio.samples, &mut pcm);
        let mut due = Vec::new();
        for &(key, left) in targets {
            if let Some(a) = self.active.get_mut(&key) {
                a.mixer.push(left, pcm, &mut a.buf);
                if a.buf.len() >= wav::BYTE_RATE as usize {
                    due.push(key);
                }
            }
        }
        for key in due {
            self.flush(key, now);
        }
    }

    /// Every [`HEADER_INTERVAL`]: writes what is buffered, updates headers, syncs when
    /// due.
    fn tick(&mut self, now: Instant) {
        let keys: Vec<u8> = self.active.keys().copied().collect();
        for key in keys {
            self.flush(key, now);
        }
    }

    /// Writes `key`'s buffer and header; checks the disk guard; ends the recording on
    /// a write error or a full disk.
    fn flush(&mut self, key: u8, now: Instant) {
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        if let Err(e) = a.flush(now, false) {
            bump(&self.shared.stats.write_errors);
            tracing::error!(port = key, file = %a.part.display(), error = %e, "recording write failed; stopped");
            self.finish(key, None, now);
            return;
        }
        if let Decision::Refuse { available, reserve } =
            decide(self.free_space(), self.reserve, false)
        {
            bump(&self.shared.stats.stopped_low_disk);
            tracing::warn!(
                port = key,
                available_mb = available >> 20,
                reserve_mb = reserve >> 20,
                "recording stopped: the disk is nearly full"
            );
            self.finish(key, None, now);
        }
    }

    fn unwant(&self, layout: Layout) {
        for s in [layout.left, layout.right] {
            if !self.routes.contains_key(&s) {
                self.shared.wanted[s.flag()].store(false, Ordering::Relaxed);
            }
        }
    }

    /// Finishes `key`: the rest of the audio, the final header, fsync, rename to
    /// `.wav`, hash; hands it to the registrar.
    fn finish(&mut self, key: u8, call_id: Option<String>, now: Instant) {
        let Some(mut a) = self.active.remove(&key) else {
            return;
        };
        for (s, left) in [(a.layout.left, true), (a.layout.right, false)] {
            if let Some(v) = self.routes.get_mut(&s) {
                v.retain(|&(k, l)| !(k == key && l == left));
                if v.is_empty() {
                    self.routes.remove(&s);
                }
            }
        }
        self.unwant(a.layout);
        a.mixer.drain(&mut a.buf);
        let done = a
            .flush(now, true)
            .and_then(|()| a.file.sync_all())
            .map_err(io_err(&a.part, "finish"));
        if let Err(e) = done {
            bump(&self.shared.stats.write_errors);
            // The .part file stays: start-up repairs and registers what it holds.
            tracing::error!(port = key, error = %e, "recording not finished; start-up will repair it");
            return;
        }
        let path = final_name(&a.part);
        if let Err(e) = std::fs::rename(&a.part, &path) {
            bump(&self.shared.stats.write_errors);
            tracing::error!(port = key, file = %a.part.display(), error = %e, "recording not renamed; start-up will repair it");
            return;
        }
        sync_dir(&self.dir);
        bump(&self.shared.stats.finished);
        let (sha256, size) = match file_sha256(&path) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "recording not hashed; start-up will register it");
                return;
            }
        };
        let call_id = call_id.unwrap_or_else(|| stem(&path));
        tracing::info!(port = key, call_id, file = %path.display(), seconds = a.data_len / u64::from(wav::BYTE_RATE), "recording finished");
        let rec = Finished {
            path,
            call_id,
            started_at_ms: a.started_at_ms,
            data_len: a.data_len,
            port: a.port,
            interrupted: false,
            sha256,
            size,
        };
        if self.finished.send(rec).is_err() {
            tracing::error!("recording registrar gone; start-up will register the file");
        }
    }
}

/// The `.wav` name of a `.wav.part` file.
fn final_name(part: &Path) -> PathBuf {
    let s = part.to_string_lossy();
    PathBuf::from(s.strip_suffix(PART_SUFFIX).unwrap_or(&s).to_owned())
}

/// The file name without `.wav` (the call id of a recording without a CDR).
fn stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(".wav").unwrap_or(&name).to_owned()
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        // Makes a create/rename durable; on failure the file is found by name anyway.
        let _ = d.sync_all();
    }
}

/// Registers finished recordings through the store writer, in order, until the
/// recorder is gone. A registration that fails is logged; the file stays and start-up
/// registers it.
pub async fn register_task(writer: StoreWriter, mut finished: mpsc::UnboundedReceiver<Finished>) {
    while let Some(rec) = finished.recv().await {
        let path = rec.path.clone();
        let call_id = rec.call_id.clone();
        let result = writer
            .transact("register recording", move |tx, db| {
                index::register_tx(tx, db, &rec, system_clock_ms())
            })
            .await;
        match result {
            Ok(r) => tracing::info!(
                call_id,
                id = r.id,
                outbox_seq = r.outbox_seq,
                "recording registered"
            ),
            Err(e) => {
                tracing::error!(call_id, file = %path.display(), error = %e, "recording not registered")
            }
        }
    }
}

/// Deletes recordings past retention every [`RETENTION_INTERVAL`] (first pass at
/// once) until `stop`; `needs_upload`: only those HQ has (see [`index`]).
pub async fn retention_task(
    writer: StoreWriter,
    dir: PathBuf,
    retention: Duration,
    needs_upload: bool,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let d = dir.clone();
        let result = writer
            .transact("recording retention", move |tx, db| {
                index::retention_pass(tx, db, &d, system_clock_ms(), retention, needs_upload)
            })
            .await;
        match result {
            Ok(r) if r.deleted > 0 || r.skipped > 0 => {
                tracing::info!(
                    deleted = r.deleted,
                    skipped = r.skipped,
                    "recording retention"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "recording retention failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETENTION_INTERVAL) => {}
        }
    }
}

/// What [`recover`] did at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Recovered {
    /// `.part` files repaired and registered (interrupted).
    pub repaired: Vec<PathBuf>,
    /// Finished files registered late.
    pub registered_late: Vec<PathBuf>,
    /// Files moved to quarantine, with why.
    pub quarantined: Vec<(PathBuf, String)>,
}

/// Start-up, before the store's writer thread: repairs and registers what a crash left
/// in `dir` (see the module docs). Each file's problem is logged and the file set aside;
/// only an unreadable directory or a store failure is an error.
pub fn recover(store: &mut Store, dir: &Path) -> Result<Recovered, RecorderError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir, "create"))?;
    let mut out = Recovered::default();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir, "list"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    names.sort();
    for path in names {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let part = name.starts_with("rec-") && name.ends_with(".wav.part");
        let done = name.starts_with("rec-") && name.ends_with(".wav");
        if !part && !done {
            continue;
        }
        if done {
            let registered = store.transact("look up recording", |tx, db| {
                index::is_registered(tx, db, &path)
            })?;
            if registered {
                continue;
            }
        }
        match repair_file(&path) {
            Ok(Some(data_len)) => {
                let path = if part {
                    let to = final_name(&path);
                    std::fs::rename(&path, &to).map_err(io_err(&path, "rename"))?;
                    sync_dir(dir);
                    to
                } else {
                    path
                };
                match register_recovered(store, &path, data_len) {
                    Ok(()) if part => {
                        tracing::warn!(file = %path.display(), "recording cut by a crash: repaired and registered as interrupted");
                        out.repaired.push(path);
                    }
                    Ok(()) => {
                        tracing::warn!(file = %path.display(), "finished recording registered at start-up");
                        out.registered_late.push(path);
                    }
                    Err(RecorderError::Store(crate::error::Error::Invalid {
                        problems, ..
                    })) => {
                        let reason = problems
                            .iter()
                            .map(|p| format!("{}: {}", p.field, p.message))
                            .collect::<Vec<_>>()
                            .join("; ");
                        out.quarantined
                            .push((quarantine(dir, &path, &reason)?, reason));
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(None) => {}
            Err(reason) => {
                out.quarantined
                    .push((quarantine(dir, &path, &reason)?, reason));
            }
        }
    }
    Ok(out)
}

/// Repairs `path` in place per [`wav::inspect`]: `Ok(Some(data_len))` once it plays,
/// `Err(reason)` when it is not the recorder's WAV (or cannot be read).
fn repair_file(path: &Path) -> Result<Option<u64>, String> {
    let file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    let mut head = vec![0u8; usize::try_from(len.min(HEADER_LEN)).unwrap_or(0)];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| format!("cannot read the header: {e}"))?;
    match wav::inspect(&head, len) {
        wav::Verdict::Intact { data_len } => Ok(Some(data_len)),
        wav::Verdict::Repair {
            data_len,
            keep_len,
            header,
        } => {
            file.set_len(keep_len)
                .and_then(|()| file.write_all_at(&header, 0))
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot repair: {e}"))?;
            Ok(Some(data_len))
        }
        wav::Verdict::Quarantine { reason } => Err(reason.to_owned()),
    }
}

fn register_recovered(store: &mut Store, path: &Path, data_len: u64) -> Result<(), RecorderError> {
    let (sha256, size) = file_sha256(path)?;
    let name = stem(path);
    // rec-<ms>-p<port>[-n]
    let mut parts = name.trim_start_matches("rec-").split('-');
    let started_at_ms = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let port = parts
        .next()
        .and_then(|p| p.strip_prefix('p'))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let rec = Finished {
        path: path.to_owned(),
        call_id: name,
        started_at_ms,
        data_len,
        port,
        interrupted: true,
        sha256,
        size,
    };
    let now = system_clock_ms();
    store.transact("register recording", |tx, db| {
        index::register_tx(tx, db, &rec, now)
    })?;
    Ok(())
}

/// Moves `path` into `dir/quarantine/` (logged with `reason`); returns the new path.
fn quarantine(dir: &Path, path: &Path, reason: &str) -> Result<PathBuf, RecorderError> {
    let qdir = dir.join(QUARANTINE_DIR);
    std::fs::create_dir_all(&qdir).map_err(io_err(&qdir, "create"))?;
    let name = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
    let mut to = qdir.join(&name);
    let mut n = 1;
    while to.exists() {
        to = qdir.join(format!("{}.{n}", name.to_string_lossy()));
        n += 1;
    }
    std::fs::rename(path, &to).map_err(io_err(path, "move to quarantine"))?;
    sync_dir(dir);
    tracing::error!(file = %path.display(), moved_to = %to.display(), reason, "recording file quarantined: not a recording this box can repair");
    Ok(to)
}
