//! The post-call survey of queue calls.
//!
//! A queue with a survey prompt (`queues.survey_prompt`, [`crate::acd::QueueConfig::survey`])
//! asks its callers for a score when the **agent** hangs up first: instead of ending
//! the call, call control unbridges the caller, plays the prompt to it ("please rate
//! this call from 1 to 5") and waits for one key 1-5:
//!
//! - an analog phone's key (the line controller's digit event),
//! - a SIP caller's RFC 4733 event or SIP INFO `application/dtmf-relay` (both arrive as
//!   [`SipInput::Digit`](super::SipInput::Digit)),
//! - a PSTN caller's in-band DTMF: the line carries no key events, so call control asks
//!   the board loop to search the line's audio ([`Output::DetectDtmf`]; Goertzel, the
//!   media crate's `InbandDetector`), which reports a digit as an FXO
//!   [`Event::Digit`](line_proto::Event::Digit).
//!
//! The first key 1-5 is the score; other keys are ignored. The survey ends with the
//! score, when the caller hangs up, or [`SURVEY_KEY_WAIT`] after the prompt ended; then
//! the caller is released (BYE, line released, busy tone on a phone) and the call's
//! CDR is written with `survey_score`. The CDR's end time is the agent's hang-up (talk
//! time is not stretched by the survey), and the agent goes to wrap-up at the hang-up,
//! not after the survey. A caller who hangs up first, a queue without a survey prompt,
//! or a prompt the box does not have: no survey.

use std::time::{Duration, Instant};

use crate::cdr::{Disposition, HangupSide};
use crate::prompts::Playback;
use crate::tones::Tone;

use super::{CallControl, CallKey, CallPhase, EndReason, Fxs, Output, Party};

/// How long the caller has to key a score once the prompt has played.
pub const SURVEY_KEY_WAIT: Duration = Duration::from_secs(10);

/// A call whose caller is being asked for a score (the call stays in `calls` so the
/// caller's hang-up finds it).
#[derive(Debug, Clone)]
pub(super) struct Survey {
    /// The survey gives up at this time.
    deadline: Instant,
}

impl CallControl {
    /// The survey prompt queue call `key` gets when `by` hangs up now, if any: `by` is
    /// the connected agent's device, the caller is still there, the queue names a
    /// prompt and the box has it.
    pub(super) fn survey_prompt(&self, key: CallKey, by: Option<Party>) -> Option<String> {
        let call = self.calls.get(&key)?;
        let q = call.queue.as_ref()?;
        if by.is_none()
            || by != call.callee
            || call.phase != CallPhase::Connected
            || q.agent.is_none()
            || self.surveys.contains_key(&key)
        {
            return None;
        }
        let prompt = self.center.as_ref()?.survey_prompt(&q.queue)?;
        if !self.settings.prompts.contains_key(prompt) {
            tracing::warn!(call = key, prompt, "survey prompt not found: no survey");
            return None;
        }
        Some(prompt.to_owned())
    }

    /// The agent `agent` hung up queue call `key`: the agent is done (wrap-up), the
    /// caller hears the survey prompt.
    pub(super) fn start_survey(
        &mut self,
        now: Instant,
        key: CallKey,
        agent: Party,
        prompt: String,
    ) {
        // The call is over for the agent now (screen pop: ended, with the talk time).
        let Some(call) = self.calls.remove(&key) else {
            return;
        };
        self.agent_calls_ended(now, &call, Disposition::Answered);
        self.calls.insert(key, call);
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        // The agent stays the call's callee (for its CDR: port, leg); the survey
        // check in `end_call` keeps the call from being ended through it again.
        let caller = call.caller;
        call.talk_ended = Some(now);
        let queue = call.queue.clone();
        self.disconnect(caller, agent);
        if let Party::Sip(leg) = agent {
            self.legs.remove(&leg);
        }
        // The agent goes to wrap-up now.
        self.queue_call_gone(now, key, queue.as_ref());
        let wait = self
            .settings
            .prompts
            .get(&prompt)
            .copied()
            .unwrap_or_default();
        tracing::info!(call = key, %prompt, "post-call survey");
        self.surveys.insert(
            key,
            Survey {
                deadline: now + wait + SURVEY_KEY_WAIT,
            },
        );
        let end = caller.media();
        if let Party::Fxs(p) | Party::Fxo(p) = caller {
            self.cmd(p, line_proto::Command::StopTone);
        }
        if let Party::Fxo(port) = caller {
            self.outputs
                .push_back(Output::DetectDtmf { port, on: true });
        }
        self.outputs.push_back(Output::Play {
            end,
            playback: Playback {
                once: vec![prompt],
                then: None,
            },
        });
    }

    /// The survey call the caller `party` is in, if any.
    pub(super) fn survey_of(&self, party: Party) -> Option<CallKey> {
        self.surveys
            .keys()
            .copied()
            .find(|k| self.calls.get(k).is_some_and(|c| c.caller == party))
    }

    /// A key from survey call `key`'s caller.
    pub(super) fn survey_digit(&mut self, now: Instant, key: CallKey, digit: char) {
        let Some(score) = digit.to_digit(10).filter(|d| (1..=5).contains(d)) else {
            tracing::debug!(call = key, %digit, "survey: not a score, ignored");
            return;
        };
        tracing::info!(call = key, score, "survey score");
        if let Some(call) = self.calls.get_mut(&key) {
            call.survey_score = Some(score as u8);
        }
        self.finish_survey(now, key, None);
    }

    /// Ends survey call `key`: the caller hung up (`by`), keyed a score, or the time
    /// ran out. Writes the CDR.
    pub(super) fn finish_survey(&mut self, now: Instant, key: CallKey, by: Option<Party>) {
        if self.surveys.remove(&key).is_none() {
            return;
        }
        let Some(call) = self.calls.remove(&key) else {
            return;
        };
        let end = call.caller.media();
        self.outputs.push_back(Output::StopPlay { end });
        if let Party::Fxo(port) = call.caller {
            self.outputs
                .push_back(Output::DetectDtmf { port, on: false });
        }
        match (call.caller, by) {
            (Party::Sip(leg), Some(_)) => {
                self.legs.remove(&leg);
            }
            (Party::Fxs(_), Some(_)) => {}
            (Party::Fxs(port), None) => {
                // Still off-hook: busy tone until it hangs up.
                if self.fxs_state(port) == Some(Fxs::Caller(key)) {
                    self.lockout(now, port, Tone::Busy);
                }
            }
            (party, _) => self.release_party(now, party, key, EndReason::Normal),
        }
        // The agent heard of the end at the hang-up (`start_survey`).
        self.record_cdr(now, &call, Disposition::Answered, HangupSide::Callee);
    }

    /// The earliest survey deadline.
    pub(super) fn survey_timeout(&self) -> Option<Instant> {
        self.surveys.values().map(|s| s.deadline).min()
    }

    /// Ends the surveys whose time ran out.
    pub(super) fn survey_timeouts(&mut self, now: Instant) {
        let due: Vec<CallKey> = self
            .surveys
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(&k, _)| k)
            .collect();
        for key in due {
            tracing::info!(call = key, "survey: no score keyed");
            self.finish_survey(now, key, None);
        }
    }
}
