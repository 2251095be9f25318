//! Media for branchd: everything between an analog port's 20 ms G.711 frames and a SIP
//! peer's RTP.
//!
//! Sans-IO cores (inputs carry `now`, no sockets or clocks inside):
//! - [`rtp`]: RTP parse/build over rtp-rs with per-field validation, payload types
//!   (PCMU 0, PCMA 8, CN 13, negotiated telephone-event), outgoing stream state (SSRC,
//!   sequence numbers, timestamps, marker at talkspurt start; ptime 10/20/30 ms).
//! - [`jitter`]: adaptive jitter buffer towards the analog ports (reorder, duplicates,
//!   late packets, wrap-around, SSRC change, talkspurt resync, drift), with a fixed mode
//!   for fax/modem passthrough.
//! - [`plc`]: G.711 Appendix I style packet loss concealment on linear PCM.
//! - [`dtmf`]: RFC 4733 telephone-event encoder/decoder, mapping to line-controller
//!   digits, in-band DTMF detection (Goertzel) for FXO callers, and a DTMF tone
//!   player for digits received towards phones.
//! - [`fax`]: CED/CNG detection that switches a call to passthrough.
//! - [`progress`]: busy and congestion tone detection on a PSTN line (cadence-matched).
//! - [`mix`]: the N-party conference mixer (per-member "who hears whom": talker,
//!   listener, whisperer) for meet-me rooms and supervisor listen / whisper / barge.
//! - [`echo`]: the echo test's delay line (a caller hears themselves 0.5 s late).
//! - [`rtcp`]: SR/RR/BYE build and parse, the report schedule, RFC 3550 receiver
//!   statistics, RTT, E-model R-factor/MOS ([`rtcp::CallQuality`]).
//! - [`relay`]: symmetric RTP latching (where a leg's media goes; foreign sources
//!   dropped). The relaying itself is the daemon's media engine
//!   (`branchline_firmware::media_engine`).
//! - [`inactivity`]: the media inactivity timer that ends a call whose far end went
//!   silent (no RTP/RTCP for `rtp_timeout_s`, or `rtp_hold_timeout_s` on hold).
//!
//! IO edge (tokio):
//! - [`port`]: RTP/RTCP port pairs from a configured range, released on drop.
//!
//! Current limits: G.711 only (no transcoding to other codecs, no T.38, no SRTP); the
//! RTCP schedule is the fixed 5 s one of a two-party session; the mixer has no gain
//! control. Each module documents its own.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dtmf;
pub mod echo;
pub mod error;
pub mod fax;
pub mod inactivity;
pub mod jitter;
pub mod mix;
pub mod plc;
pub mod port;
pub mod progress;
pub mod relay;
pub mod rtcp;
pub mod rtp;

pub use error::{Error, MixError, Result};
