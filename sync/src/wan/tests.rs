//! Transitions of the [`WanMonitor`] on a virtual clock.

use std::time::{Duration, Instant};

use super::*;

/// Runs the monitor against scripted targets: `outcome(target, now)` answers each
/// probe at once (None: no answer at all).
struct Sim {
    monitor: WanMonitor,
    t0: Instant,
    now: Instant,
    /// Events with the second they happened at.
    events: Vec<(u64, WanEvent)>,
    /// Probes sent, with the second they were sent.
    probes: Vec<(u64, Target)>,
}

impl Sim {
    fn new(config: WanConfig, trunk: bool) -> Self {
        let t0 = Instant::now();
        Self {
            monitor: WanMonitor::new(config, trunk, t0).unwrap(),
            t0,
            now: t0,
            events: Vec::new(),
            probes: Vec::new(),
        }
    }

    fn secs(&self) -> u64 {
        (self.now - self.t0).as_secs()
    }

    /// Runs until `until_s` seconds after start.
    fn run(&mut self, until_s: u64, mut outcome: impl FnMut(Target, u64) -> Option<ProbeOutcome>) {
        let end = self.t0 + Duration::from_secs(until_s);
        loop {
            while let Some(probe) = self.monitor.poll_probe() {
                self.probes.push((self.secs(), probe.target));
                if let Some(outcome) = outcome(probe.target, self.secs()) {
                    self.monitor.handle(
                        self.now,
                        WanInput::Probe {
                            id: probe.id,
                            outcome,
                        },
                    );
                }
            }
            while let Some(event) = self.monitor.poll_event() {
                self.events.push((self.secs(), event));
            }
            let next = self
                .monitor
                .timeout()
                .expect("the monitor always has a next probe");
            assert!(next >= self.now, "timeout in the past");
            if next > end {
                self.now = end;
                return;
            }
            self.now = next;
            self.monitor.handle_timeout(self.now);
        }
    }

    fn states(&self) -> Vec<(u64, WanState)> {
        self.events
            .iter()
            .filter_map(|(at, e)| match e {
                WanEvent::State { to, .. } => Some((*at, *to)),
                WanEvent::Target { .. } => None,
            })
            .collect()
    }

    fn take(&mut self) -> Vec<(u64, WanEvent)> {
        std::mem::take(&mut self.events)
    }
}

fn ok(ms: u64) -> Option<ProbeOutcome> {
    Some(ProbeOutcome::Ok {
        rtt: Duration::from_millis(ms),
    })
}

fn failed() -> Option<ProbeOutcome> {
    Some(ProbeOutcome::Failed)
}

#[test]
fn starts_offline_and_goes_online_on_the_first_answers() {
    let mut sim = Sim::new(WanConfig::default(), true);
    assert_eq!(sim.monitor.state(), WanState::Offline);
    assert!(!sim.monitor.trunk_usable());
    sim.run(60, |_, _| ok(20));
    assert_eq!(sim.states(), [(0, WanState::Online)]);
    assert!(sim.monitor.trunk_usable());
    // Online: each target probed every 10 s.
    let hq: Vec<u64> = sim
        .probes
        .iter()
        .filter(|(_, t)| *t == Target::Hq)
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(hq, [0, 10, 20, 30, 40, 50, 60]);
}

#[test]
fn hq_down_degrades_after_three_failures_and_speeds_up_probing() {
    let mut sim = Sim::new(WanConfig::default(), true);
    sim.run(30, |_, _| ok(20));
    sim.take();
    // HQ fails from 40 s on; probes at 40, 50 (online pace), then the third at 60.
    sim.run(100, |t, s| {
        if t == Target::Hq && s >= 40 {
            failed()
        } else {
            ok(20)
        }
    });
    let events = sim.take();
    assert_eq!(
        events,
        [
            (
                60,
                WanEvent::Target {
                    target: Target::Hq,
                    reachable: false
                }
            ),
            (
                60,
                WanEvent::State {
                    from: WanState::Online,
                    to: WanState::Degraded
                }
            ),
        ]
    );
    assert!(sim.monitor.trunk_usable(), "the trunk is fine");
    // Degraded: probes every 2 s.
    let after: Vec<u64> = sim
        .probes
        .iter()
        .filter(|(at, t)| *t == Target::Hq && *at > 60)
        .map(|(at, _)| *at)
        .take(3)
        .collect();
    assert_eq!(after, [62, 64, 66]);
}

#[test]
fn both_down_is_offline_and_recovery_needs_three_successes() {
    let mut sim = Sim::new(WanConfig::default(), true);
    sim.run(5, |_, _| ok(20));
    sim.take();
    let cut = |s: u64| (10..40).contains(&s);
    sim.run(80, |_, s| if cut(s) { failed() } else { ok(20) });
    // Probes at 10, 20 fail (online pace); at 30 no success for 30 s takes both down
    // at once. Back at 40 s: probes at 40, 42, 44 (fast pace); up at the third success.
    assert_eq!(
        sim.states(),
        [(30, WanState::Offline), (44, WanState::Online)]
    );
    assert!(sim.monitor.trunk_usable());
}

#[test]
fn the_trunk_down_makes_outside_calls_use_fxo() {
    let mut sim = Sim::new(WanConfig::default(), true);
    sim.run(5, |_, _| ok(20));
    sim.run(60, |t, s| {
        if t == Target::Trunk && s >= 10 {
            failed()
        } else {
            ok(20)
        }
    });
    assert!(!sim.monitor.trunk_usable());
    assert_eq!(sim.monitor.state(), WanState::Degraded);
    let trunk_events: Vec<_> = sim
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                WanEvent::Target {
                    target: Target::Trunk,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(
        trunk_events.len(),
        2,
        "up once, down once: {trunk_events:?}"
    );
}

#[test]
fn flapping_degrades_once_instead_of_toggling() {
    let mut sim = Sim::new(WanConfig::default(), true);
    sim.run(5, |_, _| ok(20));
    sim.take();
    let mut n = 0u32;
    // The trunk answers every other probe for two minutes, then cleanly.
    sim.run(300, |t, s| {
        if t == Target::Trunk && s < 120 {
            n += 1;
            if n % 2 == 0 {
                failed()
            } else {
                ok(20)
            }
        } else {
            ok(20)
        }
    });
    let states = sim.states();
    assert_eq!(states.len(), 2, "one degrade, one recovery: {states:?}");
    assert_eq!(states[0].1, WanState::Degraded);
    assert_eq!(states[1].1, WanState::Online);
    assert!(states[1].0 > 120, "{states:?}");
    // The trunk never went unreachable: two failures in a row never happened.
    assert!(!sim.events.iter().any(|(_, e)| matches!(
        e,
        WanEvent::Target {
            target: Target::Trunk,
            reachable: false
        }
    )));
}

#[test]
fn slow_rtt_degrades_with_hysteresis() {
    let mut sim = Sim::new(WanConfig::default(), false);
    sim.run(5, |_, _| ok(50));
    sim.take();
    // RTT jumps to 900 ms: the smoothed RTT passes 400 ms after a few probes.
    sim.run(100, |_, _| ok(900));
    assert_eq!(sim.monitor.state(), WanState::Degraded);
    let degraded_at = sim.states()[0].0;
    assert!((10..=60).contains(&degraded_at), "{degraded_at}");
    // 300 ms sits between the thresholds: still degraded however long it lasts.
    sim.run(300, |_, _| ok(300));
    assert_eq!(sim.monitor.state(), WanState::Degraded);
    assert_eq!(sim.states().len(), 1);
    // 100 ms: recovers once the smoothed RTT is below 250 ms.
    sim.run(400, |_, _| ok(100));
    assert_eq!(sim.monitor.state(), WanState::Online);
    let snapshot = sim.monitor.snapshot();
    assert!(snapshot.targets[0].srtt.unwrap() < Duration::from_millis(250));
}

#[test]
fn an_unanswered_probe_fails_at_its_deadline_and_a_late_answer_is_ignored() {
    let config = WanConfig::default();
    let t0 = Instant::now();
    let mut monitor = WanMonitor::new(config, false, t0).unwrap();
    let probe = monitor.poll_probe().unwrap();
    assert_eq!(probe.deadline, t0 + Duration::from_secs(3));
    assert_eq!(monitor.timeout(), Some(probe.deadline));
    monitor.handle_timeout(probe.deadline);
    assert_eq!(monitor.snapshot().targets[0].consecutive_failures, 1);
    assert_eq!(
        monitor.poll_event(),
        Some(WanEvent::Target {
            target: Target::Hq,
            reachable: false
        })
    );
    monitor.handle(
        probe.deadline,
        WanInput::Probe {
            id: probe.id,
            outcome: ProbeOutcome::Ok {
                rtt: Duration::from_millis(5),
            },
        },
    );
    assert_eq!(
        monitor.snapshot().targets[0].last_ok,
        None,
        "late answer ignored"
    );
    assert_eq!(monitor.poll_event(), None);
}

#[test]
fn no_success_for_the_silence_time_means_down() {
    let config = WanConfig {
        down_after_failures: 1000,
        ..WanConfig::default()
    };
    let mut sim = Sim::new(config, false);
    sim.run(5, |_, _| ok(20));
    sim.take();
    // From 10 s on every probe fails, but never 1000 in a row: silence decides, 30 s
    // after the last success (the probe at 0 s).
    sim.run(120, |_, s| if s >= 10 { failed() } else { ok(20) });
    let down = sim
        .events
        .iter()
        .find(|(_, e)| {
            matches!(
                e,
                WanEvent::Target {
                    reachable: false,
                    ..
                }
            )
        })
        .unwrap();
    assert_eq!(down.0, 30);
    assert_eq!(sim.monitor.state(), WanState::Offline);
}

#[test]
fn probes_without_any_answer_take_the_target_down() {
    let mut sim = Sim::new(WanConfig::default(), false);
    sim.run(5, |_, _| ok(20));
    sim.take();
    sim.run(120, |_, s| if s >= 10 { None } else { ok(20) });
    // Probes at 10 and 20 go unanswered and fail 3 s later; at 30 s no probe has
    // succeeded for 30 s: down.
    assert_eq!(sim.states(), [(30, WanState::Offline)]);
}

#[test]
fn a_box_without_trunk_is_online_on_hq_alone() {
    let mut sim = Sim::new(WanConfig::default(), false);
    sim.run(20, |_, _| ok(20));
    assert_eq!(sim.monitor.state(), WanState::Online);
    assert!(!sim.monitor.trunk_usable());
    assert!(sim.probes.iter().all(|(_, t)| *t == Target::Hq));
}

#[test]
fn probe_now_probes_every_target_at_once() {
    let mut sim = Sim::new(WanConfig::default(), true);
    sim.run(13, |_, _| ok(20));
    let before = sim.probes.len();
    sim.monitor.handle(sim.now, WanInput::ProbeNow);
    let mut now_probes = Vec::new();
    while let Some(p) = sim.monitor.poll_probe() {
        now_probes.push(p.target);
    }
    assert_eq!(now_probes, [Target::Hq, Target::Trunk]);
    assert_eq!(sim.probes.len(), before);
}

#[test]
fn the_snapshot_reports_each_target() {
    let mut sim = Sim::new(WanConfig::default(), true);
    sim.run(25, |t, _| if t == Target::Hq { ok(35) } else { failed() });
    let snapshot = sim.monitor.snapshot();
    assert_eq!(snapshot.state, WanState::Degraded);
    assert_eq!(snapshot.since, sim.t0);
    assert!(!snapshot.trunk_usable);
    let hq = &snapshot.targets[0];
    assert!(hq.reachable && !hq.impaired);
    assert_eq!(hq.rtt, Some(Duration::from_millis(35)));
    assert_eq!(hq.last_fail, None);
    let trunk = &snapshot.targets[1];
    assert!(!trunk.reachable);
    assert_eq!(trunk.loss_pct, 100);
    assert_eq!(trunk.last_ok, None);
    let report = snapshot.report(sim.now, 1_785_000_025_000);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["state"], "degraded");
    assert_eq!(json["since_ms"], 1_785_000_000_000i64);
    assert_eq!(json["targets"][0]["target"], "hq");
    assert_eq!(json["targets"][0]["rtt_ms"], 35);
}

#[test]
fn bad_settings_are_refused() {
    let t0 = Instant::now();
    let bad = [
        WanConfig {
            down_after_failures: 0,
            ..WanConfig::default()
        },
        WanConfig {
            up_after_successes: 0,
            ..WanConfig::default()
        },
        WanConfig {
            loss_window: 0,
            ..WanConfig::default()
        },
        WanConfig {
            loss_window: 65,
            ..WanConfig::default()
        },
        WanConfig {
            rtt_recovered: Duration::from_millis(500),
            ..WanConfig::default()
        },
        WanConfig {
            loss_recovered_pct: 30,
            ..WanConfig::default()
        },
        WanConfig {
            fast_probe_interval: Duration::from_secs(20),
            ..WanConfig::default()
        },
        WanConfig {
            probe_interval: Duration::ZERO,
            ..WanConfig::default()
        },
    ];
    for config in bad {
        assert!(WanMonitor::new(config, true, t0).is_err(), "{config:?}");
    }
}
