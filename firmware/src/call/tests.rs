//! Call-control flows on a virtual clock.

use std::time::{Duration, Instant};

use line_proto::{CallerId, Command, Event};

use super::*;
use crate::cdr::{Direction, Disposition, HangupSide, JournalUpdate};
use crate::tones::{Country, Tone};

const WALL0: i64 = 1_700_000_000_000;

struct Harness {
    cc: CallControl,
    base: Instant,
    now: Instant,
    out: Vec<Output>,
}

fn settings(base: Instant) -> CallSettings {
    let ext = |n: &str, port, cw| Extension {
        number: n.to_string(),
        port,
        name: format!("Ext {n}"),
        call_waiting: cw,
        permissions: Vec::new(),
    };
    CallSettings {
        country: Country::Us,
        extensions: vec![
            ext("101", 1, true),
            ext("102", 2, true),
            ext("103", 3, false),
            ext("104", 4, true),
        ],
        fxo_lines: vec![
            FxoLine {
                port: 5,
                inbound: vec!["101".into(), "102".into()],
                outbound: true,
            },
            FxoLine {
                port: 6,
                inbound: vec![],
                outbound: true,
            },
        ],
        outside_line_prefix: Some("9".into()),
        first_digit_timeout: Duration::from_secs(10),
        inter_digit_timeout: Duration::from_secs(4),
        ring_timeout: Duration::from_secs(30),
        sip_extensions: Vec::new(),
        call_id_prefix: "t".into(),
        sip_host: "192.0.2.1".into(),
        wall_clock_ms: WALL0,
        epoch: base,
        acd: None,
        prompts: Default::default(),
        conference_rooms: Vec::new(),
        echo_test_code: Some(crate::config::DEFAULT_ECHO_TEST_CODE.to_owned()),
    }
}

impl Harness {
    fn new() -> Self {
        let base = Instant::now();
        Harness {
            cc: CallControl::new(settings(base), 1..=4, 5..=6),
            base,
            now: base,
            out: Vec::new(),
        }
    }

    fn ev(&mut self, port: u8, e: Event) {
        self.cc.handle_event(self.now, port, &e);
        self.collect();
    }

    fn dial(&mut self, port: u8, digits: &str) {
        for d in digits.bytes() {
            self.advance(Duration::from_millis(100));
            self.ev(port, Event::Digit(d));
        }
    }

    /// Moves the virtual clock, firing every deadline on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.cc.timeout() {
            if t > end {
                break;
            }
            self.now = t.max(self.now);
            self.cc.handle_timeout(self.now);
            self.collect();
        }
        self.now = end;
    }

    fn collect(&mut self) {
        while let Some(o) = self.cc.poll_output() {
            self.out.push(o);
        }
    }

    fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    fn ms(&self) -> i64 {
        WALL0 + self.now.duration_since(self.base).as_millis() as i64
    }
}

fn has_cmd(out: &[Output], port: u8, f: impl Fn(&Command) -> bool) -> bool {
    out.iter()
        .any(|o| matches!(o, Output::Command { port: p, command } if *p == port && f(command)))
}

fn tone_is(out: &[Output], port: u8, country: Country, tone: Tone) -> bool {
    let want = country.tone(tone);
    has_cmd(
        out,
        port,
        |c| matches!(c, Command::PlayTone(t) if *t == want),
    )
}

fn cdrs(out: &[Output]) -> Vec<Cdr> {
    out.iter()
        .filter_map(|o| match o {
            Output::Cdr(c) => Some(Cdr::clone(c)),
            _ => None,
        })
        .collect()
}

#[test]
fn off_hook_gives_dial_tone_and_on_hook_stops_it() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    let out = h.take();
    assert!(tone_is(&out, 1, Country::Us, Tone::Dial));
    assert!(out.contains(&Output::PortState {
        port: 1,
        state: PortState::Dialing
    }));
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert!(has_cmd(&out, 1, |c| *c == Command::StopTone));
    assert!(cdrs(&out).is_empty(), "no digits, no call, no CDR");
}

#[test]
fn internal_call_answered_and_hung_up_by_callee() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    let t0 = h.ms();
    h.dial(1, "102");
    let out = h.take();
    assert!(
        has_cmd(&out, 1, |c| *c == Command::StopTone),
        "dial tone stops at first digit"
    );
    assert!(tone_is(&out, 1, Country::Us, Tone::Ringback));
    assert!(has_cmd(
        &out,
        2,
        |c| matches!(c, Command::SendCallerId { caller_id, .. }
        if caller_id.number.as_str() == "101" && caller_id.name.as_str() == "Ext 101")
    ));
    assert!(has_cmd(&out, 2, |c| matches!(c, Command::Ring(_))));

    h.advance(Duration::from_secs(3));
    h.ev(2, Event::OffHook);
    let t_answer = h.ms();
    let out = h.take();
    assert!(out.contains(&Output::Connect(MediaEnd::Port(1), MediaEnd::Port(2))));
    assert!(
        has_cmd(&out, 1, |c| *c == Command::StopTone),
        "ringback stops"
    );

    h.advance(Duration::from_secs(20));
    h.ev(2, Event::OnHook);
    let t_end = h.ms();
    let out = h.take();
    assert!(out.contains(&Output::Disconnect(MediaEnd::Port(1), MediaEnd::Port(2))));
    assert!(
        tone_is(&out, 1, Country::Us, Tone::Busy),
        "caller left hears busy"
    );
    let c = cdrs(&out);
    assert_eq!(c.len(), 1);
    let c = &c[0];
    assert_eq!(c.direction, Direction::Internal);
    assert_eq!((c.caller.as_str(), c.callee.as_str()), ("101", "102"));
    assert_eq!((c.caller_port, c.callee_port), (Some(1), Some(2)));
    assert_eq!(c.disposition, Disposition::Answered);
    assert_eq!(c.hangup_side, HangupSide::Callee);
    assert_eq!(c.started_at_ms, t0);
    assert_eq!(c.answered_at_ms, Some(t_answer));
    assert_eq!(c.ended_at_ms, t_end);
    assert_eq!(c.billable_ms(), 20_000);

    h.ev(1, Event::OnHook);
    let out = h.take();
    assert!(cdrs(&out).is_empty());
    assert_eq!(h.cc.active_calls(), 0);
}

/// What the daemon does after every event: bring the journal of live calls up to
/// date; returns the journal writes that queued.
fn journal(h: &mut Harness) -> Vec<JournalUpdate> {
    h.cc.update_journal(h.now);
    h.collect();
    h.take()
        .into_iter()
        .filter_map(|o| match o {
            Output::Journal(u) => Some(u),
            _ => None,
        })
        .collect()
}

#[test]
fn the_journal_holds_an_answered_call_until_its_cdr_and_refreshes_while_calls_are_up() {
    let mut h = Harness::new();
    assert!(journal(&mut h).is_empty(), "idle: nothing to write");
    assert_eq!(h.cc.journal_deadline(), None, "idle: nothing to refresh");
    h.ev(1, Event::OffHook);
    let t0 = h.ms();
    h.dial(1, "102");
    let t_start = h.now;
    // Ringing: not written at once, but refreshed from now on.
    assert!(journal(&mut h).is_empty());
    assert_eq!(h.cc.journal_deadline(), Some(t_start + JOURNAL_REFRESH));

    h.advance(Duration::from_secs(2));
    h.ev(2, Event::OffHook);
    let t_answer = h.ms();
    let written = journal(&mut h);
    let [JournalUpdate::Upsert(calls)] = &written[..] else {
        panic!("the answer is written at once: {written:?}");
    };
    let [live] = &calls[..] else {
        panic!("one call: {calls:?}");
    };
    assert!(!live.ended);
    let c = &live.cdr;
    assert_eq!((c.caller.as_str(), c.callee.as_str()), ("101", "102"));
    assert_eq!((c.started_at_ms, c.answered_at_ms), (t0, Some(t_answer)));
    // The record the call gets if the box stops now.
    assert_eq!(c.ended_at_ms, t_answer);
    assert_eq!(c.disposition, Disposition::Answered);
    assert_eq!(c.hangup_side, HangupSide::System);
    assert!(c.interrupted);
    let call_id = c.call_id.clone();
    assert!(journal(&mut h).is_empty(), "written once");

    // The refresh rewrites the whole journal with the call's later end.
    h.advance(JOURNAL_REFRESH);
    let t_refresh = h.ms();
    let written = journal(&mut h);
    let [JournalUpdate::Replace(calls)] = &written[..] else {
        panic!("a refresh: {written:?}");
    };
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].cdr.call_id, call_id);
    assert_eq!(calls[0].cdr.ended_at_ms, t_refresh);
    assert!(h.cc.journal_deadline().is_some());

    // The CDR (whose commit deletes the row) is an ordinary one.
    h.advance(Duration::from_secs(1));
    h.ev(2, Event::OnHook);
    let c = cdrs(&h.out);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].call_id, call_id);
    assert!(!c[0].interrupted);
    assert_eq!(c[0].hangup_side, HangupSide::Callee);
    h.ev(1, Event::OnHook);
    assert!(journal(&mut h).is_empty(), "nothing new until the refresh");
    // One last refresh empties the journal; then it rests.
    let due = h.cc.journal_deadline().expect("a last refresh");
    h.advance(due - h.now);
    assert_eq!(journal(&mut h), [JournalUpdate::Replace(Vec::new())]);
    assert_eq!(h.cc.journal_deadline(), None);
    h.advance(JOURNAL_REFRESH * 3);
    assert!(journal(&mut h).is_empty());
}

/// A call still ringing is in the refresh (a stop then leaves an unanswered,
/// interrupted record), though not written the moment it starts.
#[test]
fn a_ringing_call_is_in_the_refresh() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "102");
    assert!(journal(&mut h).is_empty());
    h.advance(JOURNAL_REFRESH);
    let written = journal(&mut h);
    let [JournalUpdate::Replace(calls)] = &written[..] else {
        panic!("a refresh: {written:?}");
    };
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].cdr.disposition, Disposition::NoAnswer);
    assert_eq!(calls[0].cdr.answered_at_ms, None);
    assert!(calls[0].cdr.interrupted && !calls[0].ended);
}

#[test]
fn caller_hangs_up_while_ringing_gives_no_answer() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "103");
    h.advance(Duration::from_secs(5));
    h.take();
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert!(has_cmd(&out, 3, |c| *c == Command::StopRing));
    let c = cdrs(&out);
    assert_eq!(c[0].disposition, Disposition::NoAnswer);
    assert_eq!(c[0].hangup_side, HangupSide::Caller);
    assert_eq!(c[0].answered_at_ms, None);
}

#[test]
fn ring_timeout_stops_ringing_and_caller_hears_busy() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "103");
    h.take();
    h.advance(Duration::from_secs(31));
    let out = h.take();
    assert!(has_cmd(&out, 3, |c| *c == Command::StopRing));
    assert!(tone_is(&out, 1, Country::Us, Tone::Busy));
    let c = cdrs(&out);
    assert_eq!(c[0].disposition, Disposition::NoAnswer);
    assert_eq!(c[0].hangup_side, HangupSide::System);
}

#[test]
fn busy_callee() {
    let mut h = Harness::new();
    h.ev(3, Event::OffHook); // 103 is off-hook dialling, no call waiting
    h.ev(1, Event::OffHook);
    h.dial(1, "103");
    let out = h.take();
    assert!(tone_is(&out, 1, Country::Us, Tone::Busy));
    let c = cdrs(&out);
    assert_eq!(c[0].disposition, Disposition::Busy);
    assert_eq!(c[0].callee, "103");
    // Calling yourself is busy too.
    h.ev(2, Event::OffHook);
    h.dial(2, "102");
    assert_eq!(cdrs(&h.take())[0].disposition, Disposition::Busy);
}

#[test]
fn unknown_number_gives_unobtainable_at_the_first_impossible_digit() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "1");
    assert!(cdrs(&h.take()).is_empty(), "1 is a prefix of 101");
    h.dial(1, "5");
    let out = h.take();
    assert!(tone_is(&out, 1, Country::Us, Tone::Unobtainable));
    let c = cdrs(&out);
    assert_eq!(c[0].disposition, Disposition::Unallocated);
    assert_eq!(c[0].callee, "15");
    assert!(out.contains(&Output::PortState {
        port: 1,
        state: PortState::Lockout
    }));
}

#[test]
fn inter_digit_timeout_abandons_and_first_digit_timeout_locks_out() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "10");
    h.take();
    h.advance(Duration::from_millis(3900));
    assert!(cdrs(&h.take()).is_empty());
    h.advance(Duration::from_millis(200));
    let out = h.take();
    assert!(tone_is(&out, 1, Country::Us, Tone::Congestion));
    let c = cdrs(&out);
    assert_eq!(c[0].disposition, Disposition::Abandoned);
    assert_eq!(c[0].callee, "10");
    assert_eq!(c[0].hangup_side, HangupSide::System);

    h.ev(2, Event::OffHook);
    h.take();
    h.advance(Duration::from_secs(11));
    let out = h.take();
    assert!(tone_is(&out, 2, Country::Us, Tone::Congestion));
    assert!(cdrs(&out).is_empty());
    // The lockout tone stops after a while, the port stays off-hook and quiet.
    h.advance(Duration::from_secs(61));
    assert!(has_cmd(&h.take(), 2, |c| *c == Command::StopTone));
}

#[test]
fn call_waiting_answer_swap_and_recall() {
    let mut h = Harness::new();
    // 101 calls 102; they talk.
    h.ev(1, Event::OffHook);
    h.dial(1, "102");
    h.ev(2, Event::OffHook);
    // 104 calls 102, which has call waiting.
    h.ev(4, Event::OffHook);
    h.dial(4, "102");
    let out = h.take();
    assert!(tone_is(&out, 2, Country::Us, Tone::CallWaiting));
    assert!(tone_is(&out, 4, Country::Us, Tone::Ringback));
    // 102 flashes: answers 104, 101 on hold.
    h.ev(2, Event::HookFlash);
    let out = h.take();
    assert!(out.contains(&Output::Disconnect(MediaEnd::Port(2), MediaEnd::Port(1))));
    assert!(out.contains(&Output::Connect(MediaEnd::Port(4), MediaEnd::Port(2))));
    // Flash again swaps back to 101.
    h.ev(2, Event::HookFlash);
    let out = h.take();
    assert!(out.contains(&Output::Disconnect(MediaEnd::Port(2), MediaEnd::Port(4))));
    assert!(out.contains(&Output::Connect(MediaEnd::Port(2), MediaEnd::Port(1))));
    // 102 hangs up on 101: 104 (on hold) rings 102 back.
    h.ev(2, Event::OnHook);
    let out = h.take();
    let c = cdrs(&out);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].caller, "101");
    assert!(has_cmd(&out, 2, |c| matches!(c, Command::Ring(_))));
    assert!(has_cmd(
        &out,
        2,
        |c| matches!(c, Command::SendCallerId { caller_id, .. }
        if caller_id.number.as_str() == "104")
    ));
    h.ev(2, Event::OffHook);
    assert!(h
        .take()
        .contains(&Output::Connect(MediaEnd::Port(4), MediaEnd::Port(2))));
    h.ev(4, Event::OnHook);
    let c = cdrs(&h.take());
    assert_eq!(c[0].disposition, Disposition::Answered);
    assert_eq!(c[0].hangup_side, HangupSide::Caller);
    assert_eq!(h.cc.active_calls(), 0);
}

#[test]
fn no_call_waiting_means_busy() {
    let mut h = Harness::new();
    h.ev(3, Event::OffHook);
    h.dial(3, "101");
    h.ev(1, Event::OffHook);
    h.take();
    h.ev(2, Event::OffHook);
    h.dial(2, "103");
    let out = h.take();
    assert_eq!(cdrs(&out)[0].disposition, Disposition::Busy);
}

#[test]
fn flash_holds_and_second_flash_resumes() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "102");
    h.ev(2, Event::OffHook);
    h.take();
    h.ev(1, Event::HookFlash);
    let out = h.take();
    assert!(out.contains(&Output::Disconnect(MediaEnd::Port(1), MediaEnd::Port(2))));
    assert!(tone_is(&out, 1, Country::Us, Tone::Dial));
    h.advance(Duration::from_secs(7));
    h.ev(1, Event::HookFlash);
    let out = h.take();
    assert!(out.contains(&Output::Connect(MediaEnd::Port(1), MediaEnd::Port(2))));
    assert!(has_cmd(&out, 1, |c| *c == Command::StopTone));
    // Held again for 3 s until the call ends: the CDR counts both holds (7 s + 3 s).
    h.advance(Duration::from_secs(20));
    h.ev(1, Event::HookFlash);
    h.advance(Duration::from_secs(3));
    h.ev(2, Event::OnHook);
    h.ev(1, Event::OnHook);
    let out = h.take();
    let c = &cdrs(&out)[0];
    assert_eq!(c.hold_ms, Some(10_000), "{c:?}");
    assert_eq!(c.queue_overflow, None);
}

#[test]
fn outbound_fxo_call_with_answer_and_far_end_disconnect() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "95551234");
    h.take();
    h.advance(Duration::from_secs(4));
    let out = h.take();
    assert!(has_cmd(&out, 5, |c| *c == Command::FxoSeize));
    assert!(has_cmd(&out, 5, |c| *c == Command::fxo_dial("5551234").unwrap()));
    assert!(out.contains(&Output::Connect(MediaEnd::Port(1), MediaEnd::Port(5))));
    h.advance(Duration::from_secs(6));
    h.ev(5, Event::PolarityReversal);
    let answered = h.ms();
    h.advance(Duration::from_secs(30));
    h.ev(5, Event::PolarityReversal);
    let out = h.take();
    assert!(has_cmd(&out, 5, |c| *c == Command::FxoRelease));
    assert!(out.contains(&Output::Disconnect(MediaEnd::Port(1), MediaEnd::Port(5))));
    assert!(tone_is(&out, 1, Country::Us, Tone::Busy));
    let c = &cdrs(&out)[0];
    assert_eq!(c.direction, Direction::Outbound);
    assert_eq!(c.callee, "5551234");
    assert_eq!(c.callee_port, Some(5));
    assert_eq!(c.answered_at_ms, Some(answered));
    assert_eq!(c.hangup_side, HangupSide::Callee);
    assert_eq!(c.billable_ms(), 30_000);
}

#[test]
fn outside_calls_use_fxo_unless_the_trunk_is_usable() {
    for trunk in [
        TrunkStatus::NotConfigured,
        TrunkStatus::Unusable,
        TrunkStatus::Usable,
    ] {
        let mut h = Harness::new();
        h.cc.set_trunk_status(trunk);
        assert_eq!(h.cc.trunk_status(), trunk);
        h.ev(1, Event::OffHook);
        h.dial(1, "9123#");
        let out = h.take();
        let seized = has_cmd(&out, 5, |c| *c == Command::FxoSeize);
        let trunk_leg = out.iter().any(
            |o| matches!(o, Output::SipDial { target: SipTarget::Trunk(n), .. } if n == "123"),
        );
        // A usable trunk is tried first (the FXO fallback is in tests_sip.rs).
        assert_eq!(seized, trunk != TrunkStatus::Usable, "{trunk:?}: {out:?}");
        assert_eq!(
            trunk_leg,
            trunk == TrunkStatus::Usable,
            "{trunk:?}: {out:?}"
        );
    }
}

#[test]
fn hqs_dial_routes_decide_the_way_out_and_the_built_in_rule_covers_the_rest() {
    use crate::call::{DialRoute, DialRoutes};
    let via = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let routes = DialRoutes::new(vec![
        DialRoute::new("national-pstn", "0", &via(&["fxo", "sip"]), None).expect("route"),
        DialRoute::new("international", "00", &via(&["sip"]), None).expect("route"),
    ]);
    let outcome = |trunk: TrunkStatus, digits: &str| {
        let mut h = Harness::new();
        h.cc.set_trunk_status(trunk);
        h.cc.set_dial_routes(routes.clone());
        h.ev(1, Event::OffHook);
        h.dial(1, digits);
        let out = h.take();
        let seized = [5, 6]
            .iter()
            .any(|&p| has_cmd(&out, p, |c| *c == Command::FxoSeize));
        let trunk_leg = out.iter().any(|o| {
            matches!(
                o,
                Output::SipDial {
                    target: SipTarget::Trunk(_),
                    ..
                }
            )
        });
        let congestion = tone_is(&out, 1, Country::Us, Tone::Congestion);
        (seized, trunk_leg, congestion)
    };
    // "0..." goes to an FXO line although the trunk is usable.
    assert_eq!(
        outcome(TrunkStatus::Usable, "90301234#"),
        (true, false, false)
    );
    // "00..." only over the trunk: the trunk while usable, congestion while not.
    assert_eq!(
        outcome(TrunkStatus::Usable, "900493012#"),
        (false, true, false)
    );
    assert_eq!(
        outcome(TrunkStatus::Unusable, "900493012#"),
        (false, false, true)
    );
    // No route matches "5...": the built-in rule (trunk first while usable).
    assert_eq!(
        outcome(TrunkStatus::Usable, "95550100#"),
        (false, true, false)
    );
    assert_eq!(
        outcome(TrunkStatus::Unusable, "95550100#"),
        (true, false, false)
    );
}

#[test]
fn outbound_hash_dials_at_once_and_second_line_is_used_when_first_busy() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "9123#");
    let out = h.take();
    assert!(has_cmd(&out, 5, |c| *c == Command::fxo_dial("123").unwrap()));
    h.ev(2, Event::OffHook);
    h.dial(2, "9456#");
    assert!(has_cmd(&h.take(), 6, |c| *c == Command::FxoSeize));
    // No line left: congestion.
    h.ev(3, Event::OffHook);
    h.dial(3, "9789#");
    let out = h.take();
    assert!(tone_is(&out, 3, Country::Us, Tone::Congestion));
    assert_eq!(cdrs(&out)[0].disposition, Disposition::Congestion);
    // Caller hangs up: line released, CDR unanswered.
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert!(has_cmd(&out, 5, |c| *c == Command::FxoRelease));
    assert_eq!(cdrs(&out)[0].disposition, Disposition::NoAnswer);
}

#[test]
fn inbound_pstn_rings_the_group_and_first_answer_wins() {
    let mut h = Harness::new();
    let cid = CallerId::new("5559876", "ACME").unwrap();
    h.ev(
        5,
        Event::RingDetected {
            caller_id: Some(cid),
        },
    );
    let t0 = h.ms();
    let out = h.take();
    for p in [1, 2] {
        assert!(has_cmd(
            &out,
            p,
            |c| matches!(c, Command::SendCallerId { caller_id, .. }
            if caller_id.number.as_str() == "5559876" && caller_id.name.as_str() == "ACME")
        ));
        assert!(has_cmd(&out, p, |c| matches!(c, Command::Ring(_))));
    }
    h.advance(Duration::from_secs(6));
    h.ev(5, Event::RingDetected { caller_id: None });
    h.advance(Duration::from_secs(1));
    h.ev(2, Event::OffHook);
    let out = h.take();
    assert!(has_cmd(&out, 5, |c| *c == Command::FxoSeize));
    assert!(has_cmd(&out, 1, |c| *c == Command::StopRing));
    assert!(out.contains(&Output::Connect(MediaEnd::Port(5), MediaEnd::Port(2))));
    h.advance(Duration::from_secs(12));
    h.ev(2, Event::OnHook);
    let out = h.take();
    assert!(has_cmd(&out, 5, |c| *c == Command::FxoRelease));
    let c = &cdrs(&out)[0];
    assert_eq!(c.direction, Direction::Inbound);
    assert_eq!(c.caller, "5559876");
    assert_eq!(c.callee, "102");
    assert_eq!(c.started_at_ms, t0);
    assert_eq!(c.hangup_side, HangupSide::Callee);
    assert_eq!(c.billable_ms(), 12_000);
}

#[test]
fn inbound_pstn_caller_gives_up_when_rings_stop() {
    let mut h = Harness::new();
    h.ev(5, Event::RingDetected { caller_id: None });
    h.advance(Duration::from_secs(6));
    h.ev(5, Event::RingDetected { caller_id: None });
    h.take();
    h.advance(Duration::from_secs(7));
    assert!(cdrs(&h.take()).is_empty(), "ring absence not yet reached");
    h.advance(Duration::from_secs(2));
    let out = h.take();
    assert!(has_cmd(&out, 1, |c| *c == Command::StopRing));
    assert!(has_cmd(&out, 2, |c| *c == Command::StopRing));
    let c = &cdrs(&out)[0];
    assert_eq!(c.disposition, Disposition::NoAnswer);
    assert_eq!(c.hangup_side, HangupSide::Caller);
    assert_eq!(c.caller, "");
}

#[test]
fn inbound_on_a_line_with_no_group_is_not_answered() {
    let mut h = Harness::new();
    h.ev(6, Event::RingDetected { caller_id: None });
    let out = h.take();
    assert!(!out.iter().any(|o| matches!(
        o,
        Output::Command {
            command: Command::Ring(_),
            ..
        }
    )));
    assert!(!has_cmd(&out, 6, |c| *c == Command::FxoSeize));
    h.advance(Duration::from_secs(9));
    assert_eq!(cdrs(&h.take())[0].disposition, Disposition::Busy);
}

#[test]
fn inbound_far_end_hangs_up_during_talk() {
    let mut h = Harness::new();
    h.ev(5, Event::RingDetected { caller_id: None });
    h.ev(1, Event::OffHook);
    h.take();
    h.ev(5, Event::PolarityReversal);
    let out = h.take();
    assert!(has_cmd(&out, 5, |c| *c == Command::FxoRelease));
    assert!(tone_is(&out, 1, Country::Us, Tone::Busy));
    assert_eq!(cdrs(&out)[0].hangup_side, HangupSide::Caller);
}

#[test]
fn shutdown_ends_every_call_with_a_cdr() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "102");
    h.ev(2, Event::OffHook);
    h.ev(3, Event::OffHook);
    h.dial(3, "104");
    h.take();
    h.cc.shutdown(h.now);
    h.collect();
    let out = h.take();
    let c = cdrs(&out);
    assert_eq!(c.len(), 2);
    assert!(c.iter().all(|c| c.hangup_side == HangupSide::System));
    assert!(has_cmd(&out, 4, |c| *c == Command::StopRing));
    assert!(out.contains(&Output::Disconnect(MediaEnd::Port(1), MediaEnd::Port(2))));
    // Nothing more happens after shutdown.
    h.ev(1, Event::OnHook);
    assert!(h.take().is_empty());
}

#[test]
fn every_cdr_has_a_unique_call_id() {
    let mut h = Harness::new();
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..5 {
        h.ev(1, Event::OffHook);
        h.dial(1, "103");
        h.ev(1, Event::OnHook);
        h.ev(1, Event::OffHook);
        h.dial(1, "7");
        h.ev(1, Event::OnHook);
    }
    for c in cdrs(&h.take()) {
        assert!(ids.insert(c.call_id.clone()), "duplicate {}", c.call_id);
    }
    assert_eq!(ids.len(), 10);
}

#[test]
fn a_faulty_port_is_out_of_service_until_a_passed_self_test() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "102");
    h.take();
    h.ev(2, Event::Fault(line_proto::FaultKind::OverCurrent));
    let out = h.take();
    assert!(has_cmd(&out, 2, |c| *c == Command::StopRing));
    assert!(out.contains(&Output::PortState {
        port: 2,
        state: PortState::Fault
    }));
    // 101 was ringing nobody else: the call ends and 101 hears busy.
    assert!(tone_is(&out, 1, Country::Us, Tone::Busy));
    assert_eq!(cdrs(&out)[0].hangup_side, HangupSide::System);
    // A new call to the faulty port is busy.
    h.ev(3, Event::OffHook);
    h.dial(3, "102");
    assert_eq!(cdrs(&h.take())[0].disposition, Disposition::Busy);
    h.ev(
        2,
        Event::SelfTestResult {
            passed: true,
            code: 0,
        },
    );
    assert!(h.take().contains(&Output::PortState {
        port: 2,
        state: PortState::Idle
    }));
    h.ev(4, Event::OffHook);
    h.dial(4, "102");
    assert!(has_cmd(&h.take(), 2, |c| matches!(c, Command::Ring(_))));
}

#[test]
fn a_faulty_fxo_line_is_skipped_for_outside_calls() {
    let mut h = Harness::new();
    h.ev(5, Event::Fault(line_proto::FaultKind::NoLineVoltage));
    h.take();
    h.ev(1, Event::OffHook);
    h.dial(1, "9123#");
    let out = h.take();
    assert!(!has_cmd(&out, 5, |c| *c == Command::FxoSeize));
    assert!(has_cmd(&out, 6, |c| *c == Command::FxoSeize));
    // Rings on a faulty line are ignored.
    h.ev(5, Event::RingDetected { caller_id: None });
    assert!(!h.take().iter().any(|o| matches!(
        o,
        Output::Command {
            command: Command::Ring(_),
            ..
        }
    )));
}

mod model {
    //! Random event storms: call control never panics, every started call ends with
    //! exactly one CDR, and the audio bridges it opens are all closed at shutdown.
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn event() -> impl Strategy<Value = (u8, Event)> {
        let fxs = (1u8..=4).prop_flat_map(|p| {
            prop_oneof![
                Just((p, Event::OffHook)),
                Just((p, Event::OnHook)),
                Just((p, Event::HookFlash)),
                prop::sample::select(b"0123456789*#".to_vec())
                    .prop_map(move |d| (p, Event::Digit(d))),
            ]
        });
        let fxo = (5u8..=6).prop_flat_map(|p| {
            prop_oneof![
                Just((p, Event::RingDetected { caller_id: None })),
                Just((p, Event::PolarityReversal)),
            ]
        });
        prop_oneof![4 => fxs, 1 => fxo]
    }

    proptest! {
        #[test]
        fn storms_balance(steps in prop::collection::vec((event(), 0u64..15_000), 1..120)) {
            let mut h = Harness::new();
            for ((port, e), gap) in steps {
                h.advance(Duration::from_millis(gap));
                h.ev(port, e);
            }
            h.cc.shutdown(h.now);
            h.collect();
            prop_assert_eq!(h.cc.active_calls(), 0);
            let out = h.take();
            let mut bridges: BTreeMap<(MediaEnd, MediaEnd), i32> = BTreeMap::new();
            let mut members: BTreeMap<(RoomId, MediaEnd), i32> = BTreeMap::new();
            let mut ids = std::collections::BTreeSet::new();
            for o in &out {
                match o {
                    Output::Connect(a, b) => *bridges.entry((*a.min(b), *a.max(b))).or_default() += 1,
                    Output::Disconnect(a, b) => *bridges.entry((*a.min(b), *a.max(b))).or_default() -= 1,
                    // Conference members (three-way calls) join and leave in pairs too.
                    Output::Conference { room, op: ConferenceOp::Join { end, .. } } => {
                        *members.entry((*room, *end)).or_default() += 1
                    }
                    Output::Conference { room, op: ConferenceOp::Leave { end } } => {
                        *members.entry((*room, *end)).or_default() -= 1
                    }
                    Output::Cdr(c) => {
                        prop_assert!(ids.insert(c.call_id.clone()), "CDR twice: {}", c.call_id);
                        prop_assert!(c.ended_at_ms >= c.started_at_ms);
                        if let Some(a) = c.answered_at_ms {
                            prop_assert!(a >= c.started_at_ms && a <= c.ended_at_ms);
                            prop_assert_eq!(c.disposition, Disposition::Answered);
                        }
                    }
                    _ => {}
                }
            }
            for (pair, n) in bridges {
                prop_assert!(n == 0, "bridge {:?} left at {}", pair, n);
            }
            for (member, n) in members {
                prop_assert!(n == 0, "conference member {:?} left at {}", member, n);
            }
        }
    }
}

#[test]
fn snapshot_shows_calls_in_progress_with_parties_and_times() {
    let mut h = Harness::new();
    assert!(h.cc.snapshot().is_empty());
    h.ev(1, Event::OffHook);
    // Dialling is not a call yet.
    assert!(h.cc.snapshot().is_empty());
    let t0 = h.ms();
    h.dial(1, "102");
    let s = h.cc.snapshot();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].phase, "alerting");
    assert_eq!(s[0].caller, CallParty::Fxs(1));
    assert_eq!(s[0].callee, None);
    assert_eq!(s[0].ringing, vec![CallParty::Fxs(2)]);
    assert_eq!(
        (s[0].caller_number.as_str(), s[0].callee_number.as_str()),
        ("101", "102")
    );
    assert!(s[0].started_at_ms <= h.ms() && s[0].started_at_ms >= t0);
    h.advance(Duration::from_secs(2));
    h.ev(2, Event::OffHook);
    let answered = h.ms();
    let s = h.cc.snapshot();
    assert_eq!(s[0].phase, "connected");
    assert_eq!(s[0].callee, Some(CallParty::Fxs(2)));
    assert!(s[0].ringing.is_empty());
    assert_eq!(s[0].answered_at_ms, Some(answered));
    assert_eq!(s[0].direction, Direction::Internal);
    h.ev(2, Event::OnHook);
    assert!(h.cc.snapshot().is_empty());
}

fn conference_ops(out: &[Output]) -> Vec<(RoomId, ConferenceOp)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Conference { room, op } => Some((*room, *op)),
            _ => None,
        })
        .collect()
}

/// 101 talks to 102, flashes, calls 103 and, once 103 answers, flashes again.
fn three_way() -> (Harness, RoomId) {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "102");
    h.ev(2, Event::OffHook);
    h.ev(1, Event::HookFlash);
    h.dial(1, "103");
    h.ev(3, Event::OffHook);
    let out = h.take();
    assert!(out.contains(&Output::Connect(MediaEnd::Port(1), MediaEnd::Port(3))));
    h.ev(1, Event::HookFlash);
    let out = h.take();
    assert!(out.contains(&Output::Disconnect(MediaEnd::Port(1), MediaEnd::Port(3))));
    let ops = conference_ops(&out);
    assert_eq!(ops.len(), 3, "{out:?}");
    let room = ops[0].0;
    let joined: Vec<MediaEnd> = ops
        .iter()
        .map(|(r, op)| match op {
            ConferenceOp::Join {
                end,
                role: ConferenceRole::Talker,
            } if *r == room => *end,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        joined,
        [MediaEnd::Port(1), MediaEnd::Port(2), MediaEnd::Port(3)]
    );
    (h, room)
}

#[test]
fn flash_dial_flash_makes_a_three_way_call_and_further_flashes_are_ignored() {
    let (mut h, _) = three_way();
    h.ev(1, Event::HookFlash);
    assert!(h.take().is_empty());
    // Hanging up ends both calls: two CDRs, both far phones hear busy.
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert_eq!(conference_ops(&out).len(), 3);
    assert_eq!(cdrs(&out).len(), 2, "{out:?}");
    assert!(tone_is(&out, 2, Country::Us, Tone::Busy));
    assert!(tone_is(&out, 3, Country::Us, Tone::Busy));
    // No recall of the held call.
    assert!(!has_cmd(&out, 1, |c| matches!(c, Command::Ring(_))));
    assert_eq!(h.cc.active_calls(), 0);
}

#[test]
fn a_far_party_leaving_a_three_way_call_leaves_the_other_two_talking() {
    for (gone, other) in [(3u8, 2u8), (2, 3)] {
        let (mut h, room) = three_way();
        h.ev(gone, Event::OnHook);
        let out = h.take();
        let leaves: Vec<_> = conference_ops(&out)
            .into_iter()
            .filter(|(r, op)| *r == room && matches!(op, ConferenceOp::Leave { .. }))
            .collect();
        assert_eq!(leaves.len(), 3, "{out:?}");
        let a = MediaEnd::Port(1);
        let b = MediaEnd::Port(other);
        assert!(
            out.contains(&Output::Connect(a.min(b), a.max(b)))
                || out.contains(&Output::Connect(a, b))
                || out.contains(&Output::Connect(b, a)),
            "{out:?}"
        );
        assert!(!tone_is(&out, 1, Country::Us, Tone::Busy), "{out:?}");
        assert_eq!(cdrs(&out).len(), 1);
        // 101 and the other go on; 101 hanging up ends that call normally.
        h.ev(1, Event::OnHook);
        let out = h.take();
        assert_eq!(cdrs(&out).len(), 1, "{out:?}");
        assert!(tone_is(&out, other, Country::Us, Tone::Busy));
        assert_eq!(h.cc.active_calls(), 0);
    }
}

#[test]
fn call_waiting_still_swaps_instead_of_joining() {
    // 101 talks to 102; 103 calls 101 (call waiting); 101 answers it by flash, then
    // flashes again: a swap back to 102, no conference.
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "102");
    h.ev(2, Event::OffHook);
    h.ev(3, Event::OffHook);
    h.dial(3, "101");
    h.ev(1, Event::HookFlash);
    h.take();
    h.ev(1, Event::HookFlash);
    let out = h.take();
    assert!(conference_ops(&out).is_empty(), "{out:?}");
    assert!(out.contains(&Output::Connect(MediaEnd::Port(1), MediaEnd::Port(2))));
}
