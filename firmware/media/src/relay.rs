//! Symmetric RTP latching (sans-IO), used by the daemon's media engine
//! (`branchline_firmware::media_engine`, which owns the legs' sockets and relays
//! leg-to-leg bridges).
//!
//! [`Latch`] decides where a leg's media goes. It starts at the address from SDP (if
//! any); the first valid RTP packet (parses, negotiated payload type, the expected SSRC
//! when one is known) latches the leg to the address it came from, which is what phones
//! behind NAT need. A packet from another address re-latches only when the latched
//! source has been silent for [`LatchConfig::guard`], or, if
//! [`LatchConfig::relatch_on_ssrc_change`] is set, when it brings a new SSRC. Other
//! packets from foreign addresses are dropped (this is the defence against RTP
//! injection/"RTP bleed"; turning on SSRC re-latching weakens it for peers that switch
//! address mid-call).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Latching policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatchConfig {
    /// A new source address is accepted once the latched one has been silent this long.
    pub guard: Duration,
    /// Re-latch at once when a packet from a new address carries a new SSRC.
    pub relatch_on_ssrc_change: bool,
}

impl Default for LatchConfig {
    fn default() -> Self {
        LatchConfig {
            guard: Duration::from_secs(2),
            relatch_on_ssrc_change: false,
        }
    }
}

/// What the latch made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchDecision {
    /// From the latched source.
    Accept,
    /// The leg is now latched to this address (first packet or re-latch).
    Latched(SocketAddr),
    /// From a foreign address, or not acceptable: drop.
    Reject,
}

#[derive(Debug, Clone, Copy)]
struct Latched {
    addr: SocketAddr,
    ssrc: Option<u32>,
    last_seen: Instant,
}

/// Symmetric RTP latching for one leg (sans-IO).
#[derive(Debug, Clone)]
pub struct Latch {
    config: LatchConfig,
    signalled: Option<SocketAddr>,
    expected_ssrc: Option<u32>,
    latched: Option<Latched>,
}

impl Latch {
    /// A latch that sends to `signalled` (from SDP) until media arrives.
    pub fn new(
        config: LatchConfig,
        signalled: Option<SocketAddr>,
        expected_ssrc: Option<u32>,
    ) -> Self {
        Latch {
            config,
            signalled,
            expected_ssrc,
            latched: None,
        }
    }

    /// New SDP address (re-INVITE); the next valid packet latches again.
    pub fn set_signalled(&mut self, addr: Option<SocketAddr>) {
        self.signalled = addr;
        self.latched = None;
    }

    /// Where to send: the latched address, else the signalled one.
    pub fn target(&self) -> Option<SocketAddr> {
        self.latched.map(|l| l.addr).or(self.signalled)
    }

    /// True once media has latched.
    pub fn is_latched(&self) -> bool {
        self.latched.is_some()
    }

    /// A valid packet (already parsed, payload type checked) from `from` with `ssrc`
    /// (`None` for RTCP, which latches by address only).
    pub fn on_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ssrc: Option<u32>,
    ) -> LatchDecision {
        match self.latched.as_mut() {
            None => {
                if let (Some(want), Some(got)) = (self.expected_ssrc, ssrc) {
                    if want != got {
                        return LatchDecision::Reject;
                    }
                }
                self.latched = Some(Latched {
                    addr: from,
                    ssrc,
                    last_seen: now,
                });
                LatchDecision::Latched(from)
            }
            Some(l) if l.addr == from => {
                l.last_seen = now;
                if ssrc.is_some() {
                    l.ssrc = ssrc;
                }
                LatchDecision::Accept
            }
            Some(l) => {
                let quiet = now.saturating_duration_since(l.last_seen) >= self.config.guard;
                let new_ssrc = self.config.relatch_on_ssrc_change
                    && ssrc.is_some()
                    && l.ssrc.is_some()
                    && ssrc != l.ssrc;
                if quiet || new_ssrc {
                    *l = Latched {
                        addr: from,
                        ssrc: ssrc.or(l.ssrc),
                        last_seen: now,
                    };
                    LatchDecision::Latched(from)
                } else {
                    LatchDecision::Reject
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
