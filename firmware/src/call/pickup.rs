//! Call pickup: `*8` picks up a call ringing a phone of the same ring group,
//! `**<extension>` the call ringing that extension's phones (directed), dialled from an
//! analog phone or sent by a local SIP phone as the INVITE's number.
//!
//! Ring groups are the box's: the extensions of one PSTN line's `inbound` list. `*8`
//! takes the oldest call ringing (not waiting) a phone, analog or SIP, whose extension
//! shares a list with the picker's; `**<ext>` the oldest call ringing `<ext>`'s FXS
//! phone or offered to its SIP phones. The picker answers the call as its callee (the
//! ringing phones stop, offered SIP legs are withdrawn with CANCEL, the CDR names the
//! picker). A SIP picker's INVITE is answered (`200`) and its leg bridged to the
//! caller. No such call, a queue call (the ACD decides who answers those) or a
//! malformed code: number-unobtainable tone for an analog phone; for a SIP phone the
//! code goes on to the dial plan, which answers `404` as for any unknown number.
//!
//! The codes are fixed. Agent feature codes are matched first, so a configured agent
//! code starting with `*8` or `**` would shadow them (the defaults do not).

use std::time::Instant;

use crate::cdr::{Direction, Disposition};
use crate::tones::Tone;

use super::{CallControl, CallKey, CallPhase, Fxs, LegId, LegInfo, Output, Party};

/// Group pickup.
pub const GROUP_PICKUP: &str = "*8";
/// Directed pickup prefix, followed by the extension.
pub const DIRECTED_PICKUP: &str = "**";

/// What the digits dialled so far mean for pickup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PickupDigits {
    NotPickup,
    Incomplete,
    Group,
    Directed(String),
    /// `**` followed by something that is no extension.
    Bad,
}

impl CallControl {
    pub(super) fn pickup_digits(&self, digits: &str) -> PickupDigits {
        if digits == GROUP_PICKUP {
            return PickupDigits::Group;
        }
        let Some(ext) = digits.strip_prefix(DIRECTED_PICKUP) else {
            return if DIRECTED_PICKUP.starts_with(digits) || GROUP_PICKUP.starts_with(digits) {
                PickupDigits::Incomplete
            } else {
                PickupDigits::NotPickup
            };
        };
        if self.fxs_port_of(ext).is_some() || self.is_sip_extension(ext) {
            return PickupDigits::Directed(ext.to_owned());
        }
        let prefix = self
            .settings
            .extensions
            .iter()
            .map(|e| &e.number)
            .chain(self.settings.sip_extensions.iter().map(|e| &e.number))
            .any(|n| n.starts_with(ext));
        if prefix {
            PickupDigits::Incomplete
        } else {
            PickupDigits::Bad
        }
    }

    /// FXS `port` (dialling since `started`) asked for a pickup.
    pub(super) fn pickup(
        &mut self,
        now: Instant,
        port: u8,
        started: Instant,
        what: PickupDigits,
        digits: String,
    ) {
        let key = self.pickup_target(&what, &self.port_number(port));
        let Some(key) = key else {
            tracing::info!(port, code = digits, "call pickup: nothing to pick up");
            self.lockout(now, port, Tone::Unobtainable);
            return self.failed_cdr(
                now,
                port,
                started,
                digits,
                Direction::Internal,
                Disposition::Unallocated,
            );
        };
        tracing::info!(port, call = key, code = digits, "call picked up");
        self.set_fxs(port, Fxs::Idle);
        self.answer(now, key, Party::Fxs(port));
    }

    /// A local SIP phone of extension `ext` sent an INVITE for `dialled`: when that is a
    /// pickup code with a call to pick up, the leg answers that call and this returns
    /// true; false: route `dialled` as usual (a code with nothing to pick up ends as
    /// an unknown number there).
    pub(super) fn sip_pickup(
        &mut self,
        now: Instant,
        leg: LegId,
        ext: &str,
        dialled: &str,
        sip_call_id: &str,
    ) -> bool {
        let code = dialled.trim_end_matches('#');
        let what = self.pickup_digits(code);
        if !matches!(what, PickupDigits::Group | PickupDigits::Directed(_)) {
            return false;
        }
        let Some(key) = self.pickup_target(&what, ext) else {
            tracing::info!(%leg, code, "call pickup from a SIP phone: nothing to pick up");
            return false;
        };
        tracing::info!(%leg, call = key, code, "call picked up by a SIP phone");
        self.legs.insert(
            leg,
            LegInfo {
                call: key,
                number: ext.to_owned(),
                sip_call_id: sip_call_id.to_owned(),
                far_held: false,
                phone: true,
            },
        );
        self.outputs.push_back(Output::SipAnswer { leg });
        self.answer(now, key, Party::Sip(leg));
        true
    }

    /// The call `what` picks up for the phone of extension `me`: the oldest direct
    /// call still ringing (not waiting) a phone of the directed extension, or of an
    /// extension sharing a ring group with `me` (not `me` itself).
    fn pickup_target(&self, what: &PickupDigits, me: &str) -> Option<CallKey> {
        let groups: Vec<&Vec<String>> = self
            .settings
            .fxo_lines
            .iter()
            .map(|l| &l.inbound)
            .filter(|g| g.iter().any(|n| n == me))
            .collect();
        let wanted = |number: &str| match what {
            PickupDigits::Directed(ext) => number == ext,
            PickupDigits::Group => {
                number != me && groups.iter().any(|g| g.iter().any(|n| n == number))
            }
            _ => false,
        };
        self.calls
            .iter()
            .filter(|(_, c)| c.phase == CallPhase::Alerting && c.queue.is_none())
            .filter(|(&key, c)| {
                let ports = c
                    .ringing
                    .iter()
                    .filter(|&&p| self.fxs_state(p) == Some(Fxs::Ringing(key)))
                    .map(|&p| self.port_number(p));
                let phones = c
                    .ringing_legs
                    .iter()
                    .filter_map(|l| self.legs.get(l).filter(|i| i.phone))
                    .map(|i| i.number.clone());
                ports.chain(phones).any(|n| wanted(&n))
            })
            .map(|(&key, _)| key)
            .min()
    }
}
