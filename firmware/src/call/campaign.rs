//! Progressive campaign calls: the box dials a lead for a reserved agent and connects
//! the lead to the agent when the lead answers ([`CallControl::campaign_dial`]; the
//! daemon's campaign driver, `crate::campaign::driver`, decides whom to dial).
//!
//! How a campaign call goes:
//! 1. The agent must be logged in and available, and their phone free. The ACD
//!    reserves them ([`crate::acd::Input::OutboundReserved`]: the agent is on this
//!    call from now on, so no queue call is offered to them while the lead rings).
//! 2. The lead's number goes out on the outside routes as any outside call does
//!    ([`super::DialRoutes::routes_for`]: HQ's matching dial route, else the built-in
//!    rule): a leg on the SIP trunk while it is usable, with the
//!    campaign's caller ID (or, without one, the agent's extension, which the trunk's
//!    caller-ID rules map like a call the agent dialled); when the trunk is not usable,
//!    or its leg fails with congestion, a free FXO line is seized and dialled (the
//!    PSTN line's own caller ID goes out). The lead rings for the campaign's ring
//!    timeout.
//! 3. The lead answers (the trunk leg's 200, or the FXO line's polarity reversal):
//!    the lead's leg or line becomes the caller of a call to the agent's
//!    extension, placed like a blind transfer's transferee (the leg is up already):
//!    the agent's phone rings with the lead's number as caller ID (so the agent's
//!    desktop gets its `ringing` event and customer screen pop, as for any direct
//!    call to an agent's phone), and the lead hears ringback (a looped ringback tone
//!    played to the leg) until the agent answers; then both are bridged.
//!
//! Why a call to the agent's extension and not an ACD offer: the agent is already
//! chosen and reserved, so the ACD has nothing left to decide, and ringing an
//! extension is the existing path that rings FXS ports and SIP phones alike, with the
//! box's ring timeout, desktop events and CDR.
//!
//! The attempt's outcome ([`Output::CampaignOutcome`]) is read from the call:
//! - the agent answered the connected lead: `answered`;
//! - the lead's leg ended before answer: `busy` (486), `no_answer` (480/408, or the
//!   campaign's ring timeout passed: the box cancels the leg or releases the line),
//!   `failed` (anything else: not found, congestion with no FXO line to fall back
//!   on, refused, a line fault, or no route out at all);
//! - the lead answered but the agent did not take the call (their phone did not
//!   answer within the box's ring timeout, was busy, or the agent's leg failed):
//!   `failed`, so the lead is tried again after the campaign's failed-call spacing;
//!   the lead hears ringback and then the call is hung up. Its CDR is the normal one
//!   of that unanswered call (`no_answer` or `busy`).
//!
//! An unanswered attempt gets a CDR of its own (an outbound call from the agent's
//! extension, or the campaign's caller ID, to the lead's number, with the
//! disposition of the leg's end); a connected one is the CDR of the call from the
//! lead's number to the agent's extension (direction `outbound`, answered). Either
//! way the call id is the one [`CallControl::campaign_dial`] returned. The agent is
//! released ([`crate::acd::Input::OutboundEnded`]) when the call is over, whatever
//! its outcome.
//!
//! On an FXO line the exchange signals busy and congestion with tones only: while a
//! lead rings there the board loop listens to the line for the country's busy and
//! congestion tones ([`Output::DetectProgress`], [`branchline_media::progress`]:
//! frequencies and cadence, about 2 s of tone); a busy tone ends the attempt `busy`
//! (CDR busy, hung up by the callee), a congestion tone `failed` (CDR congestion), and
//! the line is released at once instead of at the ring timeout.
//!
//! Limits: on an FXO line the answer is the polarity reversal, so a PSTN line that
//! does not signal answer never connects (the attempt ends `no_answer` at the ring
//! timeout). Calling permissions are the agent's extension's (its phone's
//! `permissions`; see [`super::outside`]): a lead whose dial route needs one the
//! phone lacks fails at once (`failed`, CDR `congestion` with `hangup_cause`
//! `route_not_permitted`), never on a less specific route. A lead still ringing counts in
//! [`CallControl::active_calls`] (a restart for an update waits for it) but is not in
//! [`CallControl::snapshot`] (the web page's calls) until it answered.

use std::time::{Duration, Instant};

use crate::acd::{AgentId, AgentState, CallId, Input};
use crate::campaign::Outcome;
use crate::cdr::{Direction, Disposition, HangupSide};
use crate::prompts::{Playback, Sound};
use crate::tones::Tone;

use branchline_media::progress::ProgressTone;
use line_proto::Command;

use super::{
    Call, CallControl, CallKey, EndReason, LegId, LegInfo, MediaEnd, Output, OutsideVia, Party,
    PortState, SipTarget, MAX_OUTSIDE_DIGITS,
};

/// What the campaign driver asks call control to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignDial {
    /// The attempt (`lead_attempts.id`): every [`Output::CampaignOutcome`] names it.
    pub attempt: i64,
    /// The agent reserved for it.
    pub agent: AgentId,
    /// The lead's number (an outside number, without the outside-line prefix).
    pub number: String,
    /// The caller ID presented; empty for the agent's extension (mapped by the
    /// trunk's caller-ID rules).
    pub caller_id: String,
    /// How long the lead rings before the attempt counts as no answer.
    pub ring_timeout: Duration,
}

/// Why [`CallControl::campaign_dial`] refused: nothing was dialled and nothing
/// changed (the attempt never became a call).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CampaignDialError {
    /// The box has no call center (no agents).
    #[error("no call center is configured")]
    NoCallCenter,
    /// No such agent, or the agent is not logged in and available, or their phone is
    /// in use.
    #[error("agent {agent} is not free: {why}")]
    AgentNotFree {
        /// The agent.
        agent: AgentId,
        /// Why.
        why: String,
    },
    /// The number is not 1 to 15 digits (or a `+` number the site cannot dial).
    #[error("{0:?} is not an outside number (1 to 15 digits 0-9, or + and E.164 digits)")]
    BadNumber(String),
}

/// A lead's leg still ringing (not answered yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LeadLeg {
    /// The call's key (the connected call keeps it).
    key: CallKey,
    attempt: i64,
    agent: AgentId,
    /// The agent's extension, rung when the lead answers.
    extension: String,
    /// The lead's number.
    number: String,
    /// The caller ID the leg was placed with.
    caller_number: String,
    started: Instant,
    /// The campaign's ring timeout runs out.
    deadline: Instant,
    /// The campaign's ring timeout (again from the start on an FXO line).
    ring_timeout: Duration,
    /// An FXO line is the next route when the trunk leg fails with congestion.
    fxo_next: bool,
}

/// A lead connected (or being connected) to its agent, by the call's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CampaignCall {
    attempt: i64,
    agent: AgentId,
    /// The lead's end (its trunk leg or FXO line).
    lead: MediaEnd,
    /// The agent answered (the outcome was given).
    answered: bool,
}

/// Whether `number` is something the trunk can dial.
fn dialable(number: &str) -> bool {
    !number.is_empty()
        && number.len() <= MAX_OUTSIDE_DIGITS
        && number.bytes().all(|b| b.is_ascii_digit())
}

impl CallControl {
    /// Dials `dial.number` for agent `dial.agent` (see the module docs). Returns the
    /// call's id (its CDR's, and the one of the agent's state while reserved). When no
    /// route is there the attempt is a call that failed at once: the id comes back,
    /// with a `failed` outcome and a `congestion` CDR already in the outputs.
    pub fn campaign_dial(
        &mut self,
        now: Instant,
        dial: CampaignDial,
    ) -> Result<String, CampaignDialError> {
        // A `+` number goes out in the site's national or international form, as
        // click-to-dial sends it.
        let number = if dial.number.starts_with('+') {
            super::e164_dialable(self.settings.country, &dial.number)
                .map_err(|_| CampaignDialError::BadNumber(dial.number.clone()))?
        } else {
            dial.number.clone()
        };
        if !dialable(&number) {
            return Err(CampaignDialError::BadNumber(dial.number));
        }
        let not_free = |why: &str| CampaignDialError::AgentNotFree {
            agent: dial.agent.clone(),
            why: why.to_owned(),
        };
        let acd = self.acd().ok_or(CampaignDialError::NoCallCenter)?;
        let (state, _, extension) = acd.agent(&dial.agent).ok_or_else(|| not_free("unknown"))?;
        if *state != AgentState::Available {
            return Err(not_free(state.name()));
        }
        let extension = extension
            .ok_or_else(|| not_free("no extension"))?
            .to_owned();
        let phone_free = match self.fxs_port_of(&extension) {
            Some(port) => self
                .fxs
                .get(&port)
                .is_some_and(|p| p.state == super::Fxs::Idle && !p.off_hook),
            None => !self.legs.values().any(|l| l.phone && l.number == extension),
        };
        if !phone_free {
            return Err(not_free("the phone is in use"));
        }
        let key = self.take_key();
        let id = format!("{}-{}", self.settings.call_id_prefix, key);
        if let Some(Err(e)) = self.acd_input(
            now,
            Input::OutboundReserved {
                call: CallId(key),
                agent: dial.agent.clone(),
            },
        ) {
            return Err(not_free(&e.to_string()));
        }
        let caller_number = if dial.caller_id.is_empty() {
            extension.clone()
        } else {
            dial.caller_id.clone()
        };
        let lead = LeadLeg {
            key,
            attempt: dial.attempt,
            agent: dial.agent,
            extension,
            number,
            caller_number,
            started: now,
            deadline: now + dial.ring_timeout,
            ring_timeout: dial.ring_timeout,
            fxo_next: false,
        };
        tracing::info!(
            call = id,
            attempt = lead.attempt,
            agent = %lead.agent,
            extension = lead.extension,
            "campaign: dialling a lead for a reserved agent"
        );
        // The call talks on the agent's extension: it holds that phone's calling
        // permissions, and a route needing another is refused (not passed on).
        let held = self.extension_permissions(&lead.extension);
        let routes = match self.dial_routes.decide(&lead.number, self.trunk, &held) {
            Ok(routes) => routes,
            Err(refused) => {
                tracing::warn!(
                    call = id,
                    attempt = lead.attempt,
                    extension = lead.extension,
                    route = refused.route,
                    permission = refused.permission,
                    "campaign: the dial route needs a calling permission the agent's phone lacks; the attempt fails"
                );
                self.lead_ended(
                    now,
                    None,
                    lead,
                    Disposition::Congestion,
                    HangupSide::System,
                    Some(super::HangupCause::RouteNotPermitted),
                );
                return Ok(id);
            }
        };
        match routes.first() {
            None => {
                tracing::warn!(
                    attempt = lead.attempt,
                    "campaign: the dial route allows only the SIP trunk, which is unusable; the attempt fails"
                );
                self.lead_failed(now, None, lead, Disposition::Congestion, HangupSide::System);
                return Ok(id);
            }
            // An FXO line first: the trunk is not tried after it (an answered or
            // ringing line gives no failure to move on from).
            Some(OutsideVia::Fxo) => {
                self.lead_on_line(now, lead);
                return Ok(id);
            }
            Some(OutsideVia::SipTrunk) => {}
        }
        let mut lead = lead;
        lead.fxo_next = routes.contains(&OutsideVia::Fxo);
        let n = self.next_leg;
        self.next_leg += 1;
        let leg = LegId(LegId::OUTGOING | n);
        let sip_call_id = format!("{id}-{n}@{}", self.settings.sip_host);
        self.legs.insert(
            leg,
            LegInfo {
                call: key,
                number: lead.number.clone(),
                sip_call_id: sip_call_id.clone(),
                far_held: false,
                phone: false,
            },
        );
        self.outputs.push_back(Output::SipDial {
            leg,
            target: SipTarget::Trunk(lead.number.clone()),
            caller_number: lead.caller_number.clone(),
            caller_name: String::new(),
            sip_call_id,
        });
        self.lead_legs.insert(leg, lead);
        Ok(id)
    }

    /// Dials the lead on a free FXO line (the trunk is not usable, or its leg failed
    /// with congestion); the attempt fails (congestion) when no line is free. The
    /// line's polarity reversal is the lead's answer.
    fn lead_on_line(&mut self, now: Instant, mut lead: LeadLeg) {
        let dial = Command::fxo_dial(&lead.number);
        let (Some(line), Some(dial)) = (self.free_fxo_line(), dial) else {
            tracing::warn!(
                attempt = lead.attempt,
                "campaign: no usable route out (trunk or FXO line); the attempt fails"
            );
            return self.lead_failed(now, None, lead, Disposition::Congestion, HangupSide::System);
        };
        if let Some(f) = self.fxo.get_mut(&line) {
            f.call = Some(lead.key);
        }
        lead.deadline = now + lead.ring_timeout;
        tracing::info!(
            line,
            attempt = lead.attempt,
            "campaign: dialling the lead on an FXO line"
        );
        self.cmd(line, Command::FxoSeize);
        self.cmd(line, dial);
        self.port_state(line, PortState::Calling);
        self.lead_lines.insert(line, lead);
        // The exchange says "busy" or "congestion" only with tones.
        self.outputs.push_back(Output::DetectProgress {
            port: line,
            on: true,
        });
    }

    /// The lead ringing on FXO line `port`, no longer ringing: its tone detection off.
    fn take_lead_line(&mut self, port: u8) -> Option<LeadLeg> {
        let lead = self.lead_lines.remove(&port)?;
        self.outputs
            .push_back(Output::DetectProgress { port, on: false });
        Some(lead)
    }

    /// The line of a lead still ringing on FXO `port` played a busy or congestion tone:
    /// the line is released and the attempt ends `busy` (CDR busy) or `failed` (CDR
    /// congestion). False when the line is not a ringing lead's.
    pub(super) fn lead_line_progress(
        &mut self,
        now: Instant,
        port: u8,
        tone: ProgressTone,
    ) -> bool {
        let Some(lead) = self.take_lead_line(port) else {
            return false;
        };
        self.release_lead_line(port);
        let (disposition, side) = match tone {
            ProgressTone::Busy => (Disposition::Busy, HangupSide::Callee),
            ProgressTone::Congestion => (Disposition::Congestion, HangupSide::System),
        };
        self.lead_failed(now, None, lead, disposition, side);
        true
    }

    /// The FXO line `port` of a lead still ringing, released (by call control).
    fn release_lead_line(&mut self, port: u8) {
        if let Some(f) = self.fxo.get_mut(&port) {
            f.call = None;
        }
        self.cmd(port, Command::FxoRelease);
        self.port_state(port, PortState::Idle);
    }

    /// Polarity reversal on FXO `port`: a lead dialled there answered (true), or the
    /// line is not a lead's (false).
    pub(super) fn lead_line_reversal(&mut self, now: Instant, port: u8) -> bool {
        let Some(lead) = self.take_lead_line(port) else {
            return false;
        };
        self.port_state(port, PortState::Talking);
        self.lead_connected(now, Party::Fxo(port), None, lead);
        true
    }

    /// FXO `port` faulted: a lead dialled there fails (true), or the line is not a
    /// lead's (false).
    pub(super) fn lead_line_fault(&mut self, now: Instant, port: u8) -> bool {
        let Some(lead) = self.take_lead_line(port) else {
            return false;
        };
        if let Some(f) = self.fxo.get_mut(&port) {
            f.call = None;
        }
        self.lead_failed(now, None, lead, Disposition::Congestion, HangupSide::System);
        true
    }

    /// Whether `leg` is a campaign lead's leg still ringing.
    pub(super) fn is_lead_leg(&self, leg: LegId) -> bool {
        self.lead_legs.contains_key(&leg)
    }

    /// The earliest ring timeout of the leads' legs and lines.
    pub(super) fn lead_legs_timeout(&self) -> Option<Instant> {
        self.lead_legs
            .values()
            .chain(self.lead_lines.values())
            .map(|l| l.deadline)
            .min()
    }

    /// The leads whose ring timeout passed: their legs are cancelled, `no_answer`.
    pub(super) fn lead_legs_due(&mut self, now: Instant) {
        let due: Vec<LegId> = self
            .lead_legs
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(&leg, _)| leg)
            .collect();
        for leg in due {
            if let Some(lead) = self.lead_legs.remove(&leg) {
                let end = (leg, Some(EndReason::NoAnswer));
                self.lead_failed(
                    now,
                    Some(end),
                    lead,
                    Disposition::NoAnswer,
                    HangupSide::System,
                );
            }
        }
        let due: Vec<u8> = self
            .lead_lines
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(&port, _)| port)
            .collect();
        for port in due {
            if let Some(lead) = self.take_lead_line(port) {
                self.release_lead_line(port);
                self.lead_failed(now, None, lead, Disposition::NoAnswer, HangupSide::System);
            }
        }
    }

    /// Shutdown: every lead still ringing is cancelled (`failed`).
    pub(super) fn lead_legs_close_all(&mut self, now: Instant) {
        for (leg, lead) in std::mem::take(&mut self.lead_legs) {
            self.lead_failed(
                now,
                Some((leg, Some(EndReason::Normal))),
                lead,
                Disposition::Congestion,
                HangupSide::System,
            );
        }
        for port in self.lead_lines.keys().copied().collect::<Vec<_>>() {
            let Some(lead) = self.take_lead_line(port) else {
                continue;
            };
            self.release_lead_line(port);
            self.lead_failed(now, None, lead, Disposition::Congestion, HangupSide::System);
        }
    }

    /// The lead's leg ended before it answered, with `reason`.
    pub(super) fn lead_leg_ended(&mut self, now: Instant, leg: LegId, reason: EndReason) {
        let Some(lead) = self.lead_legs.remove(&leg) else {
            return;
        };
        if reason == EndReason::Congestion && lead.fxo_next {
            // The trunk could not take the call: the next route, as any outside call.
            tracing::info!(%leg, attempt = lead.attempt, "campaign: trunk congestion; trying an FXO line");
            self.legs.remove(&leg);
            return self.lead_on_line(now, lead);
        }
        let (disposition, side) = match reason {
            EndReason::Busy => (Disposition::Busy, HangupSide::Callee),
            EndReason::NoAnswer | EndReason::Normal => (Disposition::NoAnswer, HangupSide::Callee),
            EndReason::Unallocated => (Disposition::Unallocated, HangupSide::System),
            EndReason::Congestion | EndReason::Forbidden => {
                (Disposition::Congestion, HangupSide::System)
            }
        };
        self.lead_failed(now, Some((leg, None)), lead, disposition, side);
    }

    /// An attempt that never reached the lead: its CDR (from the agent's extension or
    /// caller ID to the lead), its outcome, and the agent free again. `leg` is the
    /// lead's leg, if one was placed, with the reason to end it with when call control
    /// ends it (`None`: it ended by itself).
    fn lead_failed(
        &mut self,
        now: Instant,
        leg: Option<(LegId, Option<EndReason>)>,
        lead: LeadLeg,
        disposition: Disposition,
        side: HangupSide,
    ) {
        self.lead_ended(now, leg, lead, disposition, side, None);
    }

    /// [`Self::lead_failed`], with the CDR's `hangup_cause`.
    fn lead_ended(
        &mut self,
        now: Instant,
        leg: Option<(LegId, Option<EndReason>)>,
        lead: LeadLeg,
        disposition: Disposition,
        side: HangupSide,
        cause: Option<super::HangupCause>,
    ) {
        let sip_call_id = leg.and_then(|(l, _)| self.legs.get(&l).map(|i| i.sip_call_id.clone()));
        match leg {
            Some((l, Some(reason))) => self.hangup_leg(l, reason),
            Some((l, None)) => {
                self.legs.remove(&l);
            }
            None => {}
        }
        let leg = leg.map(|(l, _)| l);
        let outcome = match disposition {
            Disposition::Busy => Outcome::Busy,
            Disposition::NoAnswer => Outcome::NoAnswer,
            _ => Outcome::Failed,
        };
        // The box placed the call for the agent: the CDR names no port; the leg is
        // the lead's (`LegId::OUTGOING` alone, a number never given to a leg, when
        // no leg was placed).
        let mut call = Call::new(
            Direction::Outbound,
            Party::Sip(leg.unwrap_or(LegId(LegId::OUTGOING))),
            lead.caller_number.clone(),
            self.extension_name(&lead.extension),
            lead.number.clone(),
            lead.started,
        );
        call.id = format!("{}-{}", self.settings.call_id_prefix, lead.key);
        call.callee_sip_call_id = sip_call_id;
        call.hangup_cause = cause;
        tracing::info!(
            call = call.id,
            attempt = lead.attempt,
            outcome = outcome.as_str(),
            "campaign: the lead was not reached"
        );
        self.emit_cdr(now, &call, disposition, side);
        self.outputs.push_back(Output::CampaignOutcome {
            attempt: lead.attempt,
            call_id: call.id.clone(),
            outcome,
        });
        self.release_reserved(now, lead.key, lead.agent);
    }

    /// The lead answered on `leg`: the leg calls the agent's extension (see the
    /// module docs), hearing ringback meanwhile.
    pub(super) fn lead_answered(&mut self, now: Instant, leg: LegId) {
        let Some(lead) = self.lead_legs.remove(&leg) else {
            return;
        };
        let sip_call_id = self.legs.get(&leg).map(|l| l.sip_call_id.clone());
        self.lead_connected(now, Party::Sip(leg), sip_call_id, lead);
    }

    /// The lead answered on `party` (its trunk leg or FXO line): it calls the agent's
    /// extension (see the module docs), hearing ringback meanwhile.
    fn lead_connected(
        &mut self,
        now: Instant,
        party: Party,
        sip_call_id: Option<String>,
        lead: LeadLeg,
    ) {
        tracing::info!(?party, attempt = lead.attempt, agent = %lead.agent, "campaign: the lead answered; ringing the agent");
        let name = self.outside_caller_name(&lead.number, String::new());
        let mut call = Call::new(
            Direction::Outbound,
            party,
            lead.number.clone(),
            name,
            lead.extension.clone(),
            lead.started,
        );
        call.caller_sip_call_id = sip_call_id;
        call.caller_connected = true;
        self.campaign_calls.insert(
            lead.key,
            CampaignCall {
                attempt: lead.attempt,
                agent: lead.agent,
                lead: party.media(),
                answered: false,
            },
        );
        self.outputs.push_back(Output::Play {
            end: party.media(),
            playback: Playback::looped(Sound::Tone(Tone::Ringback)),
        });
        // The agent is on this call for the ACD, so ringing their phone is a direct
        // call to an agent's phone (desktop events, no queue).
        self.reserved_key = Some(lead.key);
        self.call_extension(now, call);
        self.reserved_key = None;
    }

    /// Call `key` is being answered: for a campaign call, the lead stops hearing
    /// ringback and the attempt is `answered`.
    pub(super) fn campaign_answer(&mut self, key: CallKey) {
        let Some(c) = self.campaign_calls.get_mut(&key) else {
            return;
        };
        if c.answered {
            return;
        }
        c.answered = true;
        let (attempt, end) = (c.attempt, c.lead);
        self.outputs.push_back(Output::StopPlay { end });
        let call_id = format!("{}-{}", self.settings.call_id_prefix, key);
        tracing::info!(call = call_id, attempt, "campaign: the agent took the lead");
        self.outputs.push_back(Output::CampaignOutcome {
            attempt,
            call_id,
            outcome: Outcome::Answered,
        });
    }

    /// Call `key` is over: for a campaign call, an agent who never answered makes the
    /// attempt `failed`, and the agent is free again.
    pub(super) fn campaign_call_gone(&mut self, now: Instant, key: CallKey) {
        let Some(c) = self.campaign_calls.remove(&key) else {
            return;
        };
        if !c.answered {
            let call_id = format!("{}-{}", self.settings.call_id_prefix, key);
            tracing::info!(
                call = call_id,
                attempt = c.attempt,
                "campaign: the agent did not take the lead; the attempt failed"
            );
            self.outputs.push_back(Output::StopPlay { end: c.lead });
            self.outputs.push_back(Output::CampaignOutcome {
                attempt: c.attempt,
                call_id,
                outcome: Outcome::Failed,
            });
        }
        self.release_reserved(now, key, c.agent);
    }

    /// The ACD frees the agent reserved for call `key` (logged when it refuses: the
    /// agent left meanwhile, e.g. the call center was reconfigured without them).
    fn release_reserved(&mut self, now: Instant, key: CallKey, agent: AgentId) {
        let input = Input::OutboundEnded {
            call: CallId(key),
            agent: agent.clone(),
        };
        if let Some(Err(e)) = self.acd_input(now, input) {
            tracing::warn!(%agent, error = %e, "campaign: the agent was not released");
        }
    }
}
