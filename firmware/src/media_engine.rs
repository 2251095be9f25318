//! The media engine: the daemon's tokio task between analog ports' 20 ms G.711 frames
//! and SIP legs' RTP.
//!
//! ```text
//!  BoardLoop ──port_audio(port, frame)──▶ ┌──────────────┐ ──RTP──▶ SIP peer
//!     ▲                                   │ media engine │ ◀─RTP─── (one UDP port pair
//!     └──PortSink::send_audio (every 20 ms)┤  (one task)  │           per leg)
//!  call control ◀──SipInput::Digit────────┴──────────────┘
//! ```
//!
//! Who calls what:
//! - The SIP endpoint opens a leg's media with [`MediaEngine::open_leg`] (a port pair
//!   from the `[media]` range; the returned address goes into its SDP), gives the
//!   negotiated media with [`MediaEngine::start_leg`] once the offer/answer is done
//!   (again on a re-INVITE that changes the remote address), and ends it with
//!   [`MediaEngine::close_leg`], which returns the leg's quality for logs and CDRs.
//! - The daemon's board loop turns call control's `Output::Connect` /
//!   `Output::Disconnect` over [`MediaEnd`]s into [`MediaEngine::bridge`] /
//!   [`MediaEngine::unbridge`] when a leg is involved (port to port bridges stay in the
//!   board loop), passes every audio frame of a port bridged to a leg to
//!   [`MediaEngine::port_audio`], and passes digits an analog phone presses during such
//!   a bridge to [`MediaEngine::send_digit`].
//!
//! What a bridge does:
//! - Port to leg: each 20 ms frame from the port goes out as RTP in the leg's law
//!   (transcoded µ-law/A-law when the port's law differs), repacketised to the leg's
//!   ptime (10, 20 or 30 ms). RTP from the leg goes into an adaptive jitter buffer
//!   ([`branchline_media::jitter`], `[media] jitter_min_ms..jitter_max_ms`) with PLC;
//!   one tick every 20 ms pops a frame for every port bridged to a leg and sends it in
//!   the board's law through the [`PortSink`].
//! - Leg to leg: packets are relayed without decoding (header and payload unchanged);
//!   only when the two legs negotiated different laws (or different telephone-event
//!   payload types) is the packet rebuilt with the same sequence number, timestamp and
//!   SSRC and a transcoded payload. RTCP is relayed unchanged.
//! - Symmetric RTP: with [`LegMedia::latch`] the leg sends to where its peer's media
//!   comes from (NAT), with the latch rules of [`branchline_media::relay::Latch`]
//!   (foreign sources are dropped). Without it, media goes to the SDP address and is
//!   accepted from any source.
//! - DTMF, SIP to analog: RFC 4733 events received on a leg become
//!   [`SipInput::Digit`] (once per key press, on its start) on the channel given at
//!   construction, and are relayed to a peer leg. A phone (FXS port) bridged to the
//!   leg hears them as DTMF tones ([`branchline_media::dtmf::DtmfPlayer`]: as long as
//!   the event, at least 40 ms, replacing the audio meanwhile); towards a PSTN line
//!   (FXO port, [`MediaSettings::fxo_ports`]) call control dials the digit with the
//!   line controller instead, so the engine plays nothing there.
//! - DTMF, analog to SIP: [`MediaEngine::send_digit`] (a phone's key press from the
//!   line controller) sends a 100 ms event (three end packets); the audio stream
//!   pauses meanwhile and further digits queue. The audio of an FXO port is searched
//!   for in-band DTMF ([`branchline_media::dtmf::InbandDetector`]): a PSTN caller's
//!   digit goes out as an event that lasts as long as the tone, and the audio is muted
//!   from the first block that looks like a digit until its end ("RFC 2833 mode"; at
//!   most part of the tone's first 20 ms frame gets through, too short to be taken
//!   for a digit). When the peer did not negotiate telephone-event the tone stays in
//!   the audio, the only way it can reach the far end. Phones' audio is not searched:
//!   their keys already come as line-controller digits.
//! - RTCP: a leg that ends here (bridged to a port, or to nothing while held or not
//!   yet connected) sends its own reports on the RTCP port: an SR when it sent RTP
//!   since the previous report, else an RR, with a report block about the source it
//!   receives and an SDES CNAME, every 5 s randomised ([`MediaSettings::rtcp_interval`],
//!   [`branchline_media::rtcp::ReportSchedule`]), and a last report with BYE when the
//!   leg closes. The peer's reports about our stream give the RTT (LSR/DLSR) that goes
//!   into the leg's R-factor/MOS ([`LegSnapshot::quality`], [`MediaEngine::close_leg`])
//!   and the loss it sees ([`LegSnapshot::remote_report`]).
//! - Playback: [`MediaEngine::play`] plays a [`crate::prompts::Player`] (prompts,
//!   music on hold, a tone rendered as audio) to an end that is not bridged: one 20 ms
//!   frame per tick to an analog port in the board's law, or as RTP in the leg's law and
//!   ptime to a SIP leg whose media is started (a queued SIP caller gets 183 early
//!   media for it). Bridging the end, closing the leg or `stop_playing` ends it.
//! - Capture: [`MediaEngine::capture`] hands the audio an end that is not bridged
//!   receives to a [`FrameSink`] (a caller leaving a voicemail message), one 20 ms
//!   linear frame at a time: an analog port's frames as the board loop passes them
//!   ([`MediaEngine::port_audio`]: the board loop forwards a captured port's frames
//!   like those of a port bridged to a leg), a SIP leg's RTP decoded through its own
//!   adaptive jitter buffer, popped on the 20 ms tick. The sink must not block (the
//!   voicemail writer's sink hands frames over a bounded channel and drops, counted,
//!   when it is full). Capture and playback are independent: an end may have both.
//!   Bridging the end, closing the leg or [`MediaEngine::stop_capture`] ends it.
//! - Recording ([`RtpTap`], the call recorder's tap given to
//!   [`MediaEngine::start_with_tap`]): each leg holds a flag from the tap while it is
//!   open; for every RTP packet a leg accepts while its flag is set, the engine hands
//!   the packet's header fields, payload and the leg's negotiated codec to the tap
//!   (a flag check and a channel send; decoding happens on the recorder's thread), from
//!   the leg's reader when it relays the bridge itself (see Structure). This is how
//!   calls between two SIP legs, relayed without decoding, are recorded.
//! - Echo test ([`MediaEngine::echo`]): a capture and a playback of the same end
//!   sharing a [`DelayLine`]: the end hears what it sent [`ECHO_DELAY`] later.
//! - Confirmation beep ([`MediaEngine::beep`]): [`BEEP_HZ`] for [`BEEP_DURATION`]
//!   replaces the audio a leg is sent (relayed packets are rebuilt with the same
//!   header; frames from a port are replaced before encoding); the recording toggle
//!   code confirms with it to a SIP phone.
//! - Media inactivity ([`branchline_media::inactivity`]): each leg counts the time since
//!   the last RTP or RTCP packet it accepted. The SIP endpoint says what to watch
//!   ([`MediaEngine::watch_leg`]: answered legs, with the hold timeout while the far end
//!   holds); a watched leg silent for longer than its timeout
//!   ([`MediaSettings::inactivity`], `[media] rtp_timeout_s` / `rtp_hold_timeout_s`) is
//!   reported once to call control as [`SipInput::MediaTimeout`], which ends the call
//!   (BYE on the leg). Checked on the 20 ms tick.
//! - Fax: CED/CNG tone detection on both directions of a port-to-leg bridge switches
//!   the leg's jitter buffer to fixed passthrough (logged).
//! - Conferences ([`MediaEngine::conference`], call control's `Output::Conference`):
//!   ports and legs joined to a room are decoded and mixed every tick by
//!   [`branchline_media::mix::Mixer`] (each hears the members its role lets it hear,
//!   never itself), and each gets its mix in its own law and ptime. Ports in a room get
//!   their frames from here, not from the board loop's port-to-port routes. See
//!   `conference`. Two-party bridges stay the fast path (no decoding for leg to leg).
//!
//! Structure: one engine task owns every leg's state and does everything above; one
//! small reader task per socket receives its datagrams. A leg's receive side (its RTP
//! latch, packet counters, reception statistics, time of the last packet) sits in a
//! small per-leg state behind a mutex (`LegRx`) that its RTP reader and the engine
//! share; the lock is held for a few field updates only, never across an `.await` and
//! never together with another leg's, so it is uncontended in practice.
//! - The fast path: when a leg-to-leg bridge direction is a plain relay (both legs
//!   started, same law and telephone-event payload type, no beep to the receiving
//!   peer), the engine puts a `FastRelay` into the leg's shared state (on bridge,
//!   unbridge, start, beep and its end, close). The leg's RTP reader then receives into
//!   its own buffer and does the whole relay itself: the same checks and bookkeeping
//!   as the engine (`LegRx::accept`: parse, negotiated payload type, latch, counters,
//!   reception statistics, inactivity time), the recorder's tap, and the packet
//!   unchanged on the peer leg's RTP socket to the peer's current target (its latch).
//!   It hands the engine only what needs it: telephone-events (decoded there into
//!   [`SipInput::Digit`]) and audio in the other law (a peer that switched codec
//!   without a re-INVITE, transcoded there). Why: at 500 calls (50,000 packets/s) the
//!   hop through the engine task (a copy into a `Vec`, a queue send, a task wake-up,
//!   a leg lookup) cost most of the engine's CPU, and every relayed packet waited
//!   behind whatever the one engine task was doing, its 20 ms tick included
//!   (BENCHMARKS.md, "Relay of the product path"). The engine reads the shared state
//!   for stats, quality, RTCP reports and the inactivity check on its tick.
//! - Everything else (port bridges, transcoding or beeping leg bridges, conferences,
//!   captures, legs bridged to nothing) goes through the engine: the RTP reader queues
//!   each datagram for the engine task in a bounded queue (dropped and counted when
//!   full, never blocking). RTCP always goes through the engine (a few packets per leg
//!   every 5 s).
//! - Ordering: when a bridge becomes or stops being a fast relay, packets already
//!   queued for the engine may be relayed after one the reader relayed directly (a
//!   reorder of at most the queue's content, at the switch only); a packet a reader is
//!   relaying while the engine unbridges may still reach the old peer.
//!
//! The engine ends when every [`MediaEngine`] handle is dropped; its legs' ports go
//! back to the allocator.
//!
//! Limits: G.711 only; legs bridged to legs relay their endpoints' RTCP unchanged and
//! send none of their own (their quality is computed from RTP alone, without RTT); a
//! phone's key press is dropped (logged) when the peer did not negotiate
//! telephone-event (no in-band tone generation towards SIP); an in-band digit that
//! starts while a key-press event is still being sent on the same leg is dropped;
//! conference members get no fax or in-band DTMF detection; no T.38.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use branchline_board::link::LinkSender;
use branchline_media::dtmf::{DtmfEvent, DtmfPlayer, InbandDetector, TelephoneEvent};
use branchline_media::dtmf::{EventPacket, TelephoneEventDecoder, TelephoneEventEncoder};
use branchline_media::echo::{DelayLine, ECHO_DELAY};
use branchline_media::fax::{passthrough_jitter_config, FaxDetector};
use branchline_media::inactivity::{InactivityConfig, InactivityTimer, Watch};
use branchline_media::jitter::{JitterBuffer, JitterConfig, JitterStats, FRAME_SAMPLES};
use branchline_media::port::{PortAllocator, PortLease, PortPair};
use branchline_media::relay::{Latch, LatchConfig, LatchDecision};
use branchline_media::rtcp::{
    append_bye, build_report, parse_compound, round_trip_time, CallQuality, NtpTime, ReceiverStats,
    ReportBlock, ReportSchedule, RtcpPacket, SenderInfo,
};
use branchline_media::rtp::{
    audio_payload_type, parse, PayloadKind, PayloadMap, Ptime, RtpHeader, RtpPacket, RtpSender,
    CLOCK_RATE, MAX_PACKET,
};
use line_proto::g711::Law;
use line_proto::{Audio, Body};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::call::sip::{LegId, MediaEnd, SipInput};
use crate::call::{ConferenceOp, RoomId};
use crate::prompts::{EchoLine, Player};

/// The RTP port range used when the config has no `[media]` section.
pub const DEFAULT_RTP_PORTS: (u16, u16) = (10000, 10999);
/// The jitter buffer bounds used when the config has no `[media]` section (ms).
pub const DEFAULT_JITTER_MS: (u32, u32) = (20, 200);
/// Frame clock towards the ports.
pub const FRAME_INTERVAL: Duration = Duration::from_millis(20);
/// How long an RFC 4733 digit sent for an analog key press lasts.
pub const DIGIT_DURATION: Duration = Duration::from_millis(100);
/// Volume of the digits sent (-dBm0).
const DIGIT_VOLUME: u8 = 10;
/// Received datagrams queued for the engine at most; beyond, they are dropped.
const PACKET_QUEUE: usize = 2048;
/// Digits queued per leg at most while one is being sent.
const MAX_QUEUED_DIGITS: usize = 32;
/// The confirmation beep ([`MediaEngine::beep`]): frequency, length and level.
pub const BEEP_HZ: f64 = 1400.0;
/// How long the confirmation beep lasts.
pub const BEEP_DURATION: Duration = Duration::from_millis(200);
/// Level of the confirmation beep (dBm0).
const BEEP_DBM0: f64 = -13.0;
/// Samples per 20 ms frame tick (telephone-event updates go out on the frame clock,
/// whatever the audio ptime).
const TICK_SAMPLES: u32 = FRAME_SAMPLES as u32;

/// Errors of the media engine. Variants carry the leg concerned.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// `open_leg` for a leg that is already open.
    #[error("media: leg {leg} is already open")]
    LegExists {
        /// The leg.
        leg: LegId,
    },
    /// The leg is not open.
    #[error("media: leg {leg} is not open")]
    UnknownLeg {
        /// The leg.
        leg: LegId,
    },
    /// The negotiated media is not something this engine can play.
    #[error("media: leg {leg}: {reason}")]
    BadLegMedia {
        /// The leg.
        leg: LegId,
        /// What is wrong.
        reason: &'static str,
    },
    /// No RTP port pair could be bound for the leg.
    #[error("media: no RTP ports for leg {leg}: {source}")]
    Ports {
        /// The leg.
        leg: LegId,
        /// The allocator's error (range exhausted).
        #[source]
        source: branchline_media::Error,
    },
    /// The engine settings are invalid (port range, jitter bounds).
    #[error("media settings: {source}")]
    Settings {
        /// What the media crate refused.
        #[source]
        source: branchline_media::Error,
    },
    /// The engine task is gone (daemon shutting down).
    #[error("media engine has stopped")]
    Stopped,
}

/// Result of the media engine.
pub type Result<T, E = MediaError> = std::result::Result<T, E>;

/// What the engine needs to run (from `[media]` and the board).
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// Local address the RTP sockets bind to (and the SDP announces).
    pub local_ip: IpAddr,
    /// First port of the RTP/RTCP range.
    pub rtp_port_min: u16,
    /// Last port of the range.
    pub rtp_port_max: u16,
    /// Adaptive jitter buffer bounds towards the ports.
    pub jitter: JitterConfig,
    /// The law of the board's audio frames (board profile or country default).
    pub board_law: Law,
    /// Seed of SSRCs and initial sequence numbers/timestamps (random at start-up).
    pub seed: u64,
    /// The board's FXO ports (PSTN lines): their audio is searched for in-band DTMF,
    /// and RFC 4733 digits towards them are left to call control (which dials them
    /// with the line controller); every other port is a phone that hears received
    /// digits as tones.
    pub fxo_ports: RangeInclusive<u8>,
    /// Nominal interval of the RTCP reports of legs that end on a port
    /// ([`branchline_media::rtcp::DEFAULT_REPORT_INTERVAL`], 5 s; shorter in tests).
    pub rtcp_interval: Duration,
    /// Media inactivity timeouts (`[media] rtp_timeout_s`, `rtp_hold_timeout_s`): a
    /// leg watched with [`MediaEngine::watch_leg`] that receives no RTP or RTCP for
    /// that long is reported to call control as [`SipInput::MediaTimeout`].
    pub inactivity: InactivityConfig,
}

/// The media of a leg as negotiated in SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegMedia {
    /// G.711 law of the audio.
    pub law: Law,
    /// Audio payload type (0 for PCMU, 8 for PCMA: must match `law`).
    pub payload_type: u8,
    /// Dynamic payload type of telephone-event (96..=127), if negotiated.
    pub telephone_event_pt: Option<u8>,
    /// Packetisation time: 10, 20 or 30.
    pub ptime_ms: u32,
    /// Symmetric RTP: send to where the peer's media comes from.
    pub latch: bool,
}

/// Where the engine sends audio frames for the analog ports.
pub trait PortSink: Send + Sync + 'static {
    /// Sends one 20 ms frame to `port`. Must not block for long (it runs on the engine
    /// task); a frame that cannot be sent is dropped.
    fn send_audio(&self, port: u8, audio: Audio);
}

impl PortSink for LinkSender {
    fn send_audio(&self, port: u8, audio: Audio) {
        if let Err(e) = self.send(port, Body::Audio(audio)) {
            tracing::debug!(port, error = %e, "audio frame to the line controller not sent");
        }
    }
}

impl PortSink for mpsc::UnboundedSender<(u8, Audio)> {
    fn send_audio(&self, port: u8, audio: Audio) {
        // The receiver gone means nobody listens to ports any more.
        let _ = self.send((port, audio));
    }
}

/// The media of one RTP packet received on a leg, handed to an [`RtpTap`] (borrowed
/// from the receive buffer; the tap copies what it keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TappedRtp<'a> {
    /// The leg's negotiated audio payload type.
    pub audio_pt: u8,
    /// Its law.
    pub law: Law,
    /// The leg's telephone-event payload type, if negotiated.
    pub event_pt: Option<u8>,
    /// The packet's synchronisation source.
    pub ssrc: u32,
    /// The packet's RTP timestamp.
    pub timestamp: u32,
    /// The packet's payload type.
    pub payload_type: u8,
    /// The payload.
    pub payload: &'a [u8],
}

/// Where the engine shows the RTP a leg receives when someone records it (the call
/// recorder, for calls between two SIP legs, which the engine relays without
/// decoding). The engine takes a leg's flag when it opens the leg and, per accepted
/// packet, only checks it and calls [`RtpTap::rtp`], which must not block.
pub trait RtpTap: Send + Sync + 'static {
    /// The flag that says whether `leg`'s packets are wanted (kept while it is open).
    fn leg_flag(&self, leg: LegId) -> Arc<std::sync::atomic::AtomicBool>;
    /// A packet `leg` received and accepted while its flag was set.
    fn rtp(&self, leg: LegId, packet: &TappedRtp<'_>);
    /// `leg` closed (its flag was dropped).
    fn leg_closed(&self, leg: LegId);
}

/// Where [`MediaEngine::capture`] puts the audio an end receives: one 20 ms frame of
/// linear 8 kHz PCM per call, on the engine task. Must not block (hand the frame over
/// a bounded channel and drop it when the channel is full).
pub trait FrameSink: Send + 'static {
    /// One frame.
    fn frame(&mut self, pcm: &[i16; FRAME_SAMPLES]);
}

impl std::fmt::Debug for dyn FrameSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameSink")
    }
}

/// The echo test's capture: frames into the delay line its player reads.
struct EchoSink(EchoLine);

impl FrameSink for EchoSink {
    fn frame(&mut self, pcm: &[i16; FRAME_SAMPLES]) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(pcm);
    }
}

/// An end whose incoming audio goes to a [`FrameSink`].
#[derive(Debug)]
struct Capture {
    sink: Box<dyn FrameSink>,
    /// A leg's own jitter buffer (its RTP is not going to a port); `None` for a port.
    jitter: Option<JitterBuffer>,
}

/// Diagnostics of one leg ([`MediaEngine::stats`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LegSnapshot {
    /// The leg.
    pub leg: LegId,
    /// Local RTP address.
    pub local: SocketAddr,
    /// Where its RTP goes now (latched, else from SDP), once started.
    pub remote: Option<SocketAddr>,
    /// What it is bridged to.
    pub bridged_to: Option<MediaEnd>,
    /// The negotiated media, once started.
    pub media: Option<LegMedia>,
    /// RTP packets accepted.
    pub packets_in: u64,
    /// RTP packets sent.
    pub packets_out: u64,
    /// Malformed packets or unexpected payload types dropped.
    pub invalid: u64,
    /// Packets from foreign addresses dropped by the latch.
    pub foreign: u64,
    /// Packets not sent (no target, socket full) or dropped on a full queue.
    pub dropped: u64,
    /// RTCP packets received.
    pub rtcp_in: u64,
    /// RTCP reports this engine sent for the leg (legs that end on a port).
    pub rtcp_out: u64,
    /// The peer's last reception report about what this leg sends, if any.
    pub remote_report: Option<ReportBlock>,
    /// Loss, jitter and MOS of what the leg receives, once RTP arrived.
    pub quality: Option<CallQuality>,
    /// The jitter buffer towards the bridged port, if any.
    pub jitter_buffer: Option<JitterStats>,
    /// Fax/modem passthrough was switched on.
    pub passthrough: bool,
    /// The RTP it receives is relayed to its peer leg by its own reader task (a plain
    /// leg-to-leg bridge), not by the engine task.
    pub fast_relay: bool,
}

/// Handle on the media engine task; cheap to clone. See the module docs.
#[derive(Debug, Clone)]
pub struct MediaEngine {
    requests: mpsc::UnboundedSender<Request>,
    allocator: PortAllocator,
}

#[derive(Debug)]
enum Request {
    Open {
        leg: LegId,
        pair: PortPair,
        reply: oneshot::Sender<Result<SocketAddr>>,
    },
    Start {
        leg: LegId,
        remote: SocketAddr,
        media: LegMedia,
        reply: oneshot::Sender<Result<()>>,
    },
    Close {
        leg: LegId,
        reply: oneshot::Sender<Option<CallQuality>>,
    },
    Bridge(MediaEnd, MediaEnd),
    Unbridge(MediaEnd, MediaEnd),
    PortAudio(u8, Audio),
    Digit(LegId, char),
    Play(MediaEnd, Player),
    StopPlay(MediaEnd),
    Capture(MediaEnd, Box<dyn FrameSink>),
    StopCapture(MediaEnd),
    Conference(RoomId, ConferenceOp),
    Beep(LegId),
    Watch(LegId, Watch),
    Stats(oneshot::Sender<Vec<LegSnapshot>>),
}

impl MediaEngine {
    /// Starts the engine task: RTP ports from `settings`, frames for the ports to
    /// `ports`, digits received on legs to `sip_inputs` (call control's SIP input).
    /// Must be called inside a tokio runtime. The task ends when every handle is
    /// dropped.
    pub fn start(
        settings: MediaSettings,
        ports: Arc<dyn PortSink>,
        sip_inputs: mpsc::UnboundedSender<SipInput>,
    ) -> Result<(MediaEngine, JoinHandle<()>)> {
        Self::start_with_tap(settings, ports, sip_inputs, None)
    }

    /// [`MediaEngine::start`], with the RTP legs receive shown to `rtp_tap` while it
    /// wants them (call recording of SIP-to-SIP calls).
    pub fn start_with_tap(
        settings: MediaSettings,
        ports: Arc<dyn PortSink>,
        sip_inputs: mpsc::UnboundedSender<SipInput>,
        rtp_tap: Option<Arc<dyn RtpTap>>,
    ) -> Result<(MediaEngine, JoinHandle<()>)> {
        let allocator = PortAllocator::new(
            settings.local_ip,
            settings.rtp_port_min,
            settings.rtp_port_max,
        )
        .map_err(|source| MediaError::Settings { source })?;
        let (requests, request_rx) = mpsc::unbounded_channel();
        let (packet_tx, packet_rx) = mpsc::channel(PACKET_QUEUE);
        let engine = Engine {
            next_seed: settings.seed,
            cname: format!("branchd@{}", settings.local_ip),
            settings,
            ports,
            rtp_tap,
            sip_inputs,
            packet_tx,
            legs: HashMap::new(),
            port_links: HashMap::new(),
            peers: HashMap::new(),
            players: HashMap::new(),
            captures: HashMap::new(),
            rooms: HashMap::new(),
            room_of: HashMap::new(),
            queue_dropped: Arc::new(AtomicU64::new(0)),
        };
        let task = tokio::spawn(engine.run(request_rx, packet_rx));
        Ok((
            MediaEngine {
                requests,
                allocator,
            },
            task,
        ))
    }

    fn request(&self, r: Request) -> Result<()> {
        self.requests.send(r).map_err(|_| MediaError::Stopped)
    }

    /// Sets what `leg`'s media inactivity timer watches for
    /// ([`branchline_media::inactivity`]): [`Watch::Active`] once its call is up,
    /// [`Watch::Held`] while the far end holds it, [`Watch::Off`] otherwise (the
    /// default: ringing, early media, a queued caller). A watched leg that receives no
    /// RTP or RTCP for the configured timeout is reported once as
    /// [`SipInput::MediaTimeout`]; each change of the watch restarts the count.
    pub fn watch_leg(&self, leg: LegId, watch: Watch) {
        self.send_or_log(Request::Watch(leg, watch));
    }

    /// Allocates an RTP/RTCP port pair for `leg` and returns the local RTP address for
    /// the SDP. Media flows only after [`MediaEngine::start_leg`].
    pub async fn open_leg(&self, leg: LegId) -> Result<SocketAddr> {
        let pair = self
            .allocator
            .allocate()
            .await
            .map_err(|source| MediaError::Ports { leg, source })?;
        let (reply, rx) = oneshot::channel();
        self.request(Request::Open { leg, pair, reply })?;
        rx.await.map_err(|_| MediaError::Stopped)?
    }

    /// The negotiated media of `leg`: the peer's RTP address and the codec. Called
    /// again (re-INVITE), it changes address and codec and re-arms the latch.
    pub async fn start_leg(&self, leg: LegId, remote: SocketAddr, media: LegMedia) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.request(Request::Start {
            leg,
            remote,
            media,
            reply,
        })?;
        rx.await.map_err(|_| MediaError::Stopped)?
    }

    /// Ends `leg`: unbridges it, releases its ports and returns the quality of what it
    /// received (`None` if it never received RTP or was not open).
    pub async fn close_leg(&self, leg: LegId) -> Option<CallQuality> {
        let (reply, rx) = oneshot::channel();
        self.request(Request::Close { leg, reply }).ok()?;
        rx.await.ok().flatten()
    }

    /// Bridges `a` and `b` both ways (call control's `Connect`); an end already bridged
    /// elsewhere is moved. Port to port bridges are the board loop's, not the engine's,
    /// and are refused here (logged).
    pub fn bridge(&self, a: MediaEnd, b: MediaEnd) {
        self.send_or_log(Request::Bridge(a, b));
    }

    /// Removes the bridge between `a` and `b` (call control's `Disconnect`), if it is
    /// there.
    pub fn unbridge(&self, a: MediaEnd, b: MediaEnd) {
        self.send_or_log(Request::Unbridge(a, b));
    }

    /// One 20 ms frame from analog `port` (ignored unless the port is bridged to a leg).
    pub fn port_audio(&self, port: u8, audio: Audio) {
        // Audio after shutdown has nowhere to go.
        let _ = self.requests.send(Request::PortAudio(port, audio));
    }

    /// Sends `digit` (`0-9 * # A-D`) on `leg` as an RFC 4733 event.
    pub fn send_digit(&self, leg: LegId, digit: char) {
        self.send_or_log(Request::Digit(leg, digit));
    }

    /// Plays `player` to `end` (an analog port, or a SIP leg whose media is started:
    /// early media or answered) on the frame clock, replacing whatever played there; an
    /// end bridged to another is unbridged first (a caller put back in a queue hears
    /// its music, not the agent). Bridging the end stops the playback, as does
    /// [`MediaEngine::stop_playing`] and, for a leg, closing it. A player that has
    /// nothing left to play is dropped (the end then gets nothing).
    pub fn play(&self, end: MediaEnd, player: Player) {
        self.send_or_log(Request::Play(end, player));
    }

    /// Changes conference room `room` (call control's `Output::Conference`): an end
    /// that joins is unbridged and its playback stopped first; an end that leaves is
    /// left unbridged. See the module docs.
    pub fn conference(&self, room: RoomId, op: ConferenceOp) {
        self.send_or_log(Request::Conference(room, op));
    }

    /// Stops what [`MediaEngine::play`] plays to `end`, if anything.
    pub fn stop_playing(&self, end: MediaEnd) {
        self.send_or_log(Request::StopPlay(end));
    }

    /// Hands the audio `end` receives to `sink` from now on, replacing an earlier
    /// capture of it (see the module docs): an analog port's frames from
    /// [`MediaEngine::port_audio`], a SIP leg's RTP through a jitter buffer. An end
    /// bridged to another is not captured (refused, logged); bridging a captured end,
    /// closing its leg or [`MediaEngine::stop_capture`] ends the capture (the sink is
    /// dropped).
    pub fn capture(&self, end: MediaEnd, sink: Box<dyn FrameSink>) {
        self.send_or_log(Request::Capture(end, sink));
    }

    /// Plays the confirmation beep ([`BEEP_HZ`] for [`BEEP_DURATION`]) to `leg`: it
    /// replaces the audio the leg is sent meanwhile, whether that comes from a port or
    /// is relayed from another leg (the call recorder's toggle code confirms with it).
    /// Nothing happens for a leg that is not open or sent no audio meanwhile.
    pub fn beep(&self, leg: LegId) {
        self.send_or_log(Request::Beep(leg));
    }

    /// Ends the capture of `end`, if any (its sink is dropped).
    pub fn stop_capture(&self, end: MediaEnd) {
        self.send_or_log(Request::StopCapture(end));
    }

    /// Starts the echo test on `end` (call control's `Output::Echo`): what the end
    /// receives is captured into a [`DelayLine`] and played back to it
    /// [`ECHO_DELAY`] later, through the same capture and playback as voicemail, so
    /// the caller hears the whole path (line or RTP, codec, jitter buffer) both ways.
    /// [`MediaEngine::stop_echo`] (or bridging the end, closing its leg) ends it.
    pub fn echo(&self, end: MediaEnd) {
        let line: EchoLine = Arc::new(std::sync::Mutex::new(DelayLine::new(ECHO_DELAY)));
        self.send_or_log(Request::Capture(end, Box::new(EchoSink(line.clone()))));
        self.send_or_log(Request::Play(end, Player::echo(line)));
    }

    /// Ends the echo test on `end`: its capture and its playback.
    pub fn stop_echo(&self, end: MediaEnd) {
        self.send_or_log(Request::StopCapture(end));
        self.send_or_log(Request::StopPlay(end));
    }

    /// Diagnostics of every open leg.
    pub async fn stats(&self) -> Result<Vec<LegSnapshot>> {
        let (reply, rx) = oneshot::channel();
        self.request(Request::Stats(reply))?;
        rx.await.map_err(|_| MediaError::Stopped)
    }

    /// RTP port pairs in use.
    pub fn ports_in_use(&self) -> usize {
        self.allocator.leased()
    }

    fn send_or_log(&self, r: Request) {
        if self.requests.send(r).is_err() {
            tracing::debug!("media engine stopped; request dropped");
        }
    }
}

/// Aborts a reader task when its leg goes.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
enum Datagram {
    Rtp {
        leg: LegId,
        from: SocketAddr,
        at: Instant,
        data: Vec<u8>,
    },
    Rtcp {
        leg: LegId,
        from: SocketAddr,
        data: Vec<u8>,
    },
    /// An RTP packet the leg's reader already accepted (and tapped) on its fast path
    /// that still needs the engine: a telephone-event to decode, or (`relayed` false) a
    /// payload the peer must get rebuilt.
    Accepted {
        leg: LegId,
        at: Instant,
        relayed: bool,
        data: Vec<u8>,
    },
}

/// The confirmation beep still to send on a leg ([`MediaEngine::beep`]).
#[derive(Debug)]
struct Beep {
    tone: branchline_board::dsp::SineGenerator,
    /// Samples still to replace.
    left: usize,
}

impl Beep {
    fn new() -> Self {
        let amplitude = branchline_board::dsp::dbm0_to_amplitude(BEEP_DBM0) as i16;
        Beep {
            tone: branchline_board::dsp::SineGenerator::new(BEEP_HZ, amplitude),
            left: (BEEP_DURATION.as_millis() as usize) * (CLOCK_RATE as usize) / 1000,
        }
    }

    /// Replaces the start of `pcm` with the beep (as much as is left); true when it is
    /// over.
    fn overlay(&mut self, pcm: &mut [i16]) -> bool {
        let n = pcm.len().min(self.left);
        self.tone.fill(&mut pcm[..n]);
        self.left -= n;
        self.left == 0
    }
}

/// An RFC 4733 digit being sent on a leg.
#[derive(Debug)]
struct DigitOut {
    encoder: TelephoneEventEncoder,
    release: Release,
}

/// When a digit being sent ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// A key press from call control: this many more frame ticks.
    AfterTicks(u32),
    /// Detected in-band: until the detector reports its end.
    Held,
    /// Ended: the end packets are being repeated.
    Released,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    rtp_in: u64,
    rtp_out: u64,
    invalid: u64,
    foreign: u64,
    dropped: u64,
    rtcp_in: u64,
    rtcp_out: u64,
}

/// Locks a leg's shared receive state. Nothing panics while holding it, but a poisoned
/// lock is still usable (the state is plain counters and latches), so take it anyway.
fn lock(rx: &Mutex<LegRx>) -> MutexGuard<'_, LegRx> {
    rx.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The receive side of a leg that its RTP reader task and the engine task share.
///
/// Held only for a few field updates, never across an `.await` and never together
/// with another leg's (a reader locks its own leg, releases it, then locks the peer's
/// to send), so the two readers of a bridged pair cannot deadlock and the engine never
/// waits more than one packet's bookkeeping.
#[derive(Debug)]
struct LegRx {
    rtp_latch: Latch,
    counters: Counters,
    /// Reception statistics of the source the leg receives (loss, jitter, MOS).
    receiver: Option<ReceiverStats>,
    /// When the last RTP packet was accepted; the engine feeds it to the leg's
    /// inactivity timer on its tick.
    last_rx: Option<Instant>,
    /// Set by the engine while the leg is bridged to a leg as a plain relay: the
    /// reader then relays accepted packets itself (see [`FastRelay`]).
    fast: Option<Arc<FastRelay>>,
}

impl LegRx {
    fn new() -> Self {
        LegRx {
            rtp_latch: Latch::new(LatchConfig::default(), None, None),
            counters: Counters::default(),
            receiver: None,
            last_rx: None,
            fast: None,
        }
    }

    /// The checks and bookkeeping of every RTP packet a started leg receives, wherever
    /// it is then handled: it must parse and carry a negotiated payload type (else
    /// `invalid`), come from the latched source when the leg latches (else
    /// `foreign`); then it counts, updates the reception statistics and the
    /// inactivity time. `None` when the packet is dropped.
    fn accept<'a>(
        &mut self,
        leg: LegId,
        media: &LegMedia,
        payloads: &PayloadMap,
        at: Instant,
        from: SocketAddr,
        data: &'a [u8],
    ) -> Option<(RtpPacket<'a>, PayloadKind)> {
        let Ok(packet) = parse(data) else {
            self.counters.invalid += 1;
            return None;
        };
        let Some(kind) = payloads.classify(packet.payload_type) else {
            self.counters.invalid += 1;
            return None;
        };
        if media.latch {
            match self.rtp_latch.on_packet(at, from, Some(packet.ssrc)) {
                LatchDecision::Reject => {
                    self.counters.foreign += 1;
                    return None;
                }
                LatchDecision::Latched(addr) => {
                    tracing::debug!(%leg, %addr, "RTP latched");
                }
                LatchDecision::Accept => {}
            }
        }
        self.counters.rtp_in += 1;
        if self.last_rx.is_none_or(|l| at > l) {
            self.last_rx = Some(at);
        }
        let fresh = self
            .receiver
            .as_ref()
            .is_none_or(|r| r.ssrc() != packet.ssrc);
        if fresh {
            self.receiver = Some(ReceiverStats::new(packet.ssrc, packet.seq, CLOCK_RATE));
        }
        if let Some(r) = self.receiver.as_mut() {
            r.update(at, packet.seq, packet.timestamp);
        }
        Some((packet, kind))
    }

    /// Sends `packet` to where this leg's RTP goes now, counting it as sent or
    /// dropped (no target yet, or a full socket buffer).
    fn send(&mut self, socket: &UdpSocket, packet: &[u8]) {
        let sent = self
            .rtp_latch
            .target()
            .is_some_and(|to| socket.try_send_to(packet, to).is_ok());
        if sent {
            self.counters.rtp_out += 1;
        } else {
            self.counters.dropped += 1;
        }
    }
}

/// A leg-to-leg bridge direction that is a plain relay: the receiving leg's reader
/// sends accepted packets unchanged on the peer leg's RTP socket. The engine sets it
/// (on bridge, start, beep, unbridge, close) only when both legs are started with the
/// same law and the same telephone-event payload type and the peer is not beeping;
/// anything else goes through the engine task.
struct FastRelay {
    /// The receiving leg's negotiated media (latching, and what the tap is told).
    media: LegMedia,
    payloads: PayloadMap,
    /// The peer leg's shared state (its latch target, its sent/dropped counters).
    peer: Arc<Mutex<LegRx>>,
    peer_rtp: Arc<UdpSocket>,
    /// The recorder's tap and the receiving leg's flag, when recording is on.
    tap: Option<(Arc<dyn RtpTap>, Arc<AtomicBool>)>,
}

impl std::fmt::Debug for FastRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastRelay")
            .field("media", &self.media)
            .field("tapped", &self.tap.is_some())
            .finish_non_exhaustive()
    }
}

/// Hands an accepted packet of `leg` to the recorder's tap if its flag is set.
fn tap_packet(
    tap: &dyn RtpTap,
    flag: &AtomicBool,
    leg: LegId,
    media: &LegMedia,
    packet: &RtpPacket<'_>,
) {
    if flag.load(Ordering::Relaxed) {
        tap.rtp(
            leg,
            &TappedRtp {
                audio_pt: media.payload_type,
                law: media.law,
                event_pt: media.telephone_event_pt,
                ssrc: packet.ssrc,
                timestamp: packet.timestamp,
                payload_type: packet.payload_type,
                payload: packet.payload,
            },
        );
    }
}

#[derive(Debug)]
struct Leg {
    local: SocketAddr,
    rtp: Arc<UdpSocket>,
    rtcp: Arc<UdpSocket>,
    /// Keeps the port pair out of the pool while the leg is open.
    _lease: PortLease,
    /// The socket readers; they stop with the leg.
    _readers: [AbortOnDrop; 2],
    media: Option<LegMedia>,
    payloads: PayloadMap,
    /// What the leg's RTP reader shares with the engine: the RTP latch, counters,
    /// reception statistics and the fast-path relay (see [`LegRx`]).
    rx: Arc<Mutex<LegRx>>,
    rtcp_latch: Latch,
    sender: RtpSender,
    /// Samples from the port waiting for a full packet (ptime other than 20 ms).
    pending: Vec<u8>,
    decoder: TelephoneEventDecoder,
    digit_out: Option<DigitOut>,
    digits_queued: VecDeque<TelephoneEvent>,
    passthrough: bool,
    /// Set while the RTP this leg receives is recorded ([`RtpTap`]).
    recorded: Option<Arc<AtomicBool>>,
    /// A confirmation beep replacing the audio sent ([`MediaEngine::beep`]).
    beep: Option<Beep>,
    /// When this leg's next RTCP report is due (legs that end on a port only).
    rtcp_schedule: ReportSchedule,
    /// RTP packets sent at the previous report (an SR only if some were sent since).
    packets_at_report: u64,
    /// Round-trip time from the peer's last report about our stream.
    rtt: Option<Duration>,
    /// The peer's last report block about our stream.
    remote_report: Option<ReportBlock>,
    /// Time since the last RTP/RTCP received, while the SIP endpoint watches the leg.
    inactivity: InactivityTimer,
}

/// Wall-clock time for RTCP (the NTP timestamps of SRs, RTT arithmetic).
fn ntp_now() -> NtpTime {
    NtpTime::from_unix(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

impl Leg {
    /// Sends the pending audio samples (already in the leg's law) as RTP packets of
    /// the leg's ptime; a partial packet waits for the next frame.
    fn send_pending(&mut self) {
        let size = self.sender.ptime().samples() as usize;
        let mut buf = [0u8; MAX_PACKET];
        while self.pending.len() >= size {
            let chunk: Vec<u8> = self.pending.drain(..size).collect();
            match self.sender.write_audio(&chunk, &mut buf) {
                Ok(n) => self.send_rtp(&buf[..n]),
                Err(_) => lock(&self.rx).counters.dropped += 1,
            }
        }
    }

    fn send_rtp(&mut self, packet: &[u8]) {
        lock(&self.rx).send(&self.rtp, packet);
    }

    fn send_event(&mut self, p: EventPacket) {
        let Some(pt) = self.media.and_then(|m| m.telephone_event_pt) else {
            return;
        };
        let header = self.sender.next_other(pt, p.marker, p.timestamp, 4);
        let mut buf = [0u8; 64];
        match header.write(&p.payload.to_bytes(), &mut buf) {
            Ok(n) => self.send_rtp(&buf[..n]),
            Err(e) => tracing::warn!(error = %e, "telephone-event packet not built"),
        }
    }

    fn quality(&self, jitter_buffer: Duration) -> Option<CallQuality> {
        lock(&self.rx)
            .receiver
            .as_ref()
            .map(|r| r.quality(self.rtt, jitter_buffer, !self.passthrough))
    }

    /// The leg's compound report: an SR when it sent RTP since the last report (RFC
    /// 3550 6.4), else an RR; a report block about the source it receives, if any.
    fn report(&mut self, now: Instant, cname: &str) -> Vec<u8> {
        let sent = self.sender.packet_count();
        let sender = (sent > self.packets_at_report).then(|| SenderInfo {
            ntp: ntp_now().0,
            // The timestamp the next packet will carry: the stream runs in real time
            // on the port's frame clock, so this is "now" within one frame.
            rtp_timestamp: self.sender.timestamp(),
            // RFC 3550 6.4.1: the counts wrap at 2^32.
            packets: sent as u32,
            octets: self.sender.octet_count() as u32,
        });
        self.packets_at_report = sent;
        let blocks: Vec<ReportBlock> = lock(&self.rx)
            .receiver
            .as_mut()
            .map(|r| r.report_block(now))
            .into_iter()
            .collect();
        build_report(self.sender.ssrc(), sender, &blocks, cname)
    }

    fn send_rtcp(&mut self, packet: &[u8]) {
        // RTCP is best effort: no target or a full socket buffer drops the report.
        if let Some(to) = self.rtcp_latch.target() {
            if self.rtcp.try_send_to(packet, to).is_ok() {
                lock(&self.rx).counters.rtcp_out += 1;
            }
        }
    }

    /// What an RTCP packet from the peer of a terminating leg says: the SR time of the
    /// source we receive (for our LSR/DLSR), and the peer's report about our stream
    /// (RTT, the loss it sees).
    fn take_reports(&mut self, now: Instant, packets: &[RtcpPacket]) {
        let ours = self.sender.ssrc();
        for p in packets {
            let blocks = match p {
                RtcpPacket::SenderReport { ssrc, info, blocks } => {
                    if let Some(r) = lock(&self.rx)
                        .receiver
                        .as_mut()
                        .filter(|r| r.ssrc() == *ssrc)
                    {
                        r.on_sender_report(now, info.ntp);
                    }
                    blocks
                }
                RtcpPacket::ReceiverReport { blocks, .. } => blocks,
                _ => continue,
            };
            if let Some(b) = blocks.iter().find(|b| b.ssrc == ours) {
                self.remote_report = Some(*b);
                if let Some(rtt) = round_trip_time(b, ntp_now()) {
                    self.rtt = Some(rtt);
                }
            }
        }
    }
}

/// A port bridged to a leg: the jitter buffer towards the port, fax detection, in-band
/// DTMF detection (FXO) and the tones of received digits (phones).
#[derive(Debug)]
struct PortLink {
    leg: LegId,
    jitter: JitterBuffer,
    fax_from_port: FaxDetector,
    fax_from_leg: FaxDetector,
    /// FXO ports: DTMF the PSTN caller sends in-band.
    inband: Option<InbandDetector>,
    /// Phones: RFC 4733 digits from the leg played as tones.
    tones: DtmfPlayer,
}

struct Engine {
    settings: MediaSettings,
    ports: Arc<dyn PortSink>,
    /// The recorder's view of legs' RTP, if recording is on.
    rtp_tap: Option<Arc<dyn RtpTap>>,
    sip_inputs: mpsc::UnboundedSender<SipInput>,
    packet_tx: mpsc::Sender<Datagram>,
    legs: HashMap<LegId, Leg>,
    port_links: HashMap<u8, PortLink>,
    /// Bridges, both directions.
    peers: HashMap<MediaEnd, MediaEnd>,
    /// Prompts and music playing to unbridged ends.
    players: HashMap<MediaEnd, Player>,
    /// Unbridged ends whose incoming audio is captured.
    captures: HashMap<MediaEnd, Capture>,
    /// Conference rooms (see `conference`).
    rooms: HashMap<RoomId, conference::Room>,
    /// The room each conference member is in.
    room_of: HashMap<MediaEnd, RoomId>,
    next_seed: u64,
    /// RTCP SDES CNAME of the reports this engine sends.
    cname: String,
    /// Datagrams dropped because the engine queue was full.
    queue_dropped: Arc<AtomicU64>,
}

/// Queues a datagram for the engine task: dropped (and counted) when the queue is
/// full, never waiting. False once the engine is gone.
fn to_engine(tx: &mpsc::Sender<Datagram>, dropped: &AtomicU64, d: Datagram) -> bool {
    match tx.try_send(d) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            dropped.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// The RTCP socket's reader: every datagram goes to the engine task (a few per leg
/// every 5 s).
fn spawn_rtcp_reader(
    socket: Arc<UdpSocket>,
    leg: LegId,
    tx: mpsc::Sender<Datagram>,
    dropped: Arc<AtomicU64>,
) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_PACKET];
        loop {
            let (len, from) = match socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    // ICMP port unreachable and the like surface here on some systems:
                    // keep reading.
                    tracing::trace!(%leg, error = %e, "RTCP socket receive error");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            let data = buf[..len].to_vec();
            if !to_engine(&tx, &dropped, Datagram::Rtcp { leg, from, data }) {
                break;
            }
        }
    }))
}

/// The RTP socket's reader. While the engine has set a [`FastRelay`] on the leg, it
/// accepts, taps and relays packets itself (see "Structure" in the module docs) and
/// hands the engine only telephone-events (for [`SipInput::Digit`]) and payloads that
/// must be rebuilt; otherwise every datagram goes to the engine task.
fn spawn_rtp_reader(
    socket: Arc<UdpSocket>,
    leg: LegId,
    rx: Arc<Mutex<LegRx>>,
    tx: mpsc::Sender<Datagram>,
    dropped: Arc<AtomicU64>,
) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_PACKET];
        loop {
            let (len, from) = match socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    // ICMP port unreachable and the like surface here on some systems:
                    // keep reading.
                    tracing::trace!(%leg, error = %e, "RTP socket receive error");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            let at = Instant::now();
            let data = &buf[..len];
            let d = match fast_path(leg, &rx, at, from, data) {
                Fast::Done => continue,
                Fast::Engine { relayed } => Datagram::Accepted {
                    leg,
                    at,
                    relayed,
                    data: data.to_vec(),
                },
                Fast::Off => Datagram::Rtp {
                    leg,
                    from,
                    at,
                    data: data.to_vec(),
                },
            };
            if !to_engine(&tx, &dropped, d) {
                break;
            }
        }
    }))
}

/// What the reader's fast path made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fast {
    /// No fast relay on the leg: the engine handles the datagram from the start.
    Off,
    /// Accepted or dropped, relayed if accepted, and nothing left for the engine.
    Done,
    /// Accepted (and relayed if `relayed`), but the engine has more to do with it.
    Engine { relayed: bool },
}

/// The fast path of one RTP datagram of `leg` (see [`FastRelay`]): the same checks and
/// bookkeeping as the engine's ([`LegRx::accept`]), the recorder's tap, then the
/// packet unchanged to the peer leg's current target.
fn fast_path(leg: LegId, rx: &Mutex<LegRx>, at: Instant, from: SocketAddr, data: &[u8]) -> Fast {
    let (relay, packet, kind) = {
        let mut g = lock(rx);
        let Some(relay) = g.fast.clone() else {
            return Fast::Off;
        };
        let Some((packet, kind)) = g.accept(leg, &relay.media, &relay.payloads, at, from, data)
        else {
            return Fast::Done;
        };
        (relay, packet, kind)
    };
    if let Some((tap, flag)) = &relay.tap {
        tap_packet(tap.as_ref(), flag, leg, &relay.media, &packet);
    }
    // Both legs have the same law and telephone-event type; audio in the other law
    // (a peer may switch codec without a re-INVITE) is transcoded by the engine.
    let raw = match kind {
        PayloadKind::Audio(law) => law == relay.media.law,
        PayloadKind::TelephoneEvent | PayloadKind::ComfortNoise => true,
    };
    if raw {
        lock(&relay.peer).send(&relay.peer_rtp, data);
    }
    if kind == PayloadKind::TelephoneEvent || !raw {
        Fast::Engine { relayed: raw }
    } else {
        Fast::Done
    }
}

impl Engine {
    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut packets: mpsc::Receiver<Datagram>,
    ) {
        let mut tick = tokio::time::interval(FRAME_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = requests.recv() => match r {
                    Some(r) => self.request(r).await,
                    None => break,
                },
                Some(d) = packets.recv() => self.datagram(d),
                _ = tick.tick() => self.tick(Instant::now()),
            }
        }
        tracing::debug!(legs = self.legs.len(), "media engine stopped");
    }

    async fn request(&mut self, r: Request) {
        match r {
            Request::Open { leg, pair, reply } => {
                let _ = reply.send(self.open(leg, pair));
            }
            Request::Start {
                leg,
                remote,
                media,
                reply,
            } => {
                let _ = reply.send(self.start(leg, remote, media));
            }
            Request::Close { leg, reply } => {
                let _ = reply.send(self.close(leg));
            }
            Request::Bridge(a, b) => self.bridge(a, b),
            Request::Unbridge(a, b) => self.unbridge(a, b),
            Request::PortAudio(port, audio) => self.port_audio(port, &audio),
            Request::Digit(leg, digit) => self.queue_digit(leg, digit),
            Request::Play(end, player) => self.play(end, player),
            Request::StopPlay(end) => {
                if self.players.remove(&end).is_some() {
                    tracing::debug!(?end, "playback stopped");
                }
            }
            Request::Capture(end, sink) => self.capture(end, sink),
            Request::StopCapture(end) => {
                if self.captures.remove(&end).is_some() {
                    tracing::debug!(?end, "capture stopped");
                }
            }
            Request::Conference(room, op) => self.conference(room, op),
            Request::Beep(leg) => match self.legs.get_mut(&leg) {
                Some(l) => {
                    l.beep = Some(Beep::new());
                    // What is relayed to the leg must now be rebuilt by the engine.
                    self.refresh_fast(leg);
                }
                None => tracing::debug!(%leg, "beep to a leg that is not open dropped"),
            },
            Request::Watch(leg, watch) => match self.legs.get_mut(&leg) {
                Some(l) => {
                    if l.inactivity.watch() != watch {
                        tracing::debug!(%leg, ?watch, "media inactivity watch");
                    }
                    l.inactivity.arm(Instant::now(), watch);
                }
                None => tracing::debug!(%leg, "inactivity watch of a leg that is not open dropped"),
            },
            Request::Stats(reply) => {
                let _ = reply.send(self.snapshot());
            }
        }
    }

    fn open(&mut self, leg: LegId, pair: PortPair) -> Result<SocketAddr> {
        if self.legs.contains_key(&leg) {
            return Err(MediaError::LegExists { leg });
        }
        let local = pair
            .rtp_addr()
            .map_err(|source| MediaError::Ports { leg, source })?;
        let PortPair { rtp, rtcp, lease } = pair;
        let (rtp, rtcp) = (Arc::new(rtp), Arc::new(rtcp));
        let dropped = Arc::clone(&self.queue_dropped);
        let rx = Arc::new(Mutex::new(LegRx::new()));
        let readers = [
            spawn_rtp_reader(
                Arc::clone(&rtp),
                leg,
                Arc::clone(&rx),
                self.packet_tx.clone(),
                Arc::clone(&dropped),
            ),
            spawn_rtcp_reader(Arc::clone(&rtcp), leg, self.packet_tx.clone(), dropped),
        ];
        self.next_seed = self.next_seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.legs.insert(
            leg,
            Leg {
                local,
                rtp,
                rtcp,
                _lease: lease,
                _readers: readers,
                media: None,
                payloads: PayloadMap::default(),
                rx,
                rtcp_latch: Latch::new(LatchConfig::default(), None, None),
                sender: RtpSender::new(self.next_seed, Law::Ulaw, Ptime::Ms20),
                pending: Vec::new(),
                decoder: TelephoneEventDecoder::default(),
                digit_out: None,
                digits_queued: VecDeque::new(),
                passthrough: false,
                recorded: self.rtp_tap.as_ref().map(|t| t.leg_flag(leg)),
                beep: None,
                rtcp_schedule: ReportSchedule::new(self.settings.rtcp_interval, self.next_seed),
                packets_at_report: 0,
                rtt: None,
                remote_report: None,
                inactivity: InactivityTimer::new(self.settings.inactivity),
            },
        );
        tracing::debug!(%leg, %local, "media leg open");
        Ok(local)
    }

    fn start(&mut self, leg: LegId, remote: SocketAddr, media: LegMedia) -> Result<()> {
        let bad = |reason| MediaError::BadLegMedia { leg, reason };
        if media.payload_type != audio_payload_type(media.law) {
            return Err(bad(
                "audio payload type does not match the law (PCMU 0, PCMA 8)",
            ));
        }
        let ptime =
            Ptime::from_ms(media.ptime_ms).map_err(|_| bad("ptime must be 10, 20 or 30"))?;
        let payloads = match media.telephone_event_pt {
            Some(pt) => PayloadMap::with_telephone_event(pt)
                .map_err(|_| bad("telephone-event payload type must be 96..=127"))?,
            None => PayloadMap {
                telephone_event: None,
                comfort_noise: true,
            },
        };
        let Some(l) = self.legs.get_mut(&leg) else {
            return Err(MediaError::UnknownLeg { leg });
        };
        let mut rtcp_remote = remote;
        rtcp_remote.set_port(remote.port().wrapping_add(1));
        // Without `latch` the latch is never fed (see `rtp`), so the SDP address
        // stays the target.
        let latch = LatchConfig::default();
        lock(&l.rx).rtp_latch = Latch::new(latch, Some(remote), None);
        l.rtcp_latch = Latch::new(latch, Some(rtcp_remote), None);
        let first_start = l.media.is_none();
        if first_start || l.media.map(|m| (m.law, m.ptime_ms)) != Some((media.law, media.ptime_ms))
        {
            self.next_seed = self.next_seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            l.sender = RtpSender::new(self.next_seed, media.law, ptime);
            l.pending.clear();
        }
        l.payloads = payloads;
        l.media = Some(media);
        tracing::debug!(%leg, %remote, ?media, "media leg started");
        self.refresh_fast(leg);
        Ok(())
    }

    fn close(&mut self, leg: LegId) -> Option<CallQuality> {
        let delay = self
            .peers
            .get(&MediaEnd::Leg(leg))
            .and_then(|p| match p {
                MediaEnd::Port(port) => self.port_links.get(port),
                MediaEnd::Leg(_) => None,
            })
            .map_or(Duration::ZERO, |l| l.jitter.current_delay());
        if let Some(&peer) = self.peers.get(&MediaEnd::Leg(leg)) {
            self.unbridge(MediaEnd::Leg(leg), peer);
        }
        self.players.remove(&MediaEnd::Leg(leg));
        self.captures.remove(&MediaEnd::Leg(leg));
        self.leave_room(MediaEnd::Leg(leg));
        let mut l = self.legs.remove(&leg)?;
        // Unbridged above; make sure no relay keeps the peer's state alive.
        lock(&l.rx).fast = None;
        if let (Some(tap), Some(flag)) = (&self.rtp_tap, l.recorded.take()) {
            drop(flag);
            tap.leg_closed(leg);
        }
        let reports_sent = lock(&l.rx).counters.rtcp_out;
        if reports_sent > 0 {
            // RFC 3550 6.6: a leg that sent reports says goodbye.
            let mut bye = l.report(Instant::now(), &self.cname);
            append_bye(&mut bye, l.sender.ssrc());
            l.send_rtcp(&bye);
        }
        let q = l.quality(delay);
        let (rtp_in, rtp_out, rtcp_out) = {
            let g = lock(&l.rx);
            (g.counters.rtp_in, g.counters.rtp_out, g.counters.rtcp_out)
        };
        tracing::debug!(
            %leg,
            rtp_in,
            rtp_out,
            rtcp_out,
            rtt_ms = q.and_then(|q| q.rtt_ms),
            loss = q.map(|q| q.loss_percent),
            mos = q.map(|q| q.mos),
            "media leg closed"
        );
        q
    }

    fn bridge(&mut self, a: MediaEnd, b: MediaEnd) {
        if a == b {
            tracing::warn!(?a, "media bridge of an end with itself refused");
            return;
        }
        if matches!((a, b), (MediaEnd::Port(_), MediaEnd::Port(_))) {
            tracing::warn!(?a, ?b, "port-to-port bridges belong to the board loop");
            return;
        }
        for end in [a, b] {
            if let MediaEnd::Leg(leg) = end {
                if !self.legs.contains_key(&leg) {
                    tracing::warn!(%leg, "bridge with a leg that is not open refused");
                    return;
                }
            }
        }
        for end in [a, b] {
            self.leave_room(end);
            if let Some(&old) = self.peers.get(&end) {
                self.unbridge(end, old);
            }
            if self.players.remove(&end).is_some() {
                tracing::debug!(?end, "playback stopped: bridged");
            }
            if self.captures.remove(&end).is_some() {
                tracing::debug!(?end, "capture stopped: bridged");
            }
        }
        self.peers.insert(a, b);
        self.peers.insert(b, a);
        if let (MediaEnd::Leg(a), MediaEnd::Leg(_)) = (a, b) {
            self.refresh_fast(a);
        }
        if let (MediaEnd::Port(port), MediaEnd::Leg(leg))
        | (MediaEnd::Leg(leg), MediaEnd::Port(port)) = (a, b)
        {
            let passthrough = self.legs.get(&leg).is_some_and(|l| l.passthrough);
            let config = if passthrough {
                passthrough_jitter_config()
            } else {
                self.settings.jitter
            };
            let payloads = self.legs.get(&leg).map(|l| l.payloads).unwrap_or_default();
            self.port_links.insert(
                port,
                PortLink {
                    leg,
                    jitter: JitterBuffer::new(config, payloads),
                    fax_from_port: FaxDetector::new(),
                    fax_from_leg: FaxDetector::new(),
                    inband: self
                        .settings
                        .fxo_ports
                        .contains(&port)
                        .then(InbandDetector::default),
                    tones: DtmfPlayer::new(),
                },
            );
        }
        tracing::debug!(?a, ?b, "media bridged");
    }

    fn unbridge(&mut self, a: MediaEnd, b: MediaEnd) {
        if self.peers.get(&a) != Some(&b) {
            return;
        }
        self.peers.remove(&a);
        self.peers.remove(&b);
        for end in [a, b] {
            match end {
                MediaEnd::Port(port) => {
                    self.port_links.remove(&port);
                }
                MediaEnd::Leg(leg) => self.refresh_fast(leg),
            }
        }
        tracing::debug!(?a, ?b, "media unbridged");
    }

    /// Sets or clears the readers' fast relay of `leg` and of its peer leg, from what
    /// the engine knows now (bridges, media, beeps). Called whenever one of those
    /// changes for a leg.
    fn refresh_fast(&mut self, leg: LegId) {
        let peer = match self.peers.get(&MediaEnd::Leg(leg)) {
            Some(MediaEnd::Leg(p)) => Some(*p),
            _ => None,
        };
        self.set_fast(leg, peer);
        if let Some(peer) = peer {
            self.set_fast(peer, Some(leg));
        }
    }

    /// The fast relay from leg `from` to leg `to`, when that direction is a plain
    /// relay: both started, same law and telephone-event payload type, no beep
    /// replacing what `to` is sent.
    fn set_fast(&mut self, from: LegId, to: Option<LegId>) {
        let relay = to.and_then(|to| {
            let (a, b) = (self.legs.get(&from)?, self.legs.get(&to)?);
            let (ma, mb) = (a.media?, b.media?);
            let plain = ma.law == mb.law
                && ma.telephone_event_pt == mb.telephone_event_pt
                && b.beep.is_none();
            plain.then(|| {
                Arc::new(FastRelay {
                    media: ma,
                    payloads: a.payloads,
                    peer: Arc::clone(&b.rx),
                    peer_rtp: Arc::clone(&b.rtp),
                    tap: self
                        .rtp_tap
                        .as_ref()
                        .zip(a.recorded.as_ref())
                        .map(|(t, f)| (Arc::clone(t), Arc::clone(f))),
                })
            })
        });
        if let Some(l) = self.legs.get(&from) {
            let mut g = lock(&l.rx);
            if g.fast.is_some() != relay.is_some() {
                tracing::debug!(leg = %from, fast = relay.is_some(), "leg's relay in its reader");
            }
            g.fast = relay;
        }
    }

    fn datagram(&mut self, d: Datagram) {
        match d {
            Datagram::Rtp {
                leg,
                from,
                at,
                data,
            } => self.rtp(leg, from, at, &data),
            Datagram::Rtcp { leg, from, data } => self.rtcp(leg, from, &data),
            Datagram::Accepted {
                leg,
                at,
                relayed,
                data,
            } => {
                let Some(l) = self.legs.get(&leg) else {
                    return;
                };
                // The reader parsed and classified it with the same map.
                let Some((packet, kind)) = parse(&data)
                    .ok()
                    .and_then(|p| Some((p, l.payloads.classify(p.payload_type)?)))
                else {
                    return;
                };
                self.after_accept(leg, at, &packet, kind, &data, relayed);
            }
        }
    }

    fn rtcp(&mut self, leg: LegId, from: SocketAddr, data: &[u8]) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let Some(media) = l.media else {
            return;
        };
        let Ok(packets) = parse_compound(data) else {
            lock(&l.rx).counters.invalid += 1;
            return;
        };
        if media.latch
            && l.rtcp_latch.on_packet(Instant::now(), from, None) == LatchDecision::Reject
        {
            lock(&l.rx).counters.foreign += 1;
            return;
        }
        lock(&l.rx).counters.rtcp_in += 1;
        l.inactivity.on_packet(Instant::now());
        let peer = self.peers.get(&MediaEnd::Leg(leg)).copied();
        if !matches!(peer, Some(MediaEnd::Leg(_))) {
            // The leg ends here: the reports are about our stream and theirs.
            l.take_reports(Instant::now(), &packets);
        }
        if let Some(MediaEnd::Leg(peer)) = peer {
            if let Some(p) = self.legs.get(&peer) {
                if let Some(to) = p.rtcp_latch.target() {
                    // RTCP is best effort: a full socket buffer drops the report.
                    let _ = p.rtcp.try_send_to(data, to);
                }
            }
        }
    }

    fn rtp(&mut self, leg: LegId, from: SocketAddr, at: Instant, data: &[u8]) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let Some(media) = l.media else {
            // Media before the answer is negotiated: nowhere to play it yet.
            return;
        };
        let accepted = lock(&l.rx).accept(leg, &media, &l.payloads, at, from, data);
        let Some((packet, kind)) = accepted else {
            return;
        };
        if let (Some(tap), Some(flag)) = (&self.rtp_tap, &l.recorded) {
            tap_packet(tap.as_ref(), flag, leg, &media, &packet);
        }
        self.after_accept(leg, at, &packet, kind, data, false);
    }

    /// An accepted (and tapped) RTP packet of `leg`: telephone-events decoded into
    /// digits, then the packet to the leg's room, bridge or capture (not to a peer leg
    /// when the reader has `relayed` it already).
    fn after_accept(
        &mut self,
        leg: LegId,
        at: Instant,
        packet: &RtpPacket<'_>,
        kind: PayloadKind,
        data: &[u8],
        relayed: bool,
    ) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        if kind == PayloadKind::TelephoneEvent {
            if let Err(e) = l.decoder.handle(at, packet.timestamp, packet.payload) {
                lock(&l.rx).counters.invalid += 1;
                tracing::debug!(%leg, error = %e, "bad telephone-event packet");
            }
            self.poll_digits(leg);
        }
        if self.room_of.contains_key(&MediaEnd::Leg(leg)) {
            return self.queue_for_room(leg, at, packet);
        }
        match self.peers.get(&MediaEnd::Leg(leg)).copied() {
            Some(MediaEnd::Leg(_)) if relayed => {}
            Some(MediaEnd::Leg(peer)) => self.relay(peer, packet, kind, data),
            Some(MediaEnd::Port(port)) => self.queue_for_port(port, at, packet, kind),
            None => {
                if let Some(jitter) = self
                    .captures
                    .get_mut(&MediaEnd::Leg(leg))
                    .and_then(|c| c.jitter.as_mut())
                {
                    if let Err(e) = jitter.push(at, packet) {
                        tracing::trace!(%leg, error = %e, "packet refused by the capture's jitter buffer");
                    }
                }
            }
        }
    }

    /// Digits the decoder has recognised go to call control, and are played as tones
    /// to a phone the leg is bridged to.
    fn poll_digits(&mut self, leg: LegId) {
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let phone = match self.peers.get(&MediaEnd::Leg(leg)) {
            Some(MediaEnd::Port(p)) if !self.settings.fxo_ports.contains(p) => Some(*p),
            _ => None,
        };
        while let Some(ev) = l.decoder.poll_event() {
            if let Some(link) = phone.and_then(|p| self.port_links.get_mut(&p)) {
                match ev {
                    DtmfEvent::Start { event, volume } => link.tones.start(event, volume),
                    DtmfEvent::End { duration, .. } => link.tones.release(duration),
                }
            }
            if let DtmfEvent::Start { event, .. } = ev {
                match event.to_digit() {
                    Some(d) => {
                        tracing::debug!(%leg, digit = %char::from(d), "RFC 4733 digit received");
                        let _ = self.sip_inputs.send(SipInput::Digit {
                            leg,
                            digit: char::from(d),
                        });
                    }
                    None => tracing::debug!(%leg, "RFC 4733 flash received; ignored"),
                }
            }
        }
    }

    fn relay(&mut self, peer: LegId, packet: &RtpPacket<'_>, kind: PayloadKind, raw: &[u8]) {
        let Some(p) = self.legs.get_mut(&peer) else {
            return;
        };
        let Some(pm) = p.media else {
            return;
        };
        let mut beep_over = false;
        let beep = match (kind, p.beep.as_mut()) {
            (PayloadKind::Audio(_), Some(beep)) => {
                let mut pcm = vec![0i16; packet.payload.len()];
                if beep.overlay(&mut pcm) {
                    p.beep = None;
                    beep_over = true;
                }
                Some(pcm.iter().map(|&s| pm.law.encode(s)).collect::<Vec<u8>>())
            }
            _ => None,
        };
        let (pt, payload): (u8, Option<Vec<u8>>) = match kind {
            PayloadKind::Audio(_) if beep.is_some() => (pm.payload_type, beep),
            PayloadKind::Audio(law) if law == pm.law => (packet.payload_type, None),
            PayloadKind::Audio(law) => (
                pm.payload_type,
                Some(
                    packet
                        .payload
                        .iter()
                        .map(|&c| pm.law.encode(law.decode(c)))
                        .collect(),
                ),
            ),
            PayloadKind::TelephoneEvent => match pm.telephone_event_pt {
                Some(pt) => (pt, None),
                None => return, // the peer cannot take events (it got a SipInput::Digit)
            },
            PayloadKind::ComfortNoise => (packet.payload_type, None),
        };
        if pt == packet.payload_type && payload.is_none() {
            p.send_rtp(raw);
            return;
        }
        let header = RtpHeader {
            payload_type: pt,
            marker: packet.marker,
            seq: packet.seq,
            timestamp: packet.timestamp,
            ssrc: packet.ssrc,
        };
        let mut buf = [0u8; MAX_PACKET];
        match header.write(payload.as_deref().unwrap_or(packet.payload), &mut buf) {
            Ok(n) => p.send_rtp(&buf[..n]),
            Err(_) => lock(&p.rx).counters.dropped += 1,
        }
        if beep_over {
            // The peer gets plain packets again: back to the readers' fast relay.
            self.refresh_fast(peer);
        }
    }

    fn queue_for_port(&mut self, port: u8, at: Instant, packet: &RtpPacket<'_>, kind: PayloadKind) {
        let Some(link) = self.port_links.get_mut(&port) else {
            return;
        };
        if let PayloadKind::Audio(law) = kind {
            let mut pcm = vec![0i16; packet.payload.len()];
            law.decode_block(packet.payload, &mut pcm);
            link.fax_from_leg.process(&pcm);
        }
        if let Err(e) = link.jitter.push(at, packet) {
            tracing::trace!(port, error = %e, "packet refused by the jitter buffer");
        }
        self.check_fax(port);
    }

    fn port_audio(&mut self, port: u8, audio: &Audio) {
        if let Some(c) = self.captures.get_mut(&MediaEnd::Port(port)) {
            let mut pcm = [0i16; FRAME_SAMPLES];
            audio.law.decode_block(&audio.samples, &mut pcm);
            c.sink.frame(&pcm);
        }
        if self.room_of.contains_key(&MediaEnd::Port(port)) {
            return self.port_audio_to_room(port, audio);
        }
        let Some(link) = self.port_links.get_mut(&port) else {
            return;
        };
        let leg = link.leg;
        let mut pcm = [0i16; FRAME_SAMPLES];
        audio.law.decode_block(&audio.samples, &mut pcm);
        link.fax_from_port.process(&pcm);
        let passthrough = self.legs.get(&leg).is_some_and(|l| l.passthrough);
        let mut inband = Vec::new();
        let mut in_tone = false;
        if let Some(det) = link.inband.as_mut().filter(|_| !passthrough) {
            det.process(&pcm);
            inband.extend(std::iter::from_fn(|| det.poll_event()));
            in_tone = det.in_tone();
        }
        self.check_fax(port);
        let Some(l) = self.legs.get_mut(&leg) else {
            return;
        };
        let Some(media) = l.media else {
            return;
        };
        // In-band DTMF from a PSTN line goes out as RFC 4733 when the peer takes events
        // (and the tone is muted); otherwise it stays in the audio, the only way left.
        let events = media.telephone_event_pt.is_some();
        if events {
            for ev in inband {
                match ev {
                    DtmfEvent::Start { event, volume } => Self::start_held_digit(l, event, volume),
                    DtmfEvent::End { .. } => {
                        if let Some(out) = l.digit_out.as_mut() {
                            if out.release == Release::Held {
                                out.release = Release::Released;
                                if let Some(p) = out.encoder.stop() {
                                    l.send_event(p);
                                }
                            }
                        }
                    }
                }
            }
        }
        if l.digit_out.is_some() || (events && in_tone) {
            // RFC 4733 2.5.1: the audio is replaced by the event while it lasts.
            l.sender.skip(FRAME_SAMPLES as u32);
            l.pending.clear();
            return;
        }
        let beeping = l.beep.is_some();
        if let Some(beep) = l.beep.as_mut() {
            if beep.overlay(&mut pcm) {
                l.beep = None;
            }
        }
        if media.law == audio.law && !beeping {
            l.pending.extend_from_slice(&audio.samples);
        } else {
            l.pending.extend(pcm.iter().map(|&s| media.law.encode(s)));
        }
        l.send_pending();
    }

    fn play(&mut self, end: MediaEnd, player: Player) {
        if let MediaEnd::Leg(leg) = end {
            if !self.legs.contains_key(&leg) {
                tracing::warn!(%leg, "playback to a leg that is not open refused");
                return;
            }
        }
        if let Some(&peer) = self.peers.get(&end) {
            self.unbridge(end, peer);
        }
        self.leave_room(end);
        tracing::debug!(?end, "playback started");
        self.players.insert(end, player);
    }

    fn capture(&mut self, end: MediaEnd, sink: Box<dyn FrameSink>) {
        let jitter = match end {
            MediaEnd::Leg(leg) => {
                let Some(l) = self.legs.get(&leg) else {
                    tracing::warn!(%leg, "capture of a leg that is not open refused");
                    return;
                };
                Some(JitterBuffer::new(self.settings.jitter, l.payloads))
            }
            MediaEnd::Port(_) => None,
        };
        if self.peers.contains_key(&end) {
            tracing::warn!(?end, "capture of a bridged end refused");
            return;
        }
        tracing::debug!(?end, "capture started");
        self.captures.insert(end, Capture { sink, jitter });
    }

    /// One frame from every captured leg whose media is started, to its sink.
    fn tick_captures(&mut self, now: Instant) {
        for (end, c) in self.captures.iter_mut() {
            let (MediaEnd::Leg(leg), Some(jitter)) = (end, c.jitter.as_mut()) else {
                continue;
            };
            if self.legs.get(leg).is_some_and(|l| l.media.is_some()) {
                let frame = jitter.pop(now);
                c.sink.frame(&frame.pcm);
            }
        }
    }

    /// One frame of every playback, to its port or leg.
    fn tick_players(&mut self) {
        let law = self.settings.board_law;
        let mut ended = Vec::new();
        for (&end, player) in self.players.iter_mut() {
            let mut pcm = [0i16; FRAME_SAMPLES];
            if !player.fill(&mut pcm) {
                ended.push(end);
                continue;
            }
            match end {
                MediaEnd::Port(port) => {
                    let mut samples = [0u8; FRAME_SAMPLES];
                    law.encode_block(&pcm, &mut samples);
                    self.ports.send_audio(port, Audio { law, samples });
                }
                MediaEnd::Leg(leg) => {
                    let Some(l) = self.legs.get_mut(&leg) else {
                        ended.push(end);
                        continue;
                    };
                    let Some(media) = l.media else {
                        continue; // not started yet (waiting for the answer's SDP)
                    };
                    if l.digit_out.is_some() {
                        l.sender.skip(FRAME_SAMPLES as u32);
                        l.pending.clear();
                        continue;
                    }
                    l.pending.extend(pcm.iter().map(|&s| media.law.encode(s)));
                    l.send_pending();
                }
            }
        }
        for end in ended {
            self.players.remove(&end);
            tracing::debug!(?end, "playback ended");
        }
    }

    fn check_fax(&mut self, port: u8) {
        let Some(link) = self.port_links.get_mut(&port) else {
            return;
        };
        let event = link
            .fax_from_port
            .poll_event()
            .or_else(|| link.fax_from_leg.poll_event());
        if let Some(ev) = event {
            let leg = link.leg;
            link.jitter.set_config(passthrough_jitter_config());
            if let Some(l) = self.legs.get_mut(&leg) {
                l.passthrough = true;
            }
            tracing::info!(port, %leg, tone = ?ev.tone, "fax/modem tone: jitter buffer switched to fixed passthrough");
        }
    }

    fn queue_digit(&mut self, leg: LegId, digit: char) {
        let Some(l) = self.legs.get_mut(&leg) else {
            tracing::debug!(%leg, "digit for a leg that is not open dropped");
            return;
        };
        if l.media.and_then(|m| m.telephone_event_pt).is_none() {
            tracing::debug!(%leg, %digit, "peer did not negotiate telephone-event; digit dropped");
            return;
        }
        let Ok(event) = u8::try_from(digit)
            .map_err(|_| ())
            .and_then(|d| TelephoneEvent::from_digit(d).map_err(|_| ()))
        else {
            tracing::debug!(%leg, %digit, "not a DTMF digit; dropped");
            return;
        };
        if l.digits_queued.len() >= MAX_QUEUED_DIGITS {
            tracing::debug!(%leg, %digit, "too many digits queued; dropped");
            return;
        }
        l.digits_queued.push_back(event);
        if l.digit_out.is_none() {
            Self::next_digit(l);
        }
    }

    fn next_digit(l: &mut Leg) {
        let Some(event) = l.digits_queued.pop_front() else {
            return;
        };
        let mut encoder = TelephoneEventEncoder::new(TICK_SAMPLES);
        match encoder.start(event, DIGIT_VOLUME, l.sender.timestamp()) {
            Ok(p) => {
                l.send_event(p);
                let ticks = (DIGIT_DURATION.as_millis() / FRAME_INTERVAL.as_millis()) as u32;
                l.digit_out = Some(DigitOut {
                    encoder,
                    release: Release::AfterTicks(ticks),
                });
            }
            Err(e) => tracing::warn!(error = %e, "telephone-event not started"),
        }
    }

    /// An in-band digit began on the PSTN line: an event that lasts until the detector
    /// sees its end. A previous event still repeating its end packets is cut short (a
    /// 40 ms pause is shorter than the three end packets); one still held or sent for
    /// a key press keeps the stream, and the in-band digit is dropped (logged).
    fn start_held_digit(l: &mut Leg, event: TelephoneEvent, volume: u8) {
        let encoder = match l.digit_out.take() {
            Some(out) if out.release == Release::Released => out.encoder,
            Some(out) => {
                tracing::debug!(digit = ?event.to_digit().map(char::from), "in-band digit while another is sent; dropped");
                l.digit_out = Some(out);
                return;
            }
            None => TelephoneEventEncoder::new(TICK_SAMPLES),
        };
        let mut encoder = encoder;
        match encoder.start(event, volume, l.sender.timestamp()) {
            Ok(p) => {
                tracing::debug!(digit = ?event.to_digit().map(char::from), "in-band DTMF sent as RFC 4733");
                l.send_event(p);
                l.digit_out = Some(DigitOut {
                    encoder,
                    release: Release::Held,
                });
            }
            Err(e) => tracing::warn!(error = %e, "telephone-event not started"),
        }
    }

    fn tick(&mut self, now: Instant) {
        self.tick_players();
        self.tick_captures(now);
        self.tick_rooms(now);
        // Frames towards the ports.
        let ports: Vec<u8> = self.port_links.keys().copied().collect();
        for port in ports {
            let Some(link) = self.port_links.get_mut(&port) else {
                continue;
            };
            let started = self.legs.get(&link.leg).is_some_and(|l| l.media.is_some());
            if !started {
                continue;
            }
            let frame = link.jitter.pop(now);
            let law = self.settings.board_law;
            let mut tone = [0i16; FRAME_SAMPLES];
            let samples = if link.tones.fill(&mut tone) {
                // A received digit replaces the audio while it plays.
                let mut g = [0u8; FRAME_SAMPLES];
                law.encode_block(&tone, &mut g);
                g
            } else {
                frame.to_g711(law)
            };
            self.ports.send_audio(port, Audio { law, samples });
        }
        // Telephone-events: timeouts of received ones, progress of sent ones. Only the
        // legs that have one (received events are polled as they are decoded, so only a
        // timeout makes new ones here): the tick runs on the frame clock whatever the
        // number of legs, and with hundreds of relayed calls a pass over every leg with
        // its lookups was most of the tick's time, while readers waited for the worker.
        let mut busy = Vec::new();
        for (&leg, l) in self.legs.iter_mut() {
            let timed_out = l.decoder.timeout().is_some_and(|t| now >= t);
            if timed_out {
                l.decoder.handle_timeout(now);
            }
            if timed_out || l.digit_out.is_some() {
                busy.push(leg);
            }
        }
        for leg in busy {
            self.poll_digits(leg);
            let Some(l) = self.legs.get_mut(&leg) else {
                continue;
            };
            let Some(out) = l.digit_out.as_mut() else {
                continue;
            };
            let packet = match out.release {
                Release::AfterTicks(1) => {
                    // The release: the end packet carries the full duration.
                    out.release = Release::Released;
                    let _ = out.encoder.tick();
                    out.encoder.stop()
                }
                Release::AfterTicks(n) => {
                    out.release = Release::AfterTicks(n.saturating_sub(1));
                    out.encoder.tick()
                }
                Release::Held | Release::Released => out.encoder.tick(),
            };
            match packet {
                Some(p) => l.send_event(p),
                None => {
                    l.digit_out = None;
                    Self::next_digit(l);
                }
            }
        }
        self.send_reports(now);
        self.check_inactivity(now);
    }

    /// Legs whose far end went silent for longer than their timeout: reported once to
    /// call control, which ends the call (BYE on the leg).
    fn check_inactivity(&mut self, now: Instant) {
        for (&leg, l) in self.legs.iter_mut() {
            if l.inactivity.limit().is_none() {
                continue; // not watched: nothing to fold in or check
            }
            // RTP accepted since the last tick (by the engine or the reader).
            let (last_rx, rtp_in) = {
                let g = lock(&l.rx);
                (g.last_rx, g.counters.rtp_in)
            };
            if let Some(at) = last_rx {
                l.inactivity.on_packet(at);
            }
            let held = l.inactivity.watch() == Watch::Held;
            let Some(silence) = l.inactivity.poll(now) else {
                continue;
            };
            tracing::warn!(
                %leg,
                silence_s = silence.as_secs_f64(),
                held,
                rtp_in,
                "no RTP or RTCP from the far end: media timeout"
            );
            // The receiver gone means call control has stopped (shutting down).
            let _ = self.sip_inputs.send(SipInput::MediaTimeout { leg });
        }
    }

    /// RTCP for the legs that end here (bridged to a port, or to nothing: held or not
    /// yet connected). A leg bridged to another leg relays its peer's RTCP instead.
    fn send_reports(&mut self, now: Instant) {
        for (leg, l) in self.legs.iter_mut() {
            if l.media.is_none()
                || matches!(self.peers.get(&MediaEnd::Leg(*leg)), Some(MediaEnd::Leg(_)))
            {
                continue;
            }
            if l.rtcp_schedule.poll(now) {
                let report = l.report(now, &self.cname);
                l.send_rtcp(&report);
            }
        }
    }

    fn snapshot(&self) -> Vec<LegSnapshot> {
        let mut v: Vec<LegSnapshot> = self
            .legs
            .iter()
            .map(|(&leg, l)| {
                let (counters, target, fast_relay) = {
                    let g = lock(&l.rx);
                    (g.counters, g.rtp_latch.target(), g.fast.is_some())
                };
                let bridged_to = self.peers.get(&MediaEnd::Leg(leg)).copied();
                let link = match bridged_to {
                    Some(MediaEnd::Port(p)) => self.port_links.get(&p),
                    _ => None,
                };
                let delay = link.map_or(Duration::ZERO, |k| k.jitter.current_delay());
                LegSnapshot {
                    leg,
                    local: l.local,
                    remote: l.media.and(target),
                    bridged_to,
                    media: l.media,
                    packets_in: counters.rtp_in,
                    packets_out: counters.rtp_out,
                    invalid: counters.invalid,
                    foreign: counters.foreign,
                    dropped: counters.dropped + self.queue_dropped.load(Ordering::Relaxed),
                    rtcp_in: counters.rtcp_in,
                    rtcp_out: counters.rtcp_out,
                    remote_report: l.remote_report,
                    quality: l.quality(delay),
                    jitter_buffer: link.map(|k| k.jitter.stats()),
                    passthrough: l.passthrough,
                    fast_relay,
                }
            })
            .collect();
        v.sort_by_key(|s| s.leg);
        v
    }
}

mod conference;
#[cfg(test)]
mod tests;
