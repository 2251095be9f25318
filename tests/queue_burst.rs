//! Bursts of trunk callers (SIPp, many calls at once) to queues of each strategy on
//! the real `branchd` and the simulated board, with three agents logged in by
//! feature code on analog phones that answer whatever rings and hang up after a
//! per-agent talk time. What each strategy decides is read back from the store: the
//! order in which the agents were offered (rung for) the calls of a burst
//! (`agent_state_log`), who answered (`cdrs.agent_id`), and the reports API's counts
//! with an abandoned caller.
//!
//! One daemon serves four queues with the same three members (queues are read at
//! start), so the agents' history carries from one burst to the next, as on a real
//! floor: longest-idle is checked against the idle order the previous burst left,
//! fewest-calls against the calls each agent took in its own queue.

use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use branchline_board::sim::Phone;

use crate::api_client::{create_admin, Api};
use crate::call_center::{add_agent, login, ADMIN_PASSWORD};
use crate::harness::{wait, Gateway, SOON};
use crate::sip_calls::{free_port, sip_addr, sipp, trunk_gateway, wait_sipp};

/// An agent at an analog phone who answers what rings and hangs up after `talk`.
struct Desk {
    agent: &'static str,
    phone: Phone,
    talk: Duration,
    answered_at: Option<Instant>,
}

/// `n` trunk callers to `queue` at once (100 calls/s), each waiting until an agent
/// answers and then until the agent hangs up.
fn burst(gw: &Gateway, queue: &str, n: usize) -> Child {
    let n = n.to_string();
    sipp(
        "uac_trunk_queue_answered.xml",
        sip_addr(gw),
        free_port(),
        &[
            "-s",
            queue,
            "-set",
            "caller",
            "+4930555",
            "-set",
            "rtp",
            &free_port().to_string(),
            "-m",
            &n,
            "-l",
            &n,
            "-r",
            "100",
        ],
    )
    .spawn()
    .expect("sipp starts")
}

/// Serves the callers of `callers` at the desks until SIPp is done and every desk
/// is on-hook again.
fn serve(gw: &Gateway, desks: &mut [Desk], callers: Child) {
    let mut callers = Some(callers);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let now = Instant::now();
        for d in desks.iter_mut() {
            match d.answered_at {
                None if d.phone.is_ringing() => {
                    d.phone.off_hook();
                    d.answered_at = Some(now);
                }
                Some(t) if now.duration_since(t) >= d.talk => {
                    d.phone.on_hook();
                    d.answered_at = None;
                }
                _ => {}
            }
        }
        let sipp_done = match callers.as_mut().map(|c| c.try_wait().expect("wait")) {
            Some(Some(_)) => {
                wait_sipp(callers.take().expect("sipp"), "queue burst", gw);
                true
            }
            Some(None) => false,
            None => true,
        };
        if sipp_done && desks.iter().all(|d| d.answered_at.is_none()) {
            return settle(gw);
        }
        assert!(
            now < deadline,
            "the burst was not served in time:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the store holds every agent's return to available (state rows are
/// written after the board loop acted on them, so a burst's rows may still be on
/// their way when its last caller is gone).
fn settle(gw: &Gateway) {
    let all_free = || {
        ["100", "200", "300"].iter().all(|a| {
            gw.db()
                .query_row(
                    "SELECT state FROM agent_state_log WHERE agent_id = ?1 ORDER BY id DESC LIMIT 1",
                    [a],
                    |r| r.get::<_, String>(0),
                )
                .is_ok_and(|s| s == "available")
        })
    };
    assert!(wait(SOON, all_free), "agents not free:\n{}", gw.log_text());
}

/// The highest `agent_state_log` id so far.
fn last_state_id(gw: &Gateway) -> i64 {
    gw.db()
        .query_row(
            "SELECT coalesce(max(id), 0) FROM agent_state_log",
            [],
            |r| r.get(0),
        )
        .expect("state log")
}

/// `(agent, call)` of every offer (a `ringing` row) after state row `after`, in order.
fn offers_after(gw: &Gateway, after: i64) -> Vec<(String, i64)> {
    let db = gw.db();
    let mut s = db
        .prepare(
            "SELECT agent_id, call_id FROM agent_state_log
              WHERE id > ?1 AND state = 'ringing' ORDER BY id",
        )
        .expect("prepare");
    s.query_map([after], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

/// The agent of each call's first offer, in the order the calls were first offered.
fn first_offers(offers: &[(String, i64)]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut agents = Vec::new();
    for (agent, call) in offers {
        if !seen.contains(call) {
            seen.push(*call);
            agents.push(agent.clone());
        }
    }
    agents
}

/// The agents by the time they last became available, longest idle first.
fn idle_order(gw: &Gateway) -> Vec<String> {
    let db = gw.db();
    let mut s = db
        .prepare(
            "SELECT agent_id FROM agent_state_log WHERE state = 'available'
              GROUP BY agent_id ORDER BY max(id)",
        )
        .expect("prepare");
    s.query_map([], |r| r.get(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

/// Answered CDRs per agent of `queue`.
fn answered_by(gw: &Gateway, queue: &str) -> Vec<(String, i64)> {
    let db = gw.db();
    let mut s = db
        .prepare(
            "SELECT agent_id, count(*) FROM cdrs WHERE queue = ?1 AND agent_id IS NOT NULL
              GROUP BY agent_id ORDER BY agent_id",
        )
        .expect("prepare");
    s.query_map([queue], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

#[test]
fn bursts_of_callers_are_distributed_by_each_strategy_and_abandons_counted() {
    let mut gw = trunk_gateway();
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    for (name, id, pin) in [
        ("ana", "100", "4821"),
        ("bob", "200", "5937"),
        ("cyd", "300", "6140"),
    ] {
        add_agent(&admin, name, id, pin);
    }
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    {
        let db = rusqlite::Connection::open(gw.db_path()).expect("open the store");
        db.execute_batch(
            "INSERT INTO queues (name, number, strategy, ring_timeout_ms, wrap_up_ms) VALUES
                 ('rr', '7005', 'round_robin', 8000, 0),
                 ('idle', '7006', 'longest_idle', 8000, 0),
                 ('fewest', '7007', 'fewest_calls', 8000, 0),
                 ('all', '7008', 'ring_all', 8000, 0);
             INSERT INTO queue_members (queue_id, user_id, position)
                 SELECT q.id, u.id, CAST(u.agent_id AS INTEGER) / 100
                   FROM queues q, users u WHERE u.agent_id IS NOT NULL;",
        )
        .expect("queue rows");
    }
    gw.restart();
    assert!(gw.wait_log_count("sip endpoint listening", 2, SOON));
    let mut desks: Vec<Desk> = [("100", 2, 2000), ("200", 3, 1500), ("300", 4, 1000)]
        .into_iter()
        .map(|(agent, port, talk_ms)| Desk {
            agent,
            phone: gw.sim.phone(port),
            talk: Duration::from_millis(talk_ms),
            answered_at: None,
        })
        .collect();
    for (d, pin) in desks.iter().zip(["4821", "5937", "6140"]) {
        assert!(login(&gw, &d.phone, d.agent, pin), "{} logs in", d.agent);
    }

    // Round-robin, 4 callers for 3 agents: the first three are offered in the
    // members' order; the fourth waits for the first agent free (300, who talks
    // least) and is answered too.
    let mark = last_state_id(&gw);
    serve(&gw, &mut desks, burst(&gw, "7005", 4));
    let offers = first_offers(&offers_after(&gw, mark));
    assert_eq!(offers.len(), 4, "{offers:?}");
    assert_eq!(offers[..3], ["100", "200", "300"], "{offers:?}");
    assert_eq!(offers[3], "300", "{offers:?}");
    // (A CDR is written once its SIP leg's quality report is in: wait for them.)
    let want: Vec<(String, i64)> = vec![("100".into(), 1), ("200".into(), 1), ("300".into(), 2)];
    assert!(
        wait(SOON, || answered_by(&gw, "rr") == want),
        "{:?}:\n{}",
        answered_by(&gw, "rr"),
        gw.log_text()
    );

    // Longest-idle, 3 callers, all three free: offered in the order the agents
    // became free after the last burst, longest first.
    let idle = idle_order(&gw);
    assert_eq!(idle.len(), 3, "{idle:?}");
    let mark = last_state_id(&gw);
    serve(&gw, &mut desks, burst(&gw, "7006", 3));
    assert_eq!(first_offers(&offers_after(&gw, mark)), idle);

    // Fewest-calls: one caller first (the longest idle takes it), then a burst of
    // three: the two who took none in this queue are offered before the one who did.
    let first = idle_order(&gw)[0].clone();
    let mark = last_state_id(&gw);
    serve(&gw, &mut desks, burst(&gw, "7007", 1));
    assert_eq!(
        first_offers(&offers_after(&gw, mark)),
        std::slice::from_ref(&first)
    );
    let mark = last_state_id(&gw);
    serve(&gw, &mut desks, burst(&gw, "7007", 3));
    let offers = first_offers(&offers_after(&gw, mark));
    assert_eq!(offers.len(), 3, "{offers:?}");
    assert_eq!(offers[2], first, "{offers:?}");
    assert!(!offers[..2].contains(&first), "{offers:?}");

    // Ring-all: one caller rings every free agent at once.
    let mark = last_state_id(&gw);
    serve(&gw, &mut desks, burst(&gw, "7008", 1));
    let mut rung: Vec<String> = offers_after(&gw, mark)
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    rung.sort();
    assert_eq!(rung, ["100", "200", "300"]);

    // A caller nobody answers gives up after 3 s: abandoned, and the reports count it.
    for d in &desks {
        d.phone.off_hook();
    }
    // Off-hook phones are busy: the agents are skipped, the caller waits.
    let child = sipp(
        "uac_trunk_queue_music.xml",
        sip_addr(&gw),
        free_port(),
        &[
            "-s",
            "7005",
            "-set",
            "caller",
            "+4930666",
            "-set",
            "rtp",
            &free_port().to_string(),
            "-m",
            "1",
        ],
    )
    .spawn()
    .expect("sipp starts");
    wait_sipp(child, "abandoning caller", &gw);
    for d in &desks {
        d.phone.on_hook();
    }
    let abandoned = || {
        gw.db()
            .query_row(
                "SELECT count(*) FROM cdrs WHERE caller = '+4930666' AND queue = 'rr'
                    AND agent_id IS NULL AND hangup_side = 'caller'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0)
            == 1
    };
    assert!(
        wait(SOON, abandoned),
        "no abandoned CDR:\n{}",
        gw.log_text()
    );
    let all_written = || {
        gw.db()
            .query_row(
                "SELECT count(*) FROM cdrs WHERE queue IS NOT NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0)
            == 13
    };
    assert!(wait(SOON, all_written), "CDRs missing:\n{}", gw.log_text());
    let admin = Api::login(gw.latest_web_addr(), "admin1", ADMIN_PASSWORD).0;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let (status, body) = admin.get(&format!(
        "/api/v1/reports/queues?from={}&to={}",
        now - 3_600_000,
        now + 60_000
    ));
    assert_eq!(status, 200, "{body}");
    let counts = |queue: &str| {
        let q = body["queues"]
            .as_array()
            .expect("queues")
            .iter()
            .find(|q| q["queue"] == queue)
            .unwrap_or_else(|| panic!("{queue} in {body}"));
        ["offered", "answered", "abandoned"].map(|k| q[k].as_i64().unwrap_or(-1))
    };
    assert_eq!(counts("rr"), [5, 4, 1], "{body}");
    assert_eq!(counts("idle"), [3, 3, 0], "{body}");
    assert_eq!(counts("fewest"), [4, 4, 0], "{body}");
    assert_eq!(counts("all"), [1, 1, 0], "{body}");
}
