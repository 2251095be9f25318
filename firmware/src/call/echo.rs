//! The echo test: a phone dials the echo test code and hears itself half a second late.
//!
//! What installers and technicians use to check a phone's whole audio path without a
//! second person (Asterisk's and Grandstream's `*43`): an analog phone on an FXS port
//! dials [`CallSettings::echo_test_code`](super::CallSettings::echo_test_code) (`[telephony]
//! echo_test_code`, default `*43`); a local SIP phone calls the same number (INVITE to
//! `*43`, a trailing `#` taken as the phone's send key). The box answers (a SIP phone
//! gets 200 OK, an analog phone just starts hearing itself), and everything the caller
//! says comes back [`branchline_media::echo::ECHO_DELAY`] later ([`Output::Echo`]: the
//! media engine captures the caller's audio into a delay line and plays it back, so the
//! test goes through the same codec, RTP, jitter buffer and line controller as a call).
//! Silence, crackle, one-way or choppy audio shows at once.
//!
//! It ends when the caller hangs up, or after [`ECHO_TEST_LIMIT`]: an analog phone
//! still off hook then hears busy tone, a SIP phone gets a BYE. Each test leaves a CDR
//! (internal, answered, to the code), so a technician's test shows in the call log.
//! Hook-flash and keys are ignored meanwhile. `echo_test_code = ""` turns it off; the
//! config refuses a code that clashes with an extension, a room, the outside-line
//! prefix, a voicemail, pickup or call-center code (`crate::config`).

use std::time::{Duration, Instant};

use crate::cdr::Disposition;
use crate::tones::Tone;

use super::{CallControl, CallKey, Output, Party};

/// The longest an echo test runs before the box ends it.
pub const ECHO_TEST_LIMIT: Duration = Duration::from_secs(60);

impl CallControl {
    /// Whether `dialled` (a SIP phone's whole number, a trailing `#` allowed) is the
    /// echo test code.
    pub(super) fn is_echo_code(&self, dialled: &str) -> bool {
        self.settings
            .echo_test_code
            .as_deref()
            .is_some_and(|code| dialled == code || dialled.strip_suffix('#') == Some(code))
    }

    /// What FXS `port` dialled, as the echo test code: `None` when it is not the code
    /// nor its start (the dial plan decides), `Some(false)` when more digits are
    /// needed, `Some(true)` when the test started.
    pub(super) fn echo_digits(
        &mut self,
        now: Instant,
        port: u8,
        digits: &str,
        started: Instant,
    ) -> Option<bool> {
        let code = self.settings.echo_test_code.as_deref()?;
        if digits != code {
            return code.starts_with(digits).then_some(false);
        }
        let key = self.fxs_service_call(port, started, digits);
        self.start_echo(now, key);
        Some(true)
    }

    /// A local SIP phone's call to the echo test code (see [`Self::is_echo_code`]).
    pub(super) fn sip_echo_test(&mut self, now: Instant, call: super::Call) {
        let key = self.new_call(call);
        self.start_echo(now, key);
    }

    /// Answers call `key` (its caller an analog or a SIP phone) and starts the echo.
    fn start_echo(&mut self, now: Instant, key: CallKey) {
        let Some(caller) = self.answer_by_box(now, key) else {
            return;
        };
        tracing::info!(call = key, ?caller, "echo test started");
        self.echo_tests.insert(key, now + ECHO_TEST_LIMIT);
        self.outputs.push_back(Output::Echo {
            end: caller.media(),
            on: true,
        });
    }

    /// The echo test `party` is the caller of, if any.
    pub(super) fn echo_test_of(&self, party: Party) -> Option<CallKey> {
        self.echo_tests
            .keys()
            .copied()
            .find(|k| self.calls.get(k).is_some_and(|c| c.caller == party))
    }

    /// Whether call `key` is an echo test.
    pub(super) fn in_echo_test(&self, key: CallKey) -> bool {
        self.echo_tests.contains_key(&key)
    }

    /// When the next echo test reaches its limit.
    pub(super) fn echo_timeout(&self) -> Option<Instant> {
        self.echo_tests.values().copied().min()
    }

    /// Ends the echo tests that reached their limit.
    pub(super) fn echo_timeouts(&mut self, now: Instant) {
        let due: Vec<CallKey> = self
            .echo_tests
            .iter()
            .filter(|(_, &t)| t <= now)
            .map(|(&k, _)| k)
            .collect();
        for key in due {
            tracing::info!(call = key, "echo test reached its time limit");
            self.echo_end(now, key, None);
        }
    }

    /// Ends echo test `key`: `by` hung up, or the box ends it (an analog phone still
    /// off hook hears busy tone, a SIP phone gets a BYE). Writes the CDR.
    pub(super) fn echo_end(&mut self, now: Instant, key: CallKey, by: Option<Party>) {
        if self.echo_tests.remove(&key).is_none() {
            return;
        }
        let Some(call) = self.calls.remove(&key) else {
            return;
        };
        self.outputs.push_back(Output::Echo {
            end: call.caller.media(),
            on: false,
        });
        let side = self.release_service_caller(now, key, call.caller, by, Tone::Busy);
        tracing::info!(call = key, ?side, "echo test ended");
        self.emit_cdr(now, &call, Disposition::Answered, side);
    }
}
