//! Which way an outside call goes: the survivability rule.
//!
//! Outside calls prefer the SIP trunk while the WAN monitor ([`crate::sync::wan`])
//! says the trunk is reachable, and fall back to the FXO (PSTN) lines otherwise; when
//! the box has no trunk, FXO is the only way. [`outside_routes`] is the decision, a
//! pure function; [`super::CallControl`] takes the candidates in order and places the
//! call on the first one it can.
//!
//! A [`OutsideVia::SipTrunk`] candidate becomes an outgoing trunk leg
//! ([`super::SipTarget::Trunk`]); when that leg fails with congestion before it is
//! answered (trunk unreachable, 503), the call moves on to the next candidate (an FXO
//! line). Other failures (busy, not found) end the call: the far end answered.

/// What the WAN monitor knows about the SIP trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrunkStatus {
    /// The box has no SIP trunk.
    #[default]
    NotConfigured,
    /// The trunk answers (WAN online or degraded).
    Usable,
    /// The trunk does not answer (WAN offline for the trunk).
    Unusable,
}

/// A way out of the box for an outside call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutsideVia {
    /// The SIP trunk.
    SipTrunk,
    /// An FXO line to the PSTN.
    Fxo,
}

/// The ways to try for an outside call, in order.
pub fn outside_routes(trunk: TrunkStatus) -> &'static [OutsideVia] {
    match trunk {
        TrunkStatus::Usable => &[OutsideVia::SipTrunk, OutsideVia::Fxo],
        TrunkStatus::Unusable | TrunkStatus::NotConfigured => &[OutsideVia::Fxo],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trunk_comes_first_only_while_it_is_usable() {
        assert_eq!(
            outside_routes(TrunkStatus::Usable),
            [OutsideVia::SipTrunk, OutsideVia::Fxo]
        );
        assert_eq!(outside_routes(TrunkStatus::Unusable), [OutsideVia::Fxo]);
        assert_eq!(
            outside_routes(TrunkStatus::NotConfigured),
            [OutsideVia::Fxo]
        );
    }
}
