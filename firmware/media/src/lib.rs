//! Media for branchd: RTP/RTCP, jitter buffer, RFC 4733 telephone-events, PLC, call
//! quality statistics, and the UDP edge that relays RTP between call legs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dtmf;
pub mod error;
pub mod fax;
pub mod jitter;
pub mod plc;
pub mod rtcp;
pub mod rtp;

pub use error::{Error, Result};
