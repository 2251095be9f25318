//! Call-control flows with SIP legs (B2BUA) on a virtual clock.
//!
//! The dial plan: 101 on FXS 1, 102 on FXS 2 and a SIP phone (both ring), 103 on FXS 3
//! without call waiting, 210 and 211 SIP only. FXO 5 rings 101 and 210 and is not used
//! for outside calls; FXO 6 is the outside line. Outside prefix 9.

use std::time::{Duration, Instant};

use line_proto::{Command, Event};

use super::*;
use crate::cdr::{Direction, Disposition, HangupSide};
use crate::tones::{Country, Tone};

const WALL0: i64 = 1_700_000_000_000;
pub(super) const IN1: LegId = LegId(1);
pub(super) const IN2: LegId = LegId(2);

pub(super) struct Harness {
    pub(super) cc: CallControl,
    pub(super) now: Instant,
    pub(super) out: Vec<Output>,
}

pub(super) fn settings(base: Instant) -> CallSettings {
    let ext = |n: &str, port, cw| Extension {
        number: n.to_string(),
        port,
        name: format!("Ext {n}"),
        call_waiting: cw,
        permissions: Vec::new(),
    };
    // 211 has call waiting off.
    let sip = |n: &str| SipExtension {
        number: n.to_string(),
        name: format!("Phone {n}"),
        call_waiting: n != "211",
        permissions: Vec::new(),
    };
    CallSettings {
        country: Country::Us,
        extensions: vec![
            ext("101", 1, true),
            ext("102", 2, true),
            ext("103", 3, false),
        ],
        sip_extensions: vec![sip("102"), sip("210"), sip("211")],
        fxo_lines: vec![
            FxoLine {
                port: 5,
                inbound: vec!["101".into(), "210".into()],
                outbound: false,
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
    pub(super) fn new() -> Self {
        Self::with(|_| {})
    }

    /// The harness with the settings changed by `f` first.
    pub(super) fn with(f: impl FnOnce(&mut CallSettings)) -> Self {
        let base = Instant::now();
        let mut s = settings(base);
        f(&mut s);
        Harness {
            cc: CallControl::new(s, 1..=3, 5..=6),
            now: base,
            out: Vec::new(),
        }
    }

    pub(super) fn ev(&mut self, port: u8, e: Event) {
        self.cc.handle_event(self.now, port, &e);
        self.collect();
    }

    pub(super) fn sip(&mut self, input: SipInput) {
        self.cc.handle_sip(self.now, input);
        self.collect();
    }

    pub(super) fn incoming(&mut self, leg: LegId, origin: SipOrigin, from: &str, dialled: &str) {
        self.sip(SipInput::Incoming {
            leg,
            origin,
            caller_number: from.into(),
            caller_name: String::new(),
            dialled: dialled.into(),
            sip_call_id: format!("call-{}@phone", leg.0),
            replaces: None,
        });
    }

    pub(super) fn dial(&mut self, port: u8, digits: &str) {
        for d in digits.bytes() {
            self.advance(Duration::from_millis(100));
            self.ev(port, Event::Digit(d));
        }
    }

    pub(super) fn advance(&mut self, d: Duration) {
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

    pub(super) fn collect(&mut self) {
        while let Some(o) = self.cc.poll_output() {
            self.out.push(o);
        }
    }

    pub(super) fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }
}

pub(super) fn has_cmd(out: &[Output], port: u8, f: impl Fn(&Command) -> bool) -> bool {
    out.iter()
        .any(|o| matches!(o, Output::Command { port: p, command } if *p == port && f(command)))
}

pub(super) fn tone_is(out: &[Output], port: u8, tone: Tone) -> bool {
    let want = Country::Us.tone(tone);
    has_cmd(
        out,
        port,
        |c| matches!(c, Command::PlayTone(t) if *t == want),
    )
}

pub(super) fn cdrs(out: &[Output]) -> Vec<Cdr> {
    out.iter()
        .filter_map(|o| match o {
            Output::Cdr(c) => Some(Cdr::clone(c)),
            _ => None,
        })
        .collect()
}

/// The outgoing legs placed, with their targets and Call-IDs.
pub(super) fn dials(out: &[Output]) -> Vec<(LegId, SipTarget, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::SipDial {
                leg,
                target,
                sip_call_id,
                ..
            } => Some((*leg, target.clone(), sip_call_id.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn only_dial(out: &[Output]) -> (LegId, SipTarget, String) {
    let d = dials(out);
    assert_eq!(d.len(), 1, "{out:?}");
    d[0].clone()
}

pub(super) fn hangups(out: &[Output]) -> Vec<(LegId, EndReason)> {
    out.iter()
        .filter_map(|o| match o {
            Output::SipHangup { leg, reason } => Some((*leg, *reason)),
            _ => None,
        })
        .collect()
}

pub(super) fn port(p: u8) -> MediaEnd {
    MediaEnd::Port(p)
}

pub(super) fn leg(l: LegId) -> MediaEnd {
    MediaEnd::Leg(l)
}

#[test]
fn fxs_calls_a_sip_extension_and_the_phone_hangs_up() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "210");
    let out = h.take();
    let (out_leg, target, call_id) = only_dial(&out);
    assert!(out_leg.is_outgoing());
    assert_eq!(target, SipTarget::Extension("210".into()));
    assert_eq!(call_id, "t-1-1@192.0.2.1");
    assert!(out.iter().any(|o| matches!(o,
        Output::SipDial { caller_number, caller_name, .. }
            if caller_number == "101" && caller_name == "Ext 101")));
    h.sip(SipInput::Ringing { leg: out_leg });
    assert!(tone_is(&h.take(), 1, Tone::Ringback));
    h.advance(Duration::from_secs(3));
    h.sip(SipInput::Answered { leg: out_leg });
    let out = h.take();
    assert!(has_cmd(&out, 1, |c| *c == Command::StopTone));
    assert!(out.contains(&Output::Connect(port(1), leg(out_leg))));
    assert!(out.contains(&Output::PortState {
        port: 1,
        state: PortState::Talking
    }));
    h.advance(Duration::from_secs(60));
    h.sip(SipInput::Ended {
        leg: out_leg,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert!(out.contains(&Output::Disconnect(port(1), leg(out_leg))));
    assert!(
        hangups(&out).is_empty(),
        "the ended leg needs nothing: {out:?}"
    );
    assert!(tone_is(&out, 1, Tone::Busy));
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.direction, Direction::Internal);
    assert_eq!((cdr.caller.as_str(), cdr.callee.as_str()), ("101", "210"));
    assert_eq!((cdr.caller_port, cdr.callee_port), (Some(1), None));
    assert_eq!(cdr.disposition, Disposition::Answered);
    assert_eq!(cdr.hangup_side, HangupSide::Callee);
    assert_eq!(cdr.caller_sip_call_id, None);
    assert_eq!(cdr.callee_sip_call_id.as_deref(), Some("t-1-1@192.0.2.1"));
    assert_eq!(cdr.billable_ms(), 60_000);
    assert_eq!(h.cc.active_legs(), 0);
}

#[test]
fn fxs_caller_hangs_up_during_a_sip_call() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "211");
    let (out_leg, ..) = only_dial(&h.take());
    h.sip(SipInput::Answered { leg: out_leg });
    h.take();
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert!(out.contains(&Output::Disconnect(port(1), leg(out_leg))));
    assert_eq!(hangups(&out), [(out_leg, EndReason::Normal)]);
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.hangup_side, HangupSide::Caller);
    assert_eq!(cdr.disposition, Disposition::Answered);
}

#[test]
fn sip_callee_failures_map_to_tones_and_dispositions() {
    for (reason, tone, disposition) in [
        (EndReason::Busy, Tone::Busy, Disposition::Busy),
        (EndReason::NoAnswer, Tone::Busy, Disposition::NoAnswer),
        (
            EndReason::Unallocated,
            Tone::Unobtainable,
            Disposition::Unallocated,
        ),
        (
            EndReason::Congestion,
            Tone::Congestion,
            Disposition::Congestion,
        ),
        (
            EndReason::Forbidden,
            Tone::Congestion,
            Disposition::Congestion,
        ),
    ] {
        let mut h = Harness::new();
        h.ev(1, Event::OffHook);
        h.dial(1, "210");
        let (out_leg, ..) = only_dial(&h.take());
        h.sip(SipInput::Ended {
            leg: out_leg,
            reason,
        });
        let out = h.take();
        assert!(tone_is(&out, 1, tone), "{reason:?}: {out:?}");
        assert!(hangups(&out).is_empty());
        assert_eq!(cdrs(&out)[0].disposition, disposition, "{reason:?}");
        assert!(!out.iter().any(|o| matches!(o, Output::Connect(..))));
    }
}

#[test]
fn ring_timeout_cancels_the_sip_offer() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "210");
    let (out_leg, ..) = only_dial(&h.take());
    h.sip(SipInput::Ringing { leg: out_leg });
    h.advance(Duration::from_secs(29));
    assert!(hangups(&h.take()).is_empty());
    h.advance(Duration::from_secs(2));
    let out = h.take();
    assert_eq!(hangups(&out), [(out_leg, EndReason::NoAnswer)]);
    assert!(tone_is(&out, 1, Tone::Busy));
    assert_eq!(cdrs(&out)[0].disposition, Disposition::NoAnswer);
    // The endpoint confirms later: nothing more happens.
    h.sip(SipInput::Ended {
        leg: out_leg,
        reason: EndReason::Normal,
    });
    assert!(h.take().is_empty());
}

#[test]
fn sip_phone_calls_an_fxs_extension() {
    let mut h = Harness::new();
    // The From header says 999; the phone authenticated as 210, which is what shows.
    h.incoming(IN1, SipOrigin::Extension("210".into()), "999", "101");
    let out = h.take();
    assert!(has_cmd(&out, 1, |c| matches!(c,
        Command::SendCallerId { caller_id, .. }
            if caller_id.number.as_str() == "210" && caller_id.name.as_str() == "Phone 210")));
    assert!(has_cmd(&out, 1, |c| matches!(c, Command::Ring(_))));
    assert!(out.contains(&Output::SipRinging {
        leg: IN1,
        early_media: false,
    }));
    h.advance(Duration::from_secs(5));
    h.ev(1, Event::OffHook);
    let out = h.take();
    assert!(out.contains(&Output::SipAnswer { leg: IN1 }));
    assert!(out.contains(&Output::Connect(leg(IN1), port(1))));
    h.advance(Duration::from_secs(30));
    h.sip(SipInput::Ended {
        leg: IN1,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert!(out.contains(&Output::Disconnect(leg(IN1), port(1))));
    assert!(tone_is(&out, 1, Tone::Busy));
    let cdr = &cdrs(&out)[0];
    assert_eq!((cdr.caller.as_str(), cdr.callee.as_str()), ("210", "101"));
    assert_eq!(cdr.caller_sip_call_id.as_deref(), Some("call-1@phone"));
    assert_eq!(cdr.callee_sip_call_id, None);
    assert_eq!(cdr.hangup_side, HangupSide::Caller);
    assert_eq!(cdr.disposition, Disposition::Answered);
    assert_eq!(h.cc.active_legs(), 0);
}

#[test]
fn sip_caller_to_a_busy_port_without_call_waiting_gets_busy() {
    let mut h = Harness::new();
    h.ev(3, Event::OffHook);
    h.take();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "103");
    let out = h.take();
    assert_eq!(hangups(&out), [(IN1, EndReason::Busy)]);
    assert_eq!(cdrs(&out)[0].disposition, Disposition::Busy);
}

#[test]
fn sip_caller_waits_and_is_answered_with_flash() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "103");
    h.ev(3, Event::OffHook);
    h.take();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "101");
    let out = h.take();
    assert!(tone_is(&out, 1, Tone::CallWaiting));
    assert!(out.contains(&Output::SipRinging {
        leg: IN1,
        early_media: false,
    }));
    h.ev(1, Event::HookFlash);
    let out = h.take();
    assert!(out.contains(&Output::Disconnect(port(1), port(3))));
    assert!(out.contains(&Output::SipAnswer { leg: IN1 }));
    assert!(out.contains(&Output::Connect(leg(IN1), port(1))));
    // Flash again swaps back: the SIP caller is held.
    h.ev(1, Event::HookFlash);
    let out = h.take();
    assert!(out.contains(&Output::Disconnect(port(1), leg(IN1))));
    assert!(out.contains(&Output::Connect(port(1), port(3))));
}

#[test]
fn a_held_sip_caller_recalls_without_a_second_answer() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "101");
    h.ev(1, Event::OffHook);
    h.take();
    // Flash: the SIP caller is held and the phone gets dial tone; then it hangs up.
    h.ev(1, Event::HookFlash);
    assert!(h.take().contains(&Output::Disconnect(port(1), leg(IN1))));
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert!(
        has_cmd(&out, 1, |c| matches!(c, Command::Ring(_))),
        "recall: {out:?}"
    );
    assert!(hangups(&out).is_empty());
    h.ev(1, Event::OffHook);
    let out = h.take();
    assert!(out.contains(&Output::Connect(leg(IN1), port(1))));
    assert!(
        !out.iter().any(|o| matches!(o, Output::SipAnswer { .. })),
        "answered once only: {out:?}"
    );
    // And the same when the port placed the call to a SIP phone.
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "210");
    let (out_leg, ..) = only_dial(&h.take());
    h.sip(SipInput::Answered { leg: out_leg });
    h.ev(1, Event::HookFlash);
    h.ev(1, Event::OnHook);
    h.ev(1, Event::OffHook);
    let out = h.take();
    assert!(
        out.contains(&Output::Connect(leg(out_leg), port(1))),
        "{out:?}"
    );
    assert!(!out.iter().any(|o| matches!(o, Output::SipAnswer { .. })));
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert_eq!(hangups(&out), [(out_leg, EndReason::Normal)]);
    assert_eq!(cdrs(&out).len(), 1);
}

#[test]
fn sip_phone_calls_another_sip_phone() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "211");
    let (out_leg, target, _) = only_dial(&h.take());
    assert_eq!(target, SipTarget::Extension("211".into()));
    h.sip(SipInput::Ringing { leg: out_leg });
    h.sip(SipInput::Ringing { leg: out_leg });
    let out = h.take();
    assert_eq!(
        out.iter()
            .filter(|o| **o
                == Output::SipRinging {
                    leg: IN1,
                    early_media: false,
                })
            .count(),
        1,
        "180 once: {out:?}"
    );
    h.sip(SipInput::Answered { leg: out_leg });
    let out = h.take();
    assert!(out.contains(&Output::SipAnswer { leg: IN1 }));
    assert!(out.contains(&Output::Connect(leg(IN1), leg(out_leg))));
    h.sip(SipInput::Ended {
        leg: out_leg,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert_eq!(hangups(&out), [(IN1, EndReason::Normal)]);
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.caller_sip_call_id.as_deref(), Some("call-1@phone"));
    assert!(cdr.callee_sip_call_id.is_some());
    assert_eq!(cdr.hangup_side, HangupSide::Callee);
}

#[test]
fn sip_phone_calling_its_own_sip_only_extension_is_busy() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "210");
    let out = h.take();
    assert!(dials(&out).is_empty());
    assert_eq!(hangups(&out), [(IN1, EndReason::Busy)]);
}

#[test]
fn an_extension_that_is_both_rings_both_and_the_phone_wins() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "102");
    let out = h.take();
    assert!(has_cmd(&out, 2, |c| matches!(c, Command::Ring(_))));
    let (out_leg, target, _) = only_dial(&out);
    assert_eq!(target, SipTarget::Extension("102".into()));
    h.sip(SipInput::Answered { leg: out_leg });
    let out = h.take();
    assert!(has_cmd(&out, 2, |c| *c == Command::StopRing));
    assert!(out.contains(&Output::Connect(port(1), leg(out_leg))));
    assert!(out.contains(&Output::PortState {
        port: 2,
        state: PortState::Idle
    }));
    h.ev(1, Event::OnHook);
    let cdr = &cdrs(&h.take())[0];
    assert_eq!(cdr.callee, "102");
    assert_eq!(cdr.disposition, Disposition::Answered);
}

#[test]
fn an_extension_that_is_both_rings_both_and_the_port_wins() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "102");
    let (out_leg, ..) = only_dial(&h.take());
    h.ev(2, Event::OffHook);
    let out = h.take();
    assert_eq!(hangups(&out), [(out_leg, EndReason::Normal)]);
    assert!(out.contains(&Output::Connect(port(1), port(2))));
    // The phone's offer ends a moment later; the call goes on.
    h.sip(SipInput::Ended {
        leg: out_leg,
        reason: EndReason::Normal,
    });
    assert!(h.take().is_empty());
    assert_eq!(h.cc.active_calls(), 1);
}

#[test]
fn the_phone_declining_leaves_the_port_ringing() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "102");
    let (out_leg, ..) = only_dial(&h.take());
    h.sip(SipInput::Ended {
        leg: out_leg,
        reason: EndReason::Busy,
    });
    let out = h.take();
    assert!(cdrs(&out).is_empty(), "{out:?}");
    h.ev(2, Event::OffHook);
    assert!(h.take().contains(&Output::Connect(port(1), port(2))));
}

#[test]
fn outside_call_through_the_trunk() {
    let mut h = Harness::new();
    h.cc.set_trunk_status(TrunkStatus::Usable);
    h.ev(1, Event::OffHook);
    h.dial(1, "90301234#");
    let (out_leg, target, _) = only_dial(&h.take());
    assert_eq!(target, SipTarget::Trunk("0301234".into()));
    // No ring timeout on the trunk: the far end and the caller decide.
    h.advance(Duration::from_secs(120));
    h.sip(SipInput::Ringing { leg: out_leg });
    assert!(tone_is(&h.take(), 1, Tone::Ringback));
    h.sip(SipInput::Answered { leg: out_leg });
    assert!(h.take().contains(&Output::Connect(port(1), leg(out_leg))));
    h.ev(1, Event::OnHook);
    let cdr = &cdrs(&h.take())[0];
    assert_eq!(cdr.direction, Direction::Outbound);
    assert_eq!(cdr.callee, "0301234");
    assert_eq!(cdr.disposition, Disposition::Answered);
}

#[test]
fn trunk_congestion_falls_back_to_fxo() {
    let mut h = Harness::new();
    h.cc.set_trunk_status(TrunkStatus::Usable);
    h.ev(1, Event::OffHook);
    h.dial(1, "90301234#");
    let (out_leg, ..) = only_dial(&h.take());
    h.sip(SipInput::Ringing { leg: out_leg });
    h.take();
    h.sip(SipInput::Ended {
        leg: out_leg,
        reason: EndReason::Congestion,
    });
    let out = h.take();
    assert!(has_cmd(&out, 6, |c| *c == Command::FxoSeize), "{out:?}");
    assert!(has_cmd(&out, 6, |c| matches!(c, Command::FxoDial(_))));
    assert!(has_cmd(&out, 1, |c| *c == Command::StopTone));
    assert!(out.contains(&Output::Connect(port(1), port(6))));
    assert!(cdrs(&out).is_empty());
    h.ev(6, Event::PolarityReversal);
    h.ev(1, Event::OnHook);
    let cdr = &cdrs(&h.take())[0];
    assert_eq!(cdr.callee_port, Some(6));
    assert_eq!(cdr.callee_sip_call_id, None);
    assert_eq!(cdr.disposition, Disposition::Answered);
}

#[test]
fn trunk_busy_does_not_fall_back() {
    let mut h = Harness::new();
    h.cc.set_trunk_status(TrunkStatus::Usable);
    h.ev(1, Event::OffHook);
    h.dial(1, "90301234#");
    let (out_leg, ..) = only_dial(&h.take());
    h.sip(SipInput::Ended {
        leg: out_leg,
        reason: EndReason::Busy,
    });
    let out = h.take();
    assert!(!has_cmd(&out, 6, |c| *c == Command::FxoSeize));
    assert!(tone_is(&out, 1, Tone::Busy));
    assert_eq!(cdrs(&out)[0].disposition, Disposition::Busy);
}

#[test]
fn trunk_congestion_with_every_line_busy_is_congestion() {
    let mut h = Harness::new();
    h.cc.set_trunk_status(TrunkStatus::Usable);
    // Line 6 taken by another call first (FXO off the trunk).
    h.cc.set_trunk_status(TrunkStatus::Unusable);
    h.ev(2, Event::OffHook);
    h.dial(2, "9555#");
    h.cc.set_trunk_status(TrunkStatus::Usable);
    h.ev(1, Event::OffHook);
    h.dial(1, "9666#");
    let (out_leg, ..) = only_dial(&h.take());
    h.sip(SipInput::Ended {
        leg: out_leg,
        reason: EndReason::Congestion,
    });
    let out = h.take();
    assert!(tone_is(&out, 1, Tone::Congestion));
    assert_eq!(cdrs(&out)[0].disposition, Disposition::Congestion);
}

#[test]
fn sip_phone_calls_out_over_fxo_and_its_digits_reach_the_line() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "90301234");
    let out = h.take();
    assert!(has_cmd(&out, 6, |c| *c == Command::FxoSeize), "{out:?}");
    assert!(out.contains(&Output::SipAnswer { leg: IN1 }));
    assert!(out.contains(&Output::Connect(leg(IN1), port(6))));
    h.sip(SipInput::Digit {
        leg: IN1,
        digit: '5',
    });
    let out = h.take();
    assert_eq!(
        out,
        [Output::Command {
            port: 6,
            command: Command::fxo_dial("5").unwrap()
        }]
    );
    h.sip(SipInput::Ended {
        leg: IN1,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert!(has_cmd(&out, 6, |c| *c == Command::FxoRelease));
    assert_eq!(cdrs(&out)[0].direction, Direction::Outbound);
}

#[test]
fn sip_phone_calls_out_through_the_trunk() {
    let mut h = Harness::new();
    h.cc.set_trunk_status(TrunkStatus::Usable);
    h.incoming(IN1, SipOrigin::Extension("211".into()), "211", "9555");
    let (out_leg, target, _) = only_dial(&h.take());
    assert_eq!(target, SipTarget::Trunk("555".into()));
    h.sip(SipInput::Answered { leg: out_leg });
    let out = h.take();
    assert!(out.contains(&Output::SipAnswer { leg: IN1 }));
    assert!(out.contains(&Output::Connect(leg(IN1), leg(out_leg))));
}

#[test]
fn inbound_trunk_call_rings_the_did_extension() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "101");
    let out = h.take();
    assert!(has_cmd(&out, 1, |c| matches!(c,
        Command::SendCallerId { caller_id, .. } if caller_id.number.as_str() == "+4930123")));
    h.ev(1, Event::OffHook);
    assert!(h.take().contains(&Output::SipAnswer { leg: IN1 }));
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert_eq!(hangups(&out), [(IN1, EndReason::Normal)]);
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.direction, Direction::Inbound);
    assert_eq!(
        (cdr.caller.as_str(), cdr.callee.as_str()),
        ("+4930123", "101")
    );
}

#[test]
fn inbound_trunk_call_to_an_unknown_or_outside_number_is_unallocated() {
    for dialled in ["999", "90301234", ""] {
        let mut h = Harness::new();
        h.incoming(IN1, SipOrigin::Trunk, "+4930123", dialled);
        let out = h.take();
        assert_eq!(hangups(&out), [(IN1, EndReason::Unallocated)], "{dialled}");
        assert!(dials(&out).is_empty());
        assert_eq!(cdrs(&out)[0].disposition, Disposition::Unallocated);
        assert_eq!(h.cc.active_calls(), 0);
        assert_eq!(h.cc.active_legs(), 0);
    }
}

#[test]
fn ring_timeout_on_an_incoming_sip_call() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Trunk, "+4930123", "101");
    h.take();
    h.advance(Duration::from_secs(31));
    let out = h.take();
    assert_eq!(hangups(&out), [(IN1, EndReason::NoAnswer)]);
    assert!(has_cmd(&out, 1, |c| *c == Command::StopRing));
    assert_eq!(cdrs(&out)[0].disposition, Disposition::NoAnswer);
}

#[test]
fn pstn_call_rings_a_sip_extension_too() {
    let mut h = Harness::new();
    h.ev(
        5,
        Event::RingDetected {
            caller_id: Some(line_proto::CallerId::new("5551234", "PSTN").unwrap()),
        },
    );
    let out = h.take();
    assert!(has_cmd(&out, 1, |c| matches!(c, Command::Ring(_))));
    let (out_leg, target, _) = only_dial(&out);
    assert_eq!(target, SipTarget::Extension("210".into()));
    assert!(out.iter().any(|o| matches!(o,
        Output::SipDial { caller_number, .. } if caller_number == "5551234")));
    h.advance(Duration::from_secs(2));
    h.sip(SipInput::Answered { leg: out_leg });
    let out = h.take();
    assert!(has_cmd(&out, 5, |c| *c == Command::FxoSeize));
    assert!(has_cmd(&out, 1, |c| *c == Command::StopRing));
    assert!(out.contains(&Output::Connect(port(5), leg(out_leg))));
    h.ev(5, Event::PolarityReversal);
    let out = h.take();
    assert_eq!(hangups(&out), [(out_leg, EndReason::Normal)]);
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.callee, "210");
    assert_eq!(cdr.direction, Direction::Inbound);
}

#[test]
fn far_end_hold_moves_media_only() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "101");
    h.ev(1, Event::OffHook);
    h.take();
    h.sip(SipInput::Hold {
        leg: IN1,
        held: true,
    });
    assert_eq!(h.take(), [Output::Disconnect(leg(IN1), port(1))]);
    h.advance(Duration::from_secs(4));
    h.sip(SipInput::Hold {
        leg: IN1,
        held: true,
    });
    assert!(h.take().is_empty());
    h.advance(Duration::from_secs(5));
    h.sip(SipInput::Hold {
        leg: IN1,
        held: false,
    });
    assert_eq!(h.take(), [Output::Connect(leg(IN1), port(1))]);
    h.advance(Duration::from_secs(30));
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert_eq!(cdrs(&out).len(), 1);
    assert_eq!(cdrs(&out)[0].disposition, Disposition::Answered);
    // On hold from the first re-INVITE to the resume; the repeated hold is no new one.
    assert_eq!(cdrs(&out)[0].hold_ms, Some(9_000));
}

#[test]
fn caller_cancels_while_the_callee_answers() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "211");
    let (out_leg, ..) = only_dial(&h.take());
    // CANCEL from the caller and 200 OK from the callee cross.
    h.sip(SipInput::Ended {
        leg: IN1,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert_eq!(hangups(&out), [(out_leg, EndReason::Normal)]);
    assert_eq!(cdrs(&out)[0].disposition, Disposition::NoAnswer);
    assert_eq!(cdrs(&out)[0].hangup_side, HangupSide::Caller);
    h.sip(SipInput::Answered { leg: out_leg });
    let out = h.take();
    assert_eq!(
        out,
        [Output::SipHangup {
            leg: out_leg,
            reason: EndReason::Normal
        }],
        "late answer is hung up, nothing is bridged"
    );
    assert_eq!(h.cc.active_calls(), 0);
}

#[test]
fn fxs_caller_hangs_up_as_the_sip_callee_answers() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "210");
    let (out_leg, ..) = only_dial(&h.take());
    h.ev(1, Event::OnHook);
    h.sip(SipInput::Answered { leg: out_leg });
    let out = h.take();
    assert_eq!(
        hangups(&out),
        [(out_leg, EndReason::Normal), (out_leg, EndReason::Normal)]
    );
    assert!(!out.iter().any(|o| matches!(o, Output::Connect(..))));
    assert_eq!(cdrs(&out).len(), 1);
}

#[test]
fn both_sides_hang_up_at_once() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "101");
    h.ev(1, Event::OffHook);
    h.take();
    h.ev(1, Event::OnHook);
    h.sip(SipInput::Ended {
        leg: IN1,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert_eq!(cdrs(&out).len(), 1);
    assert_eq!(cdrs(&out)[0].hangup_side, HangupSide::Callee);
    // BYE for the leg once (from the on-hook); its own BYE is then ignored.
    assert_eq!(hangups(&out), [(IN1, EndReason::Normal)]);
    assert_eq!(h.cc.active_legs(), 0);
}

#[test]
fn inputs_for_unknown_legs_are_ignored() {
    let mut h = Harness::new();
    for input in [
        SipInput::Ended {
            leg: LegId(77),
            reason: EndReason::Busy,
        },
        SipInput::Ringing { leg: LegId(77) },
        SipInput::Digit {
            leg: LegId(77),
            digit: '1',
        },
        SipInput::Hold {
            leg: LegId(77),
            held: true,
        },
        SipInput::Answered { leg: LegId(77) },
    ] {
        h.sip(input);
    }
    assert!(h.take().is_empty());
    assert_eq!(h.cc.active_calls(), 0);
}

#[test]
fn duplicate_and_out_of_range_incoming_legs() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "101");
    h.take();
    h.incoming(IN1, SipOrigin::Extension("211".into()), "211", "103");
    assert!(h.take().is_empty(), "same id twice is ignored");
    let bad = LegId(LegId::OUTGOING | 5);
    h.incoming(bad, SipOrigin::Trunk, "1", "101");
    assert_eq!(hangups(&h.take()), [(bad, EndReason::Congestion)]);
    assert_eq!(h.cc.active_calls(), 1);
}

#[test]
fn shutdown_ends_sip_legs() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "101");
    h.ev(1, Event::OffHook);
    h.incoming(IN2, SipOrigin::Trunk, "555", "211");
    let (ringing_leg, ..) = only_dial(&h.take());
    h.cc.shutdown(h.now);
    h.collect();
    let out = h.take();
    let mut got = hangups(&out);
    got.sort_by_key(|(l, _)| *l);
    assert_eq!(
        got,
        [
            (IN1, EndReason::Normal),
            (IN2, EndReason::Congestion),
            (ringing_leg, EndReason::Normal)
        ]
    );
    assert_eq!(cdrs(&out).len(), 2);
    assert_eq!(h.cc.active_legs(), 0);
    h.incoming(LegId(9), SipOrigin::Trunk, "555", "101");
    assert_eq!(hangups(&h.take()), [(LegId(9), EndReason::Congestion)]);
}

#[test]
fn outgoing_sip_call_ids_are_unique() {
    let mut h = Harness::new();
    let mut ids = std::collections::BTreeSet::new();
    for n in 0..5 {
        h.incoming(
            LegId(100 + n),
            SipOrigin::Extension("211".into()),
            "211",
            "210",
        );
        let (_, _, id) = only_dial(&h.take());
        assert!(ids.insert(id));
    }
}

mod model {
    //! Random storms of board events and SIP inputs: call control never panics, every
    //! call ends with exactly one CDR, bridges balance, and every leg ends exactly once
    //! (by the endpoint's `Ended` or by call control's `SipHangup`, never both, except
    //! the documented late answer).
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        Board(u8, Event),
        Incoming(bool, &'static str),
        /// Acts on the n-th leg seen so far.
        Ringing(usize),
        Answered(usize),
        Ended(usize, EndReason),
        Digit(usize),
        Hold(usize, bool),
        Trunk(bool),
    }

    fn step() -> impl Strategy<Value = Step> {
        let fxs = (1u8..=3).prop_flat_map(|p| {
            prop_oneof![
                Just(Step::Board(p, Event::OffHook)),
                Just(Step::Board(p, Event::OnHook)),
                Just(Step::Board(p, Event::HookFlash)),
                prop::sample::select(b"0123456789#".to_vec())
                    .prop_map(move |d| Step::Board(p, Event::Digit(d))),
            ]
        });
        let fxo = (5u8..=6).prop_flat_map(|p| {
            prop_oneof![
                Just(Step::Board(p, Event::RingDetected { caller_id: None })),
                Just(Step::Board(p, Event::PolarityReversal)),
            ]
        });
        let reason = prop::sample::select(vec![
            EndReason::Normal,
            EndReason::Busy,
            EndReason::NoAnswer,
            EndReason::Unallocated,
            EndReason::Congestion,
            EndReason::Forbidden,
        ]);
        let sip = prop_oneof![
            (
                1u64..6,
                any::<bool>(),
                prop::sample::select(vec!["101", "102", "103", "210", "211", "9555", "77"])
            )
                .prop_map(|(_, t, d)| Step::Incoming(t, d)),
            (0usize..8).prop_map(Step::Ringing),
            (0usize..8).prop_map(Step::Answered),
            ((0usize..8), reason).prop_map(|(i, r)| Step::Ended(i, r)),
            (0usize..8).prop_map(Step::Digit),
            ((0usize..8), any::<bool>()).prop_map(|(i, h)| Step::Hold(i, h)),
            any::<bool>().prop_map(Step::Trunk),
        ];
        prop_oneof![3 => fxs, 1 => fxo, 3 => sip]
    }

    proptest! {
        #[test]
        fn sip_storms_balance(steps in prop::collection::vec((step(), 0u64..12_000), 1..150)) {
            let mut h = Harness::new();
            let mut seen: Vec<LegId> = Vec::new();
            let mut ended_by_endpoint: BTreeSet<LegId> = BTreeSet::new();
            let mut hung_up: BTreeMap<LegId, usize> = BTreeMap::new();
            let mut late_answers: BTreeMap<LegId, usize> = BTreeMap::new();
            let mut out_all = Vec::new();
            let mut next_in = 1u64;
            let mut steps = steps.into_iter().map(Some).collect::<Vec<_>>();
            steps.push(None); // the shutdown
            for item in steps {
                match item {
                    Some((s, gap)) => {
                        h.advance(Duration::from_millis(gap));
                        // What the timers did comes first.
                        for o in h.take() {
                            match &o {
                                Output::SipDial { leg, .. } => seen.push(*leg),
                                Output::SipHangup { leg, .. } => {
                                    prop_assert!(!ended_by_endpoint.contains(leg));
                                    *hung_up.entry(*leg).or_default() += 1;
                                }
                                _ => {}
                            }
                            out_all.push(o);
                        }
                        let pick = |i: usize| seen.get(i % seen.len().max(1)).copied();
                        match s {
                            Step::Board(p, e) => h.ev(p, e),
                            Step::Incoming(trunk, d) => {
                                let leg = LegId(next_in);
                                next_in += 1;
                                seen.push(leg);
                                let origin = if trunk {
                                    SipOrigin::Trunk
                                } else {
                                    SipOrigin::Extension("210".into())
                                };
                                h.incoming(leg, origin, "210", d);
                            }
                            Step::Ringing(i) => {
                                if let Some(leg) = pick(i) {
                                    h.sip(SipInput::Ringing { leg });
                                }
                            }
                            Step::Answered(i) => {
                                if let Some(leg) = pick(i).filter(|l| !ended_by_endpoint.contains(l)) {
                                    if hung_up.contains_key(&leg) {
                                        *late_answers.entry(leg).or_default() += 1;
                                    }
                                    h.sip(SipInput::Answered { leg });
                                }
                            }
                            Step::Ended(i, reason) => {
                                // The endpoint reports a leg's end once, and not after
                                // it was told to hang it up.
                                if let Some(leg) = pick(i).filter(|l| {
                                    !ended_by_endpoint.contains(l) && !hung_up.contains_key(l)
                                }) {
                                    ended_by_endpoint.insert(leg);
                                    h.sip(SipInput::Ended { leg, reason });
                                }
                            }
                            Step::Digit(i) => {
                                if let Some(leg) = pick(i) {
                                    h.sip(SipInput::Digit { leg, digit: '7' });
                                }
                            }
                            Step::Hold(i, held) => {
                                if let Some(leg) = pick(i) {
                                    h.sip(SipInput::Hold { leg, held });
                                }
                            }
                            Step::Trunk(usable) => h.cc.set_trunk_status(if usable {
                                TrunkStatus::Usable
                            } else {
                                TrunkStatus::Unusable
                            }),
                        }
                    }
                    None => {
                        h.cc.shutdown(h.now);
                        h.collect();
                    }
                }
                for o in h.take() {
                    match &o {
                        Output::SipDial { leg, .. } => seen.push(*leg),
                        Output::SipHangup { leg, .. } => {
                            prop_assert!(
                                !ended_by_endpoint.contains(leg),
                                "leg {} hung up after the endpoint ended it", leg
                            );
                            *hung_up.entry(*leg).or_default() += 1;
                        }
                        _ => {}
                    }
                    out_all.push(o);
                }
            }
            prop_assert_eq!(h.cc.active_calls(), 0);
            prop_assert_eq!(h.cc.active_legs(), 0);
            for leg in &seen {
                let n = hung_up.get(leg).copied().unwrap_or(0);
                let late = late_answers.get(leg).copied().unwrap_or(0);
                prop_assert!(n <= 1 + late, "leg {} hung up {} times", leg, n);
                prop_assert!(
                    ended_by_endpoint.contains(leg) || n > 0,
                    "leg {} never ended", leg
                );
            }
            let mut bridges: BTreeMap<(MediaEnd, MediaEnd), i32> = BTreeMap::new();
            let mut ids = BTreeSet::new();
            for o in &out_all {
                match o {
                    Output::Connect(a, b) => *bridges.entry((*a.min(b), *a.max(b))).or_default() += 1,
                    Output::Disconnect(a, b) => *bridges.entry((*a.min(b), *a.max(b))).or_default() -= 1,
                    Output::Cdr(c) => {
                        prop_assert!(ids.insert(c.call_id.clone()), "CDR twice: {}", c.call_id);
                        prop_assert!(c.ended_at_ms >= c.started_at_ms);
                    }
                    _ => {}
                }
            }
            for (pair, n) in bridges {
                prop_assert!(n == 0, "bridge {:?} left at {}", pair, n);
            }
        }
    }
}

#[test]
fn sip_phone_without_call_waiting_is_busy_while_on_a_call() {
    let mut h = Harness::new();
    // 211 (call waiting off) calls FXS 101, which answers.
    h.incoming(IN1, SipOrigin::Extension("211".into()), "211", "101");
    h.ev(1, Event::OffHook);
    h.take();
    // FXS 103 calls 211: busy at once, no INVITE.
    h.ev(3, Event::OffHook);
    h.dial(3, "211");
    let out = h.take();
    assert!(dials(&out).is_empty(), "{out:?}");
    assert!(tone_is(&out, 3, Tone::Busy));
    assert_eq!(cdrs(&out)[0].disposition, Disposition::Busy);
    h.ev(3, Event::OnHook);
    // 210 (call waiting on) on a call is offered a second one for its own call waiting.
    h.incoming(IN2, SipOrigin::Extension("210".into()), "210", "103");
    h.ev(3, Event::OffHook);
    h.take();
    h.incoming(LegId(3), SipOrigin::Trunk, "+4930123", "210");
    let (_, target, _) = only_dial(&h.take());
    assert_eq!(target, SipTarget::Extension("210".into()));
    // Once 211's call is over it is offered calls again.
    h.sip(SipInput::Ended {
        leg: IN1,
        reason: EndReason::Normal,
    });
    h.take();
    h.incoming(LegId(4), SipOrigin::Trunk, "+4930123", "211");
    let (_, target, _) = only_dial(&h.take());
    assert_eq!(target, SipTarget::Extension("211".into()));
}

fn quality(mos: f64) -> crate::cdr::CdrLegQuality {
    crate::cdr::CdrLegQuality {
        loss_percent: 1.0,
        jitter_ms: 4.0,
        mos,
    }
}

/// A SIP phone (IN1, 210) talking to SIP phone 211 on the returned leg, both legs'
/// RTP started.
fn sip_to_sip_with_media(h: &mut Harness) -> LegId {
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "211");
    let (out_leg, _, _) = only_dial(&h.take());
    h.sip(SipInput::Answered { leg: out_leg });
    h.sip(SipInput::Media { leg: IN1 });
    h.sip(SipInput::Media { leg: out_leg });
    h.take();
    out_leg
}

#[test]
fn the_cdr_waits_for_the_quality_of_its_legs() {
    let mut h = Harness::new();
    let callee = sip_to_sip_with_media(&mut h);
    h.advance(Duration::from_secs(20));
    // The far end hangs up: the endpoint reports the leg's quality, then its end.
    h.sip(SipInput::Quality {
        leg: callee,
        quality: Some(quality(4.3)),
    });
    h.sip(SipInput::Ended {
        leg: callee,
        reason: EndReason::Normal,
    });
    let out = h.take();
    assert_eq!(hangups(&out), [(IN1, EndReason::Normal)]);
    assert!(cdrs(&out).is_empty(), "waits for the caller leg: {out:?}");
    assert!(h.cc.timeout().is_some());
    // The caller's leg closed: its report completes the record.
    h.advance(Duration::from_millis(30));
    h.sip(SipInput::Quality {
        leg: IN1,
        quality: Some(quality(3.7)),
    });
    let out = h.take();
    let records = cdrs(&out);
    assert_eq!(records.len(), 1, "{out:?}");
    assert_eq!(records[0].caller_quality, Some(quality(3.7)));
    assert_eq!(records[0].callee_quality, Some(quality(4.3)));
    // The end time is when the call ended, not when the report came.
    assert_eq!(records[0].billable_ms(), 20_000);
    assert!(records[0].transfer_chain.is_empty());
    assert_eq!(h.cc.timeout(), None, "nothing left waiting");
}

/// A call that ended but whose CDR waits for its legs' quality is in the journal's
/// refresh as it stands (`ended`, not interrupted), so a stop during that wait
/// stores it as it was.
#[test]
fn a_cdr_waiting_for_quality_is_journaled_as_it_stands() {
    use crate::cdr::JournalUpdate;
    let journal = |h: &mut Harness| {
        h.cc.update_journal(h.now);
        h.collect();
        h.take()
            .into_iter()
            .filter_map(|o| match o {
                Output::Journal(u) => Some(u),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let mut h = Harness::new();
    let callee = sip_to_sip_with_media(&mut h);
    let written = journal(&mut h);
    assert!(
        matches!(&written[..], [JournalUpdate::Upsert(c)] if c.len() == 1 && !c[0].ended),
        "{written:?}"
    );
    h.advance(Duration::from_secs(3));
    h.sip(SipInput::Ended {
        leg: callee,
        reason: EndReason::Normal,
    });
    assert!(cdrs(&h.take()).is_empty(), "waits for quality");
    assert!(journal(&mut h).is_empty());
    // The refresh falls inside the quality wait.
    h.advance(super::JOURNAL_REFRESH - Duration::from_secs(3));
    let written = journal(&mut h);
    let [JournalUpdate::Replace(calls)] = &written[..] else {
        panic!("a refresh: {written:?}");
    };
    let [pending] = &calls[..] else {
        panic!("the waiting CDR: {calls:?}");
    };
    assert!(pending.ended);
    assert!(!pending.cdr.interrupted);
    assert_eq!(pending.cdr.hangup_side, HangupSide::Callee);
    assert_eq!(pending.cdr.billable_ms(), 3_000);
    // Then the CDR itself.
    h.advance(QUALITY_WAIT);
    assert_eq!(cdrs(&h.take()).len(), 1);
}

#[test]
fn a_missing_quality_report_delays_the_cdr_at_most_quality_wait() {
    let mut h = Harness::new();
    let callee = sip_to_sip_with_media(&mut h);
    h.sip(SipInput::Ended {
        leg: callee,
        reason: EndReason::Normal,
    });
    assert!(cdrs(&h.take()).is_empty());
    h.advance(QUALITY_WAIT - Duration::from_millis(1));
    assert!(cdrs(&h.take()).is_empty());
    h.advance(Duration::from_millis(1));
    let records = cdrs(&h.take());
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].caller_quality, records[0].callee_quality),
        (None, None)
    );
    // A report after the record was written changes nothing.
    h.sip(SipInput::Quality {
        leg: IN1,
        quality: Some(quality(4.0)),
    });
    assert!(h.take().is_empty());
}

#[test]
fn legs_without_rtp_do_not_delay_the_cdr_and_shutdown_flushes() {
    let mut h = Harness::new();
    // No SipInput::Media: the record is written at once (as before quality existed).
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "211");
    let (out_leg, _, _) = only_dial(&h.take());
    h.sip(SipInput::Answered { leg: out_leg });
    h.sip(SipInput::Ended {
        leg: out_leg,
        reason: EndReason::Normal,
    });
    assert_eq!(cdrs(&h.take()).len(), 1);
    // With media, a shutdown writes the waiting record without the reports.
    let callee = sip_to_sip_with_media(&mut h);
    h.sip(SipInput::Quality {
        leg: callee,
        quality: None,
    });
    h.sip(SipInput::Ended {
        leg: callee,
        reason: EndReason::Normal,
    });
    assert!(cdrs(&h.take()).is_empty());
    h.cc.shutdown(h.now);
    let out: Vec<Output> = std::iter::from_fn(|| h.cc.poll_output()).collect();
    assert_eq!(cdrs(&out).len(), 1, "{out:?}");
}

fn bridge_changes(out: &[Output]) -> Vec<Output> {
    out.iter()
        .filter(|o| matches!(o, Output::Connect(..) | Output::Disconnect(..)))
        .cloned()
        .collect()
}

#[test]
fn early_media_from_the_trunk_replaces_ringback_for_a_phone_without_a_gap() {
    let mut h = Harness::new();
    h.cc.set_trunk_status(TrunkStatus::Usable);
    h.ev(1, Event::OffHook);
    h.dial(1, "90301234#");
    let (out_leg, _, _) = only_dial(&h.take());
    // 183 with SDP: the phone's tone stops and it hears the far end instead.
    h.sip(SipInput::EarlyMedia { leg: out_leg });
    let out = h.take();
    assert!(has_cmd(&out, 1, |c| *c == Command::StopTone), "{out:?}");
    assert_eq!(
        bridge_changes(&out),
        [Output::Connect(port(1), leg(out_leg))]
    );
    // A 180 after the 183 keeps the early media: no ringback tone.
    h.sip(SipInput::Ringing { leg: out_leg });
    let out = h.take();
    assert!(!tone_is(&out, 1, Tone::Ringback), "{out:?}");
    assert!(bridge_changes(&out).is_empty());
    // The answer keeps the bridge as it is: no Disconnect/Connect in between.
    h.advance(Duration::from_secs(5));
    h.sip(SipInput::Answered { leg: out_leg });
    let out = h.take();
    assert!(bridge_changes(&out).is_empty(), "{out:?}");
    h.advance(Duration::from_secs(7));
    h.ev(1, Event::OnHook);
    let out = h.take();
    assert_eq!(
        bridge_changes(&out),
        [Output::Disconnect(port(1), leg(out_leg))]
    );
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.disposition, Disposition::Answered);
    assert_eq!(cdr.billable_ms(), 7_000);
}

#[test]
fn early_media_reaches_a_sip_caller_as_183_and_continues_on_answer() {
    let mut h = Harness::new();
    h.cc.set_trunk_status(TrunkStatus::Usable);
    h.incoming(IN1, SipOrigin::Extension("211".into()), "211", "9555");
    let (out_leg, _, _) = only_dial(&h.take());
    h.sip(SipInput::EarlyMedia { leg: out_leg });
    h.sip(SipInput::Ringing { leg: out_leg });
    let out = h.take();
    let ringing: Vec<&Output> = out
        .iter()
        .filter(|o| matches!(o, Output::SipRinging { .. }))
        .collect();
    assert_eq!(
        ringing,
        [&Output::SipRinging {
            leg: IN1,
            early_media: true
        }],
        "183 with SDP once, no 180 after it: {out:?}"
    );
    assert_eq!(
        bridge_changes(&out),
        [Output::Connect(leg(IN1), leg(out_leg))]
    );
    h.sip(SipInput::Answered { leg: out_leg });
    let out = h.take();
    assert!(out.contains(&Output::SipAnswer { leg: IN1 }));
    assert!(bridge_changes(&out).is_empty(), "{out:?}");
}

#[test]
fn early_media_ends_with_its_offer_and_ringback_returns() {
    let mut h = Harness::new();
    // 102 is FXS 2 and a SIP phone: both ring. The phone's leg sends early media,
    // then declines; port 2 still rings, so the caller hears ringback again.
    h.ev(1, Event::OffHook);
    h.dial(1, "102");
    let (phone, _, _) = only_dial(&h.take());
    h.sip(SipInput::EarlyMedia { leg: phone });
    assert_eq!(
        bridge_changes(&h.take()),
        [Output::Connect(port(1), leg(phone))]
    );
    h.sip(SipInput::Ended {
        leg: phone,
        reason: EndReason::Busy,
    });
    let out = h.take();
    assert_eq!(
        bridge_changes(&out),
        [Output::Disconnect(port(1), leg(phone))]
    );
    assert!(tone_is(&out, 1, Tone::Ringback), "{out:?}");
    // Port 2 answers: an ordinary port-to-port call.
    h.ev(2, Event::OffHook);
    assert_eq!(
        bridge_changes(&h.take()),
        [Output::Connect(port(1), port(2))]
    );
}

#[test]
fn early_media_is_dropped_when_another_device_answers() {
    let mut h = Harness::new();
    h.ev(1, Event::OffHook);
    h.dial(1, "102");
    let (phone, _, _) = only_dial(&h.take());
    h.sip(SipInput::EarlyMedia { leg: phone });
    h.take();
    h.ev(2, Event::OffHook);
    let out = h.take();
    assert_eq!(
        bridge_changes(&out),
        [
            Output::Disconnect(port(1), leg(phone)),
            Output::Connect(port(1), port(2))
        ]
    );
    assert_eq!(hangups(&out), [(phone, EndReason::Normal)]);
    // Early media on an unknown or answered leg changes nothing.
    h.sip(SipInput::EarlyMedia { leg: phone });
    h.sip(SipInput::EarlyMedia {
        leg: LegId(LegId::OUTGOING | 99),
    });
    assert!(h.take().is_empty());
}

/// A directory of two outside numbers.
#[derive(Debug)]
struct MapDirectory(BTreeMap<&'static str, &'static str>);

impl CallerDirectory for MapDirectory {
    fn name_of(&self, number: &str) -> Option<String> {
        self.0.get(number).map(|n| n.to_string())
    }
}

fn shown_name(out: &[Output], port: u8) -> Option<String> {
    out.iter().find_map(|o| match o {
        Output::Command {
            port: p,
            command: Command::SendCallerId { caller_id, .. },
        } if *p == port => Some(caller_id.name.to_string()),
        _ => None,
    })
}

#[test]
fn outside_callers_are_named_from_the_directory() {
    let directory = || {
        Box::new(MapDirectory(
            [("+4930123", "ACME Berlin"), ("5551234", "Bakery")].into(),
        ))
    };
    // Trunk: the directory's name beats the From display name.
    let mut h = Harness::new();
    h.cc.set_directory(directory());
    h.sip(SipInput::Incoming {
        leg: IN1,
        origin: SipOrigin::Trunk,
        caller_number: "+4930123".into(),
        caller_name: "WIRELESS CALLER".into(),
        dialled: "101".into(),
        sip_call_id: "call-1@carrier".into(),
        replaces: None,
    });
    assert_eq!(shown_name(&h.take(), 1).as_deref(), Some("ACME Berlin"));
    // PSTN: the line's caller ID has a number only.
    let mut h = Harness::new();
    h.cc.set_directory(directory());
    h.ev(
        5,
        Event::RingDetected {
            caller_id: Some(line_proto::CallerId::new("5551234", "").unwrap()),
        },
    );
    assert_eq!(shown_name(&h.take(), 1).as_deref(), Some("Bakery"));
    // A number the directory does not know keeps the network's name.
    let mut h = Harness::new();
    h.cc.set_directory(directory());
    h.ev(
        5,
        Event::RingDetected {
            caller_id: Some(line_proto::CallerId::new("5559999", "PSTN").unwrap()),
        },
    );
    assert_eq!(shown_name(&h.take(), 1).as_deref(), Some("PSTN"));
    // A local SIP phone is never looked up (it is an extension).
    let mut h = Harness::new();
    h.cc.set_directory(Box::new(MapDirectory([("210", "Not me")].into())));
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "101");
    assert_ne!(shown_name(&h.take(), 1).as_deref(), Some("Not me"));
}

#[test]
fn a_media_timeout_ends_a_sip_to_fxs_call_like_a_hangup_marked_system() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "101");
    h.advance(Duration::from_secs(2));
    h.ev(1, Event::OffHook);
    h.take();
    h.advance(Duration::from_secs(40));
    h.sip(SipInput::MediaTimeout { leg: IN1 });
    let out = h.take();
    // The silent leg gets its BYE; the phone is released as after a far-end hangup.
    assert_eq!(hangups(&out), [(IN1, EndReason::Normal)]);
    assert!(out.contains(&Output::Disconnect(leg(IN1), port(1))));
    assert!(tone_is(&out, 1, Tone::Busy));
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.disposition, Disposition::Answered);
    assert_eq!(cdr.hangup_side, HangupSide::System);
    assert_eq!(
        cdr.hangup_cause,
        Some(crate::cdr::HangupCause::MediaTimeout)
    );
    assert_eq!(cdr.billable_ms(), 40_000);
    assert_eq!(h.cc.active_legs(), 0);
    // A late report for the gone leg changes nothing.
    h.sip(SipInput::MediaTimeout { leg: IN1 });
    let out = h.take();
    assert!(cdrs(&out).is_empty(), "{out:?}");
}

#[test]
fn a_media_timeout_on_one_sip_leg_hangs_up_the_other_too() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "211");
    let (out_leg, ..) = only_dial(&h.take());
    h.sip(SipInput::Answered { leg: out_leg });
    h.take();
    h.sip(SipInput::MediaTimeout { leg: out_leg });
    let out = h.take();
    let mut ended = hangups(&out);
    ended.sort();
    assert_eq!(
        ended,
        [(IN1, EndReason::Normal), (out_leg, EndReason::Normal)],
        "BYE to both legs: {out:?}"
    );
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.hangup_side, HangupSide::System);
    assert_eq!(
        cdr.hangup_cause,
        Some(crate::cdr::HangupCause::MediaTimeout)
    );
    assert_eq!(h.cc.active_legs(), 0);
}

#[test]
fn a_normal_hangup_has_no_hangup_cause() {
    let mut h = Harness::new();
    h.incoming(IN1, SipOrigin::Extension("210".into()), "210", "101");
    h.ev(1, Event::OffHook);
    h.take();
    h.ev(1, Event::OnHook);
    let cdr = &cdrs(&h.take())[0];
    assert_eq!(cdr.hangup_side, HangupSide::Callee);
    assert_eq!(cdr.hangup_cause, None);
}

#[test]
fn a_media_timeout_for_a_leg_call_control_forgot_still_ends_the_leg() {
    let mut h = Harness::new();
    h.sip(SipInput::MediaTimeout { leg: IN2 });
    assert_eq!(hangups(&h.take()), [(IN2, EndReason::Normal)]);
}

/// HQ's routes with a permission: `00` (international) needs `international`, the
/// shorter `0` and the default route need none. FXS 1 (101) and SIP 211 hold
/// `international`; FXS 3 (103) and SIP 210 hold nothing.
pub(super) fn permission_harness() -> Harness {
    let mut h = Harness::with(|s| {
        s.extensions[0].permissions = vec!["international".into()];
        s.sip_extensions[2].permissions = vec!["premium".into(), "international".into()];
    });
    let via = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    h.cc.set_dial_routes(DialRoutes::new(vec![
        DialRoute::new("default", "", &via(&["fxo"]), None).expect("route"),
        DialRoute::new("national", "0", &via(&["fxo"]), None).expect("route"),
        DialRoute::new(
            "international",
            "00",
            &via(&["fxo"]),
            Some("international".into()),
        )
        .expect("route"),
    ]));
    h
}

#[test]
fn an_analog_phone_without_the_routes_permission_gets_congestion_and_a_distinct_cdr() {
    let mut h = permission_harness();
    h.ev(3, Event::OffHook);
    h.dial(3, "90049301234#");
    let out = h.take();
    // Refused: congestion, no line seized (not the `0` or default route either).
    assert!(tone_is(&out, 3, Tone::Congestion), "{out:?}");
    assert!(!has_cmd(&out, 6, |c| *c == Command::FxoSeize), "{out:?}");
    let cdr = &cdrs(&out)[0];
    assert_eq!(cdr.disposition, Disposition::Congestion);
    assert_eq!(cdr.hangup_side, HangupSide::System);
    assert_eq!(
        cdr.hangup_cause,
        Some(crate::cdr::HangupCause::RouteNotPermitted)
    );
    assert_eq!(
        (cdr.caller.as_str(), cdr.callee.as_str()),
        ("103", "0049301234")
    );
    h.ev(3, Event::OnHook);
    h.take();
    // The same phone reaches what needs no permission.
    h.ev(3, Event::OffHook);
    h.dial(3, "90301234#");
    assert!(has_cmd(&h.take(), 6, |c| *c == Command::FxoSeize));
    h.ev(3, Event::OnHook);
    h.take();
    // A phone holding the permission goes out on the route.
    h.ev(1, Event::OffHook);
    h.dial(1, "90049301234#");
    let out = h.take();
    assert!(
        has_cmd(&out, 6, |c| *c == Command::fxo_dial("0049301234").unwrap()),
        "{out:?}"
    );
    assert!(cdrs(&out).is_empty());
}

#[test]
fn a_sip_phone_without_the_routes_permission_gets_403() {
    let mut h = permission_harness();
    h.incoming(
        IN1,
        SipOrigin::Extension("210".into()),
        "210",
        "90049301234",
    );
    let out = h.take();
    assert_eq!(hangups(&out), [(IN1, EndReason::Forbidden)]);
    assert!(!has_cmd(&out, 6, |c| *c == Command::FxoSeize));
    let cdr = &cdrs(&out)[0];
    assert_eq!(
        cdr.hangup_cause,
        Some(crate::cdr::HangupCause::RouteNotPermitted)
    );
    assert_eq!(cdr.disposition, Disposition::Congestion);
    // 211 holds it.
    h.incoming(
        IN2,
        SipOrigin::Extension("211".into()),
        "211",
        "90049301234",
    );
    let out = h.take();
    assert!(has_cmd(&out, 6, |c| *c == Command::FxoSeize), "{out:?}");
    assert!(hangups(&out).is_empty());
}

#[test]
fn a_call_no_permissioned_route_matches_is_not_checked() {
    let mut h = permission_harness();
    h.cc.set_dial_routes(DialRoutes::default());
    h.ev(3, Event::OffHook);
    h.dial(3, "90049301234#");
    assert!(has_cmd(&h.take(), 6, |c| *c == Command::FxoSeize));
}
