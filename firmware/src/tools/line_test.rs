//! The line test of an idle analog port (issue 8, ports page): what a technician runs
//! before blaming the phone, the wiring or the PSTN line.
//!
//! The box asks the line controller for its SLIC/DAA self-test (`SelfTest`) and a
//! line measurement (`ReadLine`), both over the board's normal wire protocol, and
//! judges the answers here (sans-IO: [`LineTestRun`] is fed the port's events and
//! `now`; the main loop's status publisher owns the runs, see
//! [`crate::web::status::StatusPublisher::line_test`]). Checks, each with a verdict
//! and the measured value in words:
//!
//! | check | FXS (a phone, handset down) | FXO (a PSTN line, idle) |
//! | --- | --- | --- |
//! | self-test | passed | passed |
//! | line voltage (tip to ring) | 40–56 V: the SLIC's -48 V battery feed; lower: a short or the feed is down; higher: foreign voltage on the pair | 20–60 V: the exchange's idle battery (48 V, 24 V on some lines); lower: no line (cut, unplugged); higher: ringing or foreign voltage |
//! | loop current | under 10 mA: the loop is open; more: a handset off the hook or a shorted pair | under 10 mA: the line is not seized |
//! | fault | none reported by the board | none reported by the board |
//!
//! A test passes when every check does. One that gets no self-test result or no
//! reading within [`LINE_TEST_TIMEOUT`] fails with "no answer from the line
//! controller" (an MCU that does not know the command rejects it, and the run then
//! ends at its timeout). A passed self-test also brings a port call control had taken
//! out of service after a fault back into service (call control sees the same event).
//!
//! Why by hand: the thresholds are the analog line's electrical facts (the SLIC's
//! battery feed, the exchange's idle voltage, the off-hook loop current of
//! [`crate::web::status::OFF_HOOK_MICROAMPS`]); no crate models a telephone line.
//!
//! Limits: the board reports one DC reading; there is no AC (ringer equivalence, REN)
//! or insulation (tip/ring to ground) measurement in the protocol, so a line with too
//! many ringers shows only as the board's own `RingerOverload` fault.

use std::time::{Duration, Instant};

use line_proto::Event;
use serde::Serialize;

use crate::web::status::{fault_text, PortKind, OFF_HOOK_MICROAMPS};

/// How long a line test waits for the line controller's answers.
pub const LINE_TEST_TIMEOUT: Duration = Duration::from_secs(3);

/// One check of a line test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineCheck {
    /// What was checked: `self-test`, `line voltage`, `loop current`, `fault`.
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// The measured value and, when it failed, what that usually means.
    pub detail: String,
}

/// The outcome of a line test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineTestResult {
    /// Which run this is (the publisher numbers them; the API waits for its own).
    pub id: u64,
    /// When it ended, ms since the Unix epoch.
    pub at_ms: i64,
    /// Whether every check passed.
    pub passed: bool,
    /// The checks, in the order of the module doc's table.
    pub checks: Vec<LineCheck>,
}

impl LineTestResult {
    /// The first failed check's detail, or "all checks passed".
    pub fn summary(&self) -> String {
        self.checks.iter().find(|c| !c.passed).map_or_else(
            || "all checks passed".to_owned(),
            |c| format!("{}: {}", c.name, c.detail),
        )
    }
}

/// A line test in progress on one port.
#[derive(Debug, Clone)]
pub struct LineTestRun {
    id: u64,
    kind: PortKind,
    deadline: Instant,
    self_test: Option<(bool, u8)>,
    reading: Option<(i32, u32)>,
    fault: Option<String>,
}

impl LineTestRun {
    /// A run numbered `id` on a port of `kind`, started at `now`; `fault` is the
    /// fault the board reported on the port and that has not cleared.
    pub fn new(id: u64, kind: PortKind, now: Instant, fault: Option<String>) -> LineTestRun {
        LineTestRun {
            id,
            kind,
            deadline: now + LINE_TEST_TIMEOUT,
            self_test: None,
            reading: None,
            fault,
        }
    }

    /// Its number.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// When it gives up waiting.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// An event of the port; true when the run has what it needs.
    pub fn on_event(&mut self, event: &Event) -> bool {
        match event {
            Event::SelfTestResult { passed, code } => self.self_test = Some((*passed, *code)),
            Event::LineReading {
                millivolts,
                microamps,
            } => self.reading = Some((*millivolts, *microamps)),
            Event::Fault(kind) => self.fault = Some(fault_text(*kind).to_owned()),
            _ => {}
        }
        self.self_test.is_some() && self.reading.is_some()
    }

    /// The verdict now (at the end, or at the deadline with what arrived).
    pub fn finish(self, now_ms: i64) -> LineTestResult {
        let mut checks = Vec::with_capacity(4);
        checks.push(match self.self_test {
            Some((true, _)) => check("self-test", true, "passed".to_owned()),
            Some((false, code)) => check(
                "self-test",
                false,
                format!("the line interface chip reports fault code {code}"),
            ),
            None => check(
                "self-test",
                false,
                "no answer from the line controller".to_owned(),
            ),
        });
        match self.reading {
            Some((mv, ua)) => {
                checks.push(voltage(self.kind, mv));
                checks.push(current(self.kind, ua));
            }
            None => {
                let none = "no reading from the line controller".to_owned();
                checks.push(check("line voltage", false, none.clone()));
                checks.push(check("loop current", false, none));
            }
        }
        checks.push(match self.fault {
            None => check("fault", true, "none reported".to_owned()),
            Some(f) => check("fault", false, f),
        });
        LineTestResult {
            id: self.id,
            at_ms: now_ms,
            passed: checks.iter().all(|c| c.passed),
            checks,
        }
    }
}

fn check(name: &'static str, passed: bool, detail: String) -> LineCheck {
    LineCheck {
        name,
        passed,
        detail,
    }
}

/// Volts with one decimal from millivolts (sign dropped: polarity is not a fault).
fn volts(mv: i32) -> String {
    let mv = mv.unsigned_abs();
    format!("{}.{} V", mv / 1000, mv % 1000 / 100)
}

fn milliamps(ua: u32) -> String {
    format!("{}.{} mA", ua / 1000, ua % 1000 / 100)
}

fn voltage(kind: PortKind, mv: i32) -> LineCheck {
    let v = volts(mv);
    let mv = mv.unsigned_abs();
    let (passed, detail) = match kind {
        PortKind::Fxs if mv < 40_000 => (
            false,
            format!("{v}, expected 40-56 V: the pair is shorted or the line feed is down"),
        ),
        PortKind::Fxs if mv > 56_000 => (
            false,
            format!(
                "{v}, expected 40-56 V: foreign voltage on the pair (crossed with another line?)"
            ),
        ),
        PortKind::Fxo if mv < 20_000 => (
            false,
            format!(
                "{v}, expected 20-60 V: no line (cut, unplugged or not connected at the exchange)"
            ),
        ),
        PortKind::Fxo if mv > 60_000 => (
            false,
            format!("{v}, expected 20-60 V: the line is ringing or carries foreign voltage"),
        ),
        _ => (true, v),
    };
    check("line voltage", passed, detail)
}

fn current(kind: PortKind, ua: u32) -> LineCheck {
    let a = milliamps(ua);
    let (passed, detail) = if ua < OFF_HOOK_MICROAMPS {
        (true, a)
    } else {
        match kind {
            PortKind::Fxs => (
                false,
                format!("{a} with the loop expected open: a handset is off the hook or the pair is shorted"),
            ),
            PortKind::Fxo => (
                false,
                format!("{a} with the line expected idle: the line is seized (by this box or a parallel phone)"),
            ),
        }
    };
    check("loop current", passed, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use line_proto::FaultKind;

    fn run(kind: PortKind, events: &[Event]) -> (bool, LineTestResult) {
        let mut r = LineTestRun::new(7, kind, Instant::now(), None);
        let mut done = false;
        for e in events {
            done = r.on_event(e);
        }
        (done, r.finish(5))
    }

    fn reading(mv: i32, ua: u32) -> Event {
        Event::LineReading {
            millivolts: mv,
            microamps: ua,
        }
    }

    const PASS: Event = Event::SelfTestResult {
        passed: true,
        code: 0,
    };

    fn failed(r: &LineTestResult) -> Vec<&'static str> {
        r.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn a_healthy_fxs_and_fxo_line_pass_every_check() {
        for (kind, mv) in [
            (PortKind::Fxs, -48_000),
            (PortKind::Fxo, 48_000),
            (PortKind::Fxo, 24_000),
        ] {
            let (done, r) = run(kind, &[PASS, reading(mv, 0)]);
            assert!(done);
            assert!(r.passed, "{kind:?} {mv}: {r:?}");
            assert_eq!((r.id, r.at_ms), (7, 5));
            assert_eq!(r.checks.len(), 4);
            assert_eq!(r.summary(), "all checks passed");
            assert_eq!(r.checks[1].detail, format!("{}.0 V", mv.abs() / 1000));
        }
    }

    #[test]
    fn each_bad_measurement_fails_its_check_with_the_likely_cause() {
        let cases: &[(PortKind, i32, u32, &str, &str)] = &[
            (PortKind::Fxs, 12_000, 0, "line voltage", "shorted"),
            (PortKind::Fxs, 39_999, 0, "line voltage", "expected 40-56 V"),
            (PortKind::Fxs, 95_000, 0, "line voltage", "foreign voltage"),
            (
                PortKind::Fxs,
                48_000,
                25_000,
                "loop current",
                "off the hook",
            ),
            (PortKind::Fxo, 0, 0, "line voltage", "no line"),
            (PortKind::Fxo, 19_999, 0, "line voltage", "no line"),
            (PortKind::Fxo, 90_000, 0, "line voltage", "ringing"),
            (PortKind::Fxo, 7_500, 20_000, "line voltage", "no line"),
            (PortKind::Fxo, 48_000, 20_000, "loop current", "seized"),
        ];
        for (kind, mv, ua, name, words) in cases {
            let (_, r) = run(*kind, &[PASS, reading(*mv, *ua)]);
            assert!(!r.passed, "{kind:?} {mv} {ua}");
            assert_eq!(failed(&r)[0], *name, "{kind:?} {mv} {ua}: {r:?}");
            assert!(r.summary().contains(words), "{}", r.summary());
        }
        // Boundaries inside the ranges pass.
        for (kind, mv, ua) in [
            (PortKind::Fxs, 40_000, 9_999),
            (PortKind::Fxs, 56_000, 0),
            (PortKind::Fxo, 20_000, 0),
            (PortKind::Fxo, -60_000, 0),
        ] {
            assert!(
                run(kind, &[PASS, reading(mv, ua)]).1.passed,
                "{kind:?} {mv} {ua}"
            );
        }
    }

    #[test]
    fn a_failed_self_test_or_a_fault_fails_the_test() {
        let (_, r) = run(
            PortKind::Fxs,
            &[
                Event::SelfTestResult {
                    passed: false,
                    code: 3,
                },
                reading(48_000, 0),
            ],
        );
        assert_eq!(failed(&r), ["self-test"]);
        assert_eq!(
            r.summary(),
            "self-test: the line interface chip reports fault code 3"
        );
        // A fault the board had reported before the test, and one during it.
        let mut before = LineTestRun::new(
            1,
            PortKind::Fxo,
            Instant::now(),
            Some("no line voltage".into()),
        );
        before.on_event(&PASS);
        before.on_event(&reading(48_000, 0));
        assert_eq!(failed(&before.finish(0)), ["fault"]);
        let (_, r) = run(
            PortKind::Fxs,
            &[Event::Fault(FaultKind::Thermal), PASS, reading(48_000, 0)],
        );
        assert_eq!(failed(&r), ["fault"]);
    }

    #[test]
    fn missing_answers_fail_as_no_answer_and_the_run_waits_for_both() {
        let mut r = LineTestRun::new(2, PortKind::Fxs, Instant::now(), None);
        assert!(!r.on_event(&Event::OffHook));
        assert!(!r.on_event(&PASS), "a reading is still missing");
        let result = r.finish(9);
        assert_eq!(failed(&result), ["line voltage", "loop current"]);
        assert!(
            result.summary().contains("no reading"),
            "{}",
            result.summary()
        );
        let (done, r) = run(PortKind::Fxo, &[reading(48_000, 0)]);
        assert!(!done);
        assert_eq!(failed(&r), ["self-test"]);
        assert!(r.summary().contains("no answer"));
        let (_, r) = run(PortKind::Fxo, &[]);
        assert_eq!(failed(&r).len(), 3);
    }

    #[test]
    fn volts_and_milliamps_read_like_a_meter() {
        assert_eq!(volts(-48_250), "48.2 V");
        assert_eq!(volts(0), "0.0 V");
        assert_eq!(volts(i32::MIN), "2147483.6 V");
        assert_eq!(milliamps(25_050), "25.0 mA");
    }
}
