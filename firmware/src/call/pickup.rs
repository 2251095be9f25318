//! Call pickup from analog phones: `*8` picks up a call ringing a phone of the same
//! ring group, `**<extension>` the call ringing that extension's phone (directed).
//!
//! Ring groups are the box's: the extensions of one PSTN line's `inbound` list. `*8`
//! takes the oldest call ringing (not waiting) an FXS phone whose extension shares a
//! list with the picker's; `**<ext>` the call ringing `<ext>`'s FXS phone. The picker
//! answers the call as its callee (the ringing phones stop, offered SIP legs are
//! withdrawn, the CDR names the picker's port). No such call, a queue call (the ACD
//! decides who answers those) or a malformed code: number-unobtainable tone.
//!
//! The codes are fixed. Agent feature codes are matched first, so a configured agent
//! code starting with `*8` or `**` would shadow them (the defaults do not).

use std::time::Instant;

use crate::cdr::{Direction, Disposition};
use crate::tones::Tone;

use super::{CallControl, CallKey, CallPhase, Fxs, Party};

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
        if self.fxs_port_of(ext).is_some() {
            return PickupDigits::Directed(ext.to_owned());
        }
        let prefix = self
            .settings
            .extensions
            .iter()
            .any(|e| e.number.starts_with(ext));
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
        let key = match &what {
            PickupDigits::Group => self.group_pickup_target(port),
            PickupDigits::Directed(ext) => {
                self.fxs_port_of(ext)
                    .and_then(|target| match self.fxs_state(target) {
                        Some(Fxs::Ringing(key)) => Some(key),
                        _ => None,
                    })
            }
            _ => None,
        };
        let key = key.filter(|k| {
            self.calls
                .get(k)
                .is_some_and(|c| c.phase == CallPhase::Alerting && c.queue.is_none())
        });
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

    /// The oldest call ringing an FXS phone in a ring group with `port`'s extension.
    fn group_pickup_target(&self, port: u8) -> Option<CallKey> {
        let me = self.port_number(port);
        let groups: Vec<&Vec<String>> = self
            .settings
            .fxo_lines
            .iter()
            .map(|l| &l.inbound)
            .filter(|g| g.contains(&me))
            .collect();
        self.fxs
            .iter()
            .filter_map(|(&p, s)| match s.state {
                Fxs::Ringing(key) if p != port => Some((key, self.port_number(p))),
                _ => None,
            })
            .filter(|(_, number)| groups.iter().any(|g| g.contains(number)))
            .map(|(key, _)| key)
            .min()
    }
}
