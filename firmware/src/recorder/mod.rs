//! Call recording: stereo 16-bit PCM WAV files at 8 kHz (caller left, agent/box side
//! right) written crash-safely, indexed in the store so they sync to HQ, repaired at
//! start-up after a crash, kept off a full disk and deleted by retention.
//!
//! ```text
//!  board loop ──start/stop (Recorder)──────┐
//!  board loop ──port frames (Tap)──────────┤ one channel ──▶ writer thread ──▶ rec-*.wav.part
//!  media engine ──frames to ports (Tap)────┤  (frames and   │  RTP decoded    header sizes every 1 s,
//!  media engine ──relayed RTP (RtpTap)─────┘  packets bounded: (rtp), mixed   fdatasync every 2 s
//!                                              full = dropped,     │
//!                                              counted)            ▼
//!                         Finished (sha256, size) ──▶ register_task ──▶ recordings + outbox rows
//!  start-up: recover() ── *.wav.part repaired (or quarantined) ──▶ registered, interrupted
//! ```
//!
//! - What is recorded: the board loop decides through [`calls::CallRecorder`] by the
//!   policies of the extensions (analog and SIP phones), the queue and the agent of a
//!   call (`always`, or `on_demand` with the toggle code; the most demanding wins, see
//!   [`calls`]). A recording is keyed ([`Key`]) on the caller's port for port-to-port
//!   calls (left = what the caller's port sends, right = what the callee's port sends),
//!   on the analog port for analog <-> SIP calls (left/right = the port's two
//!   directions, the caller's on the left), and on the caller's SIP leg for calls
//!   between two SIP legs - SIP phone <-> trunk, SIP phone <-> SIP phone (left = the
//!   RTP the caller's leg receives, right = the callee's, see [`rtp`]). It ends with
//!   the call's CDR, whose call id it is registered under; an on-demand recording may
//!   be paused and resumed on the way ([`Recorder::pause`]).
//! - Real time: taps only check a flag and hand the 20 ms frame (or, from the media
//!   engine's relay, the RTP packet of a recorded leg: [`crate::media_engine::RtpTap`])
//!   over a channel; frames and packets beyond [`FRAME_QUEUE`] in flight are dropped
//!   and counted ([`RecorderStats`]), never waited for. Decoding (the line controller's
//!   G.711 tables; for RTP the leg's negotiated payload type, with re-framing to 20 ms
//!   and gaps filled from the RTP timestamps), mixing, writing and fsync happen on the
//!   writer thread.
//! - Crash safety: a recording is written as `rec-<start ms>-p<port>.wav.part`
//!   (`rec-<start ms>-l<leg>.wav.part` for two SIP legs; layout in [`wav`]), the same
//!   for every kind of call; the header's sizes are rewritten after each second of audio and the
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
//! Limits: conference rooms (supervisor listen/whisper/barge, meet-me) are not recorded
//! as such (a supervised two-party call is recorded as before the supervisor joined,
//! while its bridge lasts); a recording cut by a crash carries its own name as call id
//! because no CDR is written for a call cut by a crash (the row has `port`, none for two
//! SIP legs, and `started_at_ms` to find the call); a relayed leg's reordered packet is
//! lost (no jitter buffer on the recorder's side; its place is silence); the
//! `interrupted` flag and layout are in the box's store, not in the wire `RecordingMeta`
//! HQ receives; the stats are counters for the health page, not yet shown on it.

pub mod calls;
pub mod guard;
pub mod index;
pub mod rtp;
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
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use line_proto::Audio;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::call::LegId;
use crate::media_engine::{RtpTap, TappedRtp};
use crate::store::{system_clock_ms, Store, StoreWriter};
use crate::sync::files::file_sha256;

use self::guard::{decide, Decision, FreeSpace};
use self::index::Finished;
use self::rtp::{LegCodec, LegPacket, RtpStream};
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

/// Where one channel's audio comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// One direction of an analog port (20 ms frames from the board loop or the media
    /// engine's port sink).
    Port {
        /// The port.
        port: u8,
        /// The direction.
        side: Side,
    },
    /// What a SIP leg's party says: the RTP the media engine receives on the leg
    /// (decoded on the writer thread, see [`rtp`]).
    Leg(LegId),
}

impl Source {
    /// The port's slot in the taps' flags (ports only).
    fn flag(self) -> Option<usize> {
        match self {
            Source::Port { port, side } => {
                Some(usize::from(port) * 2 + usize::from(side == Side::ToPort))
            }
            Source::Leg(_) => None,
        }
    }

    fn port(self) -> Option<u8> {
        match self {
            Source::Port { port, .. } => Some(port),
            Source::Leg(_) => None,
        }
    }
}

/// What a recording is keyed on: the caller's analog port (or the one analog port of
/// a call with a SIP leg), or, for a call between two SIP legs, the caller's leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// An analog port.
    Port(u8),
    /// The caller's SIP leg of a SIP-to-SIP call.
    Leg(LegId),
}

impl From<u8> for Key {
    fn from(port: u8) -> Self {
        Key::Port(port)
    }
}

impl Key {
    /// The analog port, for a port key.
    pub fn port(self) -> Option<u8> {
        match self {
            Key::Port(p) => Some(p),
            Key::Leg(_) => None,
        }
    }
}

impl std::fmt::Display for Key {
    /// As in file names: `p<port>` or `l<leg>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Port(p) => write!(f, "p{p}"),
            Key::Leg(l) => write!(f, "l{}", l.0),
        }
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
            left: Source::Port {
                port: caller,
                side: Side::FromPort,
            },
            right: Source::Port {
                port: callee,
                side: Side::FromPort,
            },
        }
    }

    /// SIP leg `caller` to SIP leg `callee`: what each leg receives (its party's voice).
    pub fn legs(caller: LegId, callee: LegId) -> Self {
        Self {
            left: Source::Leg(caller),
            right: Source::Leg(callee),
        }
    }

    fn sources(self) -> [Source; 2] {
        [self.left, self.right]
    }

    /// Analog `port` talking to a SIP leg; `port_is_caller` puts the port's voice left.
    pub fn port_and_leg(port: u8, port_is_caller: bool) -> Self {
        let from = Source::Port {
            port,
            side: Side::FromPort,
        };
        let to = Source::Port {
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
    rtp_bad_payload: AtomicU64,
    rtp_late: AtomicU64,
    rtp_resync: AtomicU64,
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
    /// Relayed RTP packets of a recorded leg with a payload type that is neither the
    /// leg's audio nor telephone-event nor comfort noise: dropped.
    pub rtp_bad_payload: u64,
    /// Relayed RTP packets older than the recorded stream's position (late, reordered,
    /// duplicated): dropped.
    pub rtp_late: u64,
    /// Recorded RTP streams started over (new SSRC, timestamp jump).
    pub rtp_resync: u64,
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
            rtp_bad_payload: g(&self.rtp_bad_payload),
            rtp_late: g(&self.rtp_late),
            rtp_resync: g(&self.rtp_resync),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug)]
enum Msg {
    Start {
        key: Key,
        layout: Layout,
        started_at_ms: i64,
    },
    Frame {
        source: Source,
        audio: Audio,
    },
    Rtp {
        leg: LegId,
        packet: LegPacket,
    },
    /// A paused recording resumes: its legs' streams start over (no silence for the
    /// pause).
    Resume {
        key: Key,
    },
    Stop {
        key: Key,
        call_id: Option<String>,
    },
}

/// State shared by the taps and the writer.
#[derive(Debug)]
struct Shared {
    /// Per (port, side): some recording wants these frames.
    wanted: Vec<AtomicBool>,
    /// Per SIP leg: some recording wants its RTP. The media engine holds each open
    /// leg's flag ([`RtpTap::leg_flag`]) and checks it per packet; the map is only
    /// locked when a recording starts, pauses or stops and when a leg opens or closes.
    legs: Mutex<HashMap<LegId, Arc<AtomicBool>>>,
    /// Frames sent and not yet taken by the writer.
    in_flight: AtomicUsize,
    stats: RecorderStats,
}

impl Shared {
    fn new() -> Self {
        Shared {
            wanted: (0..512).map(|_| AtomicBool::new(false)).collect(),
            legs: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            stats: RecorderStats::default(),
        }
    }

    fn legs(&self) -> std::sync::MutexGuard<'_, HashMap<LegId, Arc<AtomicBool>>> {
        // Plain flags: a panic elsewhere cannot leave them inconsistent.
        self.legs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets whether `source` is wanted. A leg's flag is made when first wanted (the
    /// engine may open the leg later and then takes this one).
    fn set_wanted(&self, source: Source, on: bool) {
        match source {
            Source::Port { .. } => {
                if let Some(i) = source.flag() {
                    self.wanted[i].store(on, Ordering::Relaxed);
                }
            }
            Source::Leg(leg) => {
                let mut legs = self.legs();
                if on {
                    legs.entry(leg)
                        .or_insert_with(|| Arc::new(AtomicBool::new(false)))
                        .store(true, Ordering::Relaxed);
                } else if let Some(flag) = legs.get(&leg) {
                    flag.store(false, Ordering::Relaxed);
                    if Arc::strong_count(flag) == 1 {
                        // The engine closed the leg: nobody will ask again.
                        legs.remove(&leg);
                    }
                }
            }
        }
    }

    /// Takes a frame or packet into the queue's budget; false (counted) when full.
    fn admit(&self) -> bool {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= FRAME_QUEUE {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            bump(&self.stats.dropped_frames);
            return false;
        }
        true
    }
}

/// Where frames are handed to the recorder (the board loop for frames from ports, the
/// media engine for frames to ports and, as an [`RtpTap`], the RTP of relayed SIP
/// legs); cheap to clone, never blocks.
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
        let source = Source::Port { port, side };
        let wanted = source
            .flag()
            .is_some_and(|i| self.shared.wanted[i].load(Ordering::Relaxed));
        if !wanted || !self.shared.admit() {
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

impl RtpTap for Tap {
    fn leg_flag(&self, leg: LegId) -> Arc<AtomicBool> {
        Arc::clone(
            self.shared
                .legs()
                .entry(leg)
                .or_insert_with(|| Arc::new(AtomicBool::new(false))),
        )
    }

    fn rtp(&self, leg: LegId, p: &TappedRtp<'_>) {
        if !self.shared.admit() {
            return;
        }
        let packet = LegPacket {
            codec: LegCodec {
                audio_pt: p.audio_pt,
                law: p.law,
                event_pt: p.event_pt,
            },
            ssrc: p.ssrc,
            timestamp: p.timestamp,
            payload_type: p.payload_type,
            payload: p.payload.to_vec(),
        };
        if self.tx.send(Msg::Rtp { leg, packet }).is_err() {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn leg_closed(&self, leg: LegId) {
        let mut legs = self.shared.legs();
        // A recording that still wants the leg keeps the flag (it is dropped when the
        // recording stops).
        if legs.get(&leg).is_some_and(|f| !f.load(Ordering::Relaxed)) {
            legs.remove(&leg);
        }
    }
}

/// The board loop's handle: starts and stops recordings. Not shared (it remembers which
/// ports and legs it recorded); the writer thread ends when it and every [`Tap`] are
/// dropped.
#[derive(Debug)]
pub struct Recorder {
    tap: Tap,
    active: HashMap<Key, Layout>,
    paused: std::collections::HashSet<Key>,
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
        let shared = Arc::new(Shared::new());
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

    /// A tap for frames (and, for the media engine, relayed RTP).
    pub fn tap(&self) -> Tap {
        self.tap.clone()
    }

    /// The counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.tap.shared.stats.snapshot()
    }

    /// Whether a recording keyed on `key` was started and not stopped here.
    pub fn is_recording(&self, key: impl Into<Key>) -> bool {
        self.active.contains_key(&key.into())
    }

    /// Whether a running recording takes audio from `port`.
    pub fn records_port(&self, port: u8) -> bool {
        self.key_of(port).is_some()
    }

    /// Whether a running recording takes audio from SIP `leg`.
    pub fn records_leg(&self, leg: LegId) -> bool {
        self.key_of_leg(leg).is_some()
    }

    /// Starts recording keyed on `key` (a no-op if one runs). The writer may still
    /// refuse it (disk guard).
    pub fn start(&mut self, key: impl Into<Key>, layout: Layout) {
        let key = key.into();
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
            for s in layout.sources() {
                self.tap.shared.set_wanted(s, true);
            }
        }
    }

    /// The key of the running recording that takes audio from `port`, if any.
    pub fn key_of(&self, port: u8) -> Option<Key> {
        self.active
            .iter()
            .find(|(_, l)| l.sources().iter().any(|s| s.port() == Some(port)))
            .map(|(&k, _)| k)
    }

    /// The key of the running recording that takes audio from SIP `leg`, if any.
    pub fn key_of_leg(&self, leg: LegId) -> Option<Key> {
        self.active
            .iter()
            .find(|(_, l)| l.sources().contains(&Source::Leg(leg)))
            .map(|(&k, _)| k)
    }

    /// Whether the recording keyed on `key` is paused ([`Recorder::pause`]).
    pub fn is_paused(&self, key: impl Into<Key>) -> bool {
        self.paused.contains(&key.into())
    }

    /// Pauses the recording keyed on `key`: its file stays open and takes no audio until
    /// [`Recorder::resume`]; [`Recorder::stop`] still finishes it.
    pub fn pause(&mut self, key: impl Into<Key>) {
        let key = key.into();
        if self.active.contains_key(&key) && self.paused.insert(key) {
            self.rewant();
        }
    }

    /// Resumes a paused recording.
    pub fn resume(&mut self, key: impl Into<Key>) {
        let key = key.into();
        if self.paused.remove(&key) {
            // Relayed legs start over: the pause leaves no silence behind, as for ports.
            let _ = self.tap.tx.send(Msg::Resume { key });
            self.rewant();
        }
    }

    /// Sets the taps' flags from the running, unpaused recordings.
    fn rewant(&self) {
        let mut want = std::collections::HashSet::new();
        for (key, l) in &self.active {
            if !self.paused.contains(key) {
                want.extend(l.sources());
            }
        }
        for l in self.active.values() {
            for s in l.sources() {
                self.tap.shared.set_wanted(s, want.contains(&s));
            }
        }
    }

    /// Ends the recording keyed on `key`, registered under `call_id` (the CDR's).
    pub fn stop(&mut self, key: impl Into<Key>, call_id: Option<String>) {
        let key = key.into();
        let Some(layout) = self.active.remove(&key) else {
            return;
        };
        self.paused.remove(&key);
        for s in layout.sources() {
            let still = self
                .active
                .iter()
                .any(|(k, l)| !self.paused.contains(k) && l.sources().contains(&s));
            if !still {
                self.tap.shared.set_wanted(s, false);
            }
        }
        let _ = self.tap.tx.send(Msg::Stop { key, call_id });
    }
}

/// Two channels of 20 ms frames in, interleaved stereo bytes out; a channel more than
/// [`MAX_SKEW_FRAMES`] ahead is paired with silence. Silence padded in for a channel
/// that way is remembered ("owed"): when that channel's own fill for the same gap comes
/// later (a relayed RTP stream's timestamps show what was missing, see [`rtp`]), that
/// many fill frames are skipped, so the two channels stay aligned in time.
#[derive(Debug, Default)]
struct Mixer {
    left: VecDeque<[i16; FRAME_SAMPLES]>,
    right: VecDeque<[i16; FRAME_SAMPLES]>,
    /// Frames of silence already written for each channel while the other ran ahead.
    owed_left: usize,
    owed_right: usize,
}

const SILENCE: [i16; FRAME_SAMPLES] = [0; FRAME_SAMPLES];

impl Mixer {
    /// A frame for one channel: audio, or `None` for a frame of fill (silence standing
    /// for a gap).
    fn push(&mut self, left: bool, pcm: Option<[i16; FRAME_SAMPLES]>, out: &mut Vec<u8>) {
        let (queue, owed) = if left {
            (&mut self.left, &mut self.owed_left)
        } else {
            (&mut self.right, &mut self.owed_right)
        };
        match pcm {
            None if *owed > 0 => {
                *owed -= 1;
                return;
            }
            None => queue.push_back(SILENCE),
            Some(pcm) => {
                // Audio after padding: the time padded is gone (the source was late,
                // not missing); it is not taken back from real audio.
                *owed = 0;
                queue.push_back(pcm);
            }
        }
        while let (Some(l), Some(r)) = (self.left.front(), self.right.front()) {
            wav::interleave(l, r, out);
            self.left.pop_front();
            self.right.pop_front();
        }
        while self.left.len() > MAX_SKEW_FRAMES {
            if let Some(l) = self.left.pop_front() {
                wav::interleave(&l, &SILENCE, out);
                self.owed_right += 1;
            }
        }
        while self.right.len() > MAX_SKEW_FRAMES {
            if let Some(r) = self.right.pop_front() {
                wav::interleave(&SILENCE, &r, out);
                self.owed_left += 1;
            }
        }
    }

    /// Forgets what was owed (a paused recording resumes).
    fn rebase(&mut self) {
        self.owed_left = 0;
        self.owed_right = 0;
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
    key: Key,
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
    active: HashMap<Key, Active>,
    /// Which recording each source feeds, and on which channel (true: left).
    routes: HashMap<Source, Vec<(Key, bool)>>,
    /// The RTP of each recorded SIP leg, on its way to frames.
    streams: HashMap<LegId, RtpStream>,
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
            streams: HashMap::new(),
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
        let keys: Vec<Key> = self.active.keys().copied().collect();
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
                let mut pcm = [0i16; FRAME_SAMPLES];
                audio.law.decode_block(&audio.samples, &mut pcm);
                self.frame(source, Some(pcm), now);
            }
            Msg::Rtp { leg, packet } => {
                self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                self.rtp(leg, &packet, now);
            }
            Msg::Resume { key } => {
                if let Some(a) = self.active.get_mut(&key) {
                    a.mixer.rebase();
                    for s in a.layout.sources() {
                        if let Source::Leg(leg) = s {
                            if let Some(stream) = self.streams.get_mut(&leg) {
                                stream.reset();
                            }
                        }
                    }
                }
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

    fn start(&mut self, key: Key, layout: Layout, started_at_ms: i64, now: Instant) {
        if self.active.contains_key(&key) {
            return;
        }
        if let Decision::Refuse { available, reserve } =
            decide(self.free_space(), self.reserve, true)
        {
            bump(&self.shared.stats.refused_low_disk);
            tracing::warn!(
                key = %key,
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
                tracing::error!(key = %key, error = %e, "recording not started");
                self.unwant(layout);
                return;
            }
        };
        bump(&self.shared.stats.started);
        tracing::info!(key = %key, file = %part.display(), "recording started");
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
                key,
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

    /// Creates `rec-<ms>-<key>.wav.part` (`p<port>` or `l<leg>`; another suffix if
    /// taken) with an empty header, fsynced with its directory entry.
    fn create(&self, key: Key, started_at_ms: i64) -> Result<(PathBuf, File), RecorderError> {
        for n in 0..100u32 {
            let stem = if n == 0 {
                format!("rec-{started_at_ms}-{key}")
            } else {
                format!("rec-{started_at_ms}-{key}-{n}")
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

    /// A relayed RTP packet of `leg`: decoded and re-framed by the leg's stream, each
    /// frame (or fill) then goes where the leg's audio goes.
    fn rtp(&mut self, leg: LegId, packet: &LegPacket, now: Instant) {
        if !self.routes.contains_key(&Source::Leg(leg)) {
            return;
        }
        let mut out = Vec::new();
        self.streams
            .entry(leg)
            .or_default()
            .push(packet, &self.shared.stats, &mut out);
        for pcm in out {
            self.frame(Source::Leg(leg), pcm, now);
        }
    }

    /// One frame of `source` (`None`: a frame of fill) for every recording it feeds.
    fn frame(&mut self, source: Source, pcm: Option<[i16; FRAME_SAMPLES]>, now: Instant) {
        let Some(targets) = self.routes.get(&source) else {
            return;
        };
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
        let keys: Vec<Key> = self.active.keys().copied().collect();
        for key in keys {
            self.flush(key, now);
        }
    }

    /// Writes `key`'s buffer and header; checks the disk guard; ends the recording on
    /// a write error or a full disk.
    fn flush(&mut self, key: Key, now: Instant) {
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        if let Err(e) = a.flush(now, false) {
            bump(&self.shared.stats.write_errors);
            tracing::error!(key = %key, file = %a.part.display(), error = %e, "recording write failed; stopped");
            self.finish(key, None, now);
            return;
        }
        if let Decision::Refuse { available, reserve } =
            decide(self.free_space(), self.reserve, false)
        {
            bump(&self.shared.stats.stopped_low_disk);
            tracing::warn!(
                key = %key,
                available_mb = available >> 20,
                reserve_mb = reserve >> 20,
                "recording stopped: the disk is nearly full"
            );
            self.finish(key, None, now);
        }
    }

    fn unwant(&mut self, layout: Layout) {
        for s in layout.sources() {
            if !self.routes.contains_key(&s) {
                self.shared.set_wanted(s, false);
                if let Source::Leg(leg) = s {
                    self.streams.remove(&leg);
                }
            }
        }
    }

    /// Finishes `key`: the rest of the audio, the final header, fsync, rename to
    /// `.wav`, hash; hands it to the registrar.
    fn finish(&mut self, key: Key, call_id: Option<String>, now: Instant) {
        // What the legs' streams hold behind a gap goes in first.
        let legs: Vec<LegId> = self
            .active
            .get(&key)
            .map(|a| {
                a.layout
                    .sources()
                    .into_iter()
                    .filter_map(|s| match s {
                        Source::Leg(leg) => Some(leg),
                        Source::Port { .. } => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        for leg in legs {
            let mut out = Vec::new();
            if let Some(stream) = self.streams.get_mut(&leg) {
                stream.finish(&mut out);
            }
            for pcm in out {
                self.frame(Source::Leg(leg), pcm, now);
            }
        }
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
            tracing::error!(key = %key, error = %e, "recording not finished; start-up will repair it");
            return;
        }
        let path = final_name(&a.part);
        if let Err(e) = std::fs::rename(&a.part, &path) {
            bump(&self.shared.stats.write_errors);
            tracing::error!(key = %key, file = %a.part.display(), error = %e, "recording not renamed; start-up will repair it");
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
        tracing::info!(key = %key, call_id, file = %path.display(), seconds = a.data_len / u64::from(wav::BYTE_RATE), "recording finished");
        let rec = Finished {
            path,
            call_id,
            started_at_ms: a.started_at_ms,
            data_len: a.data_len,
            port: a.key.port(),
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
///
/// `cut_calls` maps a recording's key as in its file name (`p1`, `l3`) to the call it
/// recorded when the box stopped, as the journal of live calls knew it
/// ([`crate::store::RecoveredCalls::recordings`]): a `.part` file of that key is
/// registered under that call's id, next to the call's interrupted CDR. Other cut
/// files (a recording started by the toggle code after the journal's last write) are
/// registered under their file stem.
pub fn recover(
    store: &mut Store,
    dir: &Path,
    cut_calls: &std::collections::BTreeMap<String, String>,
) -> Result<Recovered, RecorderError> {
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
                let call_id = if part {
                    key_of_name(&stem(&path)).and_then(|k| cut_calls.get(k).cloned())
                } else {
                    None
                };
                match register_recovered(store, &path, data_len, call_id) {
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

fn register_recovered(
    store: &mut Store,
    path: &Path,
    data_len: u64,
    call_id: Option<String>,
) -> Result<(), RecorderError> {
    let (sha256, size) = file_sha256(path)?;
    let name = stem(path);
    let (started_at_ms, port) = parse_name(&name);
    let rec = Finished {
        path: path.to_owned(),
        call_id: call_id.unwrap_or(name),
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

/// The recording key in a recording's file stem (`p1` of `rec-<ms>-p1[-n]`).
fn key_of_name(stem: &str) -> Option<&str> {
    stem.strip_prefix("rec-")?.split('-').nth(1)
}

/// The start time and analog port in a recording's file stem: `rec-<ms>-p<port>[-n]`
/// (a port's recording), `rec-<ms>-l<leg>[-n]` (two SIP legs: no port). What does not
/// parse reads as 0 / no port.
fn parse_name(stem: &str) -> (i64, Option<u8>) {
    let mut parts = stem.trim_start_matches("rec-").split('-');
    let started_at_ms = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let port = parts
        .next()
        .and_then(|p| p.strip_prefix('p'))
        .and_then(|p| p.parse().ok());
    (started_at_ms, port)
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
