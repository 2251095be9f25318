//! Feature codes dialled from SIP phones.
//!
//! An analog phone dials a feature code digit by digit (`queue::feature_digits`); a SIP
//! phone sends the whole string in one INVITE (`sip:*611001*1234%23@box`, the endpoint
//! decodes the `%23`). An INVITE from a local phone whose number is an agent feature
//! code never reaches the dial plan; it is carried out on the phone's extension like
//! the same code dialled on an FXS port, without a call or a CDR:
//!
//! - a complete code is carried out; a log-in first waits for the PIN check
//!   ([`super::Output::CheckAgentPin`]), the leg left unanswered meanwhile (the phone
//!   already had 100 Trying);
//! - done: the leg is answered and hears the confirmation tone for [`CONFIRMATION`],
//!   then the box hangs up (the phone may hang up sooner);
//! - refused (wrong PIN, agent locked out, no agent logged in on this phone, the
//!   agent busy elsewhere): `403 Forbidden`, which the phone shows;
//! - malformed (a log-in without its PIN, letters in a reason code) or still incomplete
//!   after the `#`: `404 Not Found`, as for a number that does not exist.
//!
//! Phones commonly take `#` as their "send" key and do not transmit it, so a code that
//! lacks only its final `#` is taken as dialled with it.

use std::time::{Duration, Instant};

use crate::acd::codes::Parsed;
use crate::prompts::{Playback, Sound};
use crate::tones::Tone;

use super::{CallControl, EndReason, LegId, MediaEnd, Output};

/// How long a SIP phone hears the confirmation tone before the box hangs up.
pub const CONFIRMATION: Duration = Duration::from_secs(2);

/// A SIP phone's leg that dialled a feature code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FeatureLeg {
    /// When the box hangs up: set once the code is done and the confirmation plays;
    /// `None` while the code waits for its PIN check.
    hang_up_at: Option<Instant>,
}

impl CallControl {
    /// An incoming call from the local SIP phone of `extension` to `dialled`: when that
    /// is an agent feature code, carries it out and returns true (the leg is this
    /// module's from now on); false: not a feature code, route the call.
    pub(super) fn sip_feature_code(
        &mut self,
        now: Instant,
        leg: LegId,
        extension: &str,
        dialled: &str,
    ) -> bool {
        let Some(center) = self.center.as_ref() else {
            return false;
        };
        let parsed = match center.parse_code(dialled) {
            Ok(Parsed::Incomplete) => center.parse_code(&format!("{dialled}#")),
            other => other,
        };
        let request = match parsed {
            Ok(Parsed::NotACode) => return false,
            Ok(Parsed::Request(request)) => request,
            Ok(Parsed::Incomplete) => {
                tracing::info!(%leg, extension, "incomplete feature code from a SIP phone");
                self.sip_feature_refused(leg, EndReason::Unallocated);
                return true;
            }
            Err(e) => {
                tracing::info!(%leg, extension, error = %e, "feature code refused");
                self.sip_feature_refused(leg, EndReason::Unallocated);
                return true;
            }
        };
        self.feature_legs
            .insert(leg, FeatureLeg { hang_up_at: None });
        self.feature_request(now, super::Party::Sip(leg), extension.to_owned(), request);
        true
    }

    /// The outcome of the feature code leg `leg` dialled (see `queue::feature_done`).
    pub(super) fn sip_feature_done(&mut self, now: Instant, leg: LegId, ok: bool) {
        let Some(feature) = self.feature_legs.get_mut(&leg) else {
            // The phone gave up before the outcome (a CANCEL): nothing left to tell.
            return;
        };
        if !ok {
            self.feature_legs.remove(&leg);
            return self.sip_feature_refused(leg, EndReason::Forbidden);
        }
        feature.hang_up_at = Some(now + CONFIRMATION);
        self.outputs.push_back(Output::SipAnswer { leg });
        self.outputs.push_back(Output::Play {
            end: MediaEnd::Leg(leg),
            playback: Playback::looped(Sound::Tone(Tone::Confirmation)),
        });
    }

    fn sip_feature_refused(&mut self, leg: LegId, reason: EndReason) {
        self.outputs.push_back(Output::SipHangup { leg, reason });
    }

    /// The feature code leg `leg` ended from the phone's side (hang-up or CANCEL).
    /// Returns false when `leg` is not a feature code's.
    pub(super) fn sip_feature_leg_ended(&mut self, leg: LegId) -> bool {
        let Some(feature) = self.feature_legs.remove(&leg) else {
            return false;
        };
        if feature.hang_up_at.is_some() {
            self.outputs.push_back(Output::StopPlay {
                end: MediaEnd::Leg(leg),
            });
        }
        true
    }

    /// When the next confirmation ends.
    pub(super) fn feature_timeout(&self) -> Option<Instant> {
        self.feature_legs
            .values()
            .filter_map(|f| f.hang_up_at)
            .min()
    }

    /// Hangs up the feature code legs whose confirmation has played (all of them at
    /// shutdown, `now` = `None`, with the legs still waiting for their PIN check).
    pub(super) fn feature_legs_due(&mut self, now: Option<Instant>) {
        let due: Vec<LegId> = self
            .feature_legs
            .iter()
            .filter(|(_, f)| match now {
                Some(now) => f.hang_up_at.is_some_and(|t| t <= now),
                None => true,
            })
            .map(|(&leg, _)| leg)
            .collect();
        for leg in due {
            let Some(feature) = self.feature_legs.remove(&leg) else {
                continue;
            };
            let reason = if feature.hang_up_at.is_some() {
                self.outputs.push_back(Output::StopPlay {
                    end: MediaEnd::Leg(leg),
                });
                EndReason::Normal
            } else {
                EndReason::Congestion
            };
            self.outputs.push_back(Output::SipHangup { leg, reason });
        }
    }
}
