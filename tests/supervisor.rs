//! Supervisor listen / whisper / barge, a meet-me conference room and three-way calling
//! by hook-flash, on the real `branchd` and the simulated board.
//!
//! Users and groups are made through the accounts API: agent Alice (agent ID 100) is in
//! group "team", which supervisor Sue (extension 103) administers; supervisor Sam
//! (extension 104) administers another group. Alice logs in on 102 and takes a call from
//! 101. Every phone sends its own tone (caller 1000 Hz, Alice 1600 Hz, Sue 600 Hz) and
//! what each phone hears is checked for each tone: the listen, whisper and barge rules
//! are audible (or not) at the ports, through the media engine's mixer.

use std::time::Duration;

use branchline_board::dsp::tone_ratio;
use branchline_board::sim::{Phone, SimHandle};
use serde_json::json;

use crate::api_client::{create_admin, Api};
use crate::harness::{hears, listen, wait, wait_tone, Gateway, SOON};

const ADMIN_PASSWORD: &str = "super-Admin-pass-2024";
const CALLER_HZ: f64 = 1000.0;
const AGENT_HZ: f64 = 1600.0;
const SUPERVISOR_HZ: f64 = 600.0;
/// Each tone's amplitude: three of them sum far below full scale (no clipping).
const AMPLITUDE: i16 = 5000;

/// A user made by the admin; returns its id.
fn add_user(
    admin: &Api,
    username: &str,
    role: &str,
    extension: &str,
    agent: Option<(&str, &str)>,
) -> i64 {
    let mut user = json!({
        "username": username,
        "display_name": username,
        "password": "team-Pass-2024-long",
        "extension": extension,
        "enabled": true,
        "roles": [role],
    });
    if let Some((id, pin)) = agent {
        user["agent_id"] = json!(id);
        user["pin"] = json!(pin);
    }
    let (status, body) = admin.post("/api/v1/users", user);
    assert_eq!(status, 201, "create {username}: {body}");
    body["id"].as_i64().expect("user id")
}

fn add_group(admin: &Api, name: &str, members: &[(i64, bool)]) {
    let members: Vec<_> = members
        .iter()
        .map(|(id, admin)| json!({"user_id": id, "is_group_admin": admin}))
        .collect();
    let (status, body) = admin.post(
        "/api/v1/groups",
        json!({"name": name, "description": "", "members": members}),
    );
    assert_eq!(status, 201, "create group {name}: {body}");
}

/// Whether `port` hears `freq` as a clear part of what it hears (one of up to three
/// mixed tones: a third of the energy or so), over `ms`.
fn hears_part(sim: &SimHandle, port: u8, freq: f64) -> bool {
    let s = listen(sim, port, 600, false);
    s.len() > 800 && tone_ratio(&s[800..], freq) > 0.15
}

/// Whether `port` hears none of `freq` (allowing quantisation noise).
fn deaf_to(sim: &SimHandle, port: u8, freq: f64) -> bool {
    let s = listen(sim, port, 600, false);
    s.len() > 800 && tone_ratio(&s[800..], freq) < 0.02
}

/// Dials a supervisor code and waits for the dial tone first.
fn dial_code(gw: &Gateway, phone: &Phone, code: &str) {
    phone.off_hook();
    wait_tone(&gw.sim, phone.port(), 350, 440).expect("dial tone");
    phone.dial(code);
}

#[test]
fn a_supervisor_listens_whispers_and_barges_and_one_without_the_right_is_refused() {
    let mut gw = Gateway::start();
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    let alice = add_user(&admin, "alice", "agent", "102", Some(("100", "4821")));
    let bob = add_user(&admin, "bob", "agent", "101", Some(("200", "5937")));
    let sue = add_user(&admin, "sue", "supervisor", "103", None);
    let sam = add_user(&admin, "sam", "supervisor", "104", None);
    add_group(&admin, "team", &[(sue, true), (alice, false)]);
    add_group(&admin, "other", &[(sam, true), (bob, false)]);
    // The ACD reads its agents at start.
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    gw.restart();

    let (caller, agent, sup, other) = (
        gw.sim.phone(1),
        gw.sim.phone(2),
        gw.sim.phone(3),
        gw.sim.phone(4),
    );
    // Alice logs in on 102 (three short beeps confirm).
    dial_code(&gw, &agent, "*61100*4821#");
    assert!(
        wait(SOON, || agent.tone().is_some_and(
            |t| t.freq1_hz == 350 && !t.cadence.is_continuous()
        )),
        "login confirmed"
    );
    agent.on_hook();
    assert!(wait(SOON, || agent.tone().is_none()));

    // 101 calls Alice; she answers; both talk.
    dial_code(&gw, &caller, "102");
    assert!(wait(SOON, || agent.is_ringing()), "alice rings");
    agent.off_hook();
    assert!(wait(SOON, || caller.tone().is_none()), "ringback stops");
    caller.inject_tone(CALLER_HZ, AMPLITUDE);
    agent.inject_tone(AGENT_HZ, AMPLITUDE);
    assert!(wait(SOON, || hears(
        &listen(&gw.sim, 2, 400, false),
        CALLER_HZ
    )));
    assert!(hears(&listen(&gw.sim, 1, 400, false), AGENT_HZ));

    // Sam administers another group: refused (number unobtainable), the call goes on.
    dial_code(&gw, &other, "*65100#");
    wait_tone(&gw.sim, 4, 480, 620).expect("sam is refused");
    assert!(gw.wait_log("supervision denied", SOON));
    assert!(hears(&listen(&gw.sim, 1, 400, false), AGENT_HZ));
    assert!(hears(&listen(&gw.sim, 2, 400, false), CALLER_HZ));
    other.on_hook();

    // Sue listens: she hears both; neither hears her.
    dial_code(&gw, &sup, "*65100#");
    assert!(
        wait(SOON, || hears_part(&gw.sim, 3, CALLER_HZ)),
        "sue hears the caller"
    );
    sup.inject_tone(SUPERVISOR_HZ, AMPLITUDE);
    assert!(hears_part(&gw.sim, 3, AGENT_HZ), "sue hears alice");
    assert!(
        hears(&listen(&gw.sim, 2, 600, false), CALLER_HZ),
        "alice hears the caller only"
    );
    assert!(
        deaf_to(&gw.sim, 2, SUPERVISOR_HZ),
        "alice does not hear sue"
    );
    assert!(
        hears(&listen(&gw.sim, 1, 600, false), AGENT_HZ),
        "the caller hears alice only"
    );
    assert!(
        deaf_to(&gw.sim, 1, SUPERVISOR_HZ),
        "the caller does not hear sue"
    );

    // Whisper (key 5): Alice hears Sue, the caller still does not.
    sup.dial("5");
    assert!(
        wait(SOON, || hears_part(&gw.sim, 2, SUPERVISOR_HZ)),
        "alice hears sue's whisper"
    );
    assert!(hears_part(&gw.sim, 2, CALLER_HZ), "and the caller");
    assert!(
        deaf_to(&gw.sim, 1, SUPERVISOR_HZ),
        "the caller does not hear the whisper"
    );
    assert!(hears_part(&gw.sim, 3, CALLER_HZ) && hears_part(&gw.sim, 3, AGENT_HZ));

    // Barge (key 6): everyone hears everyone (three ports in one room).
    sup.dial("6");
    assert!(
        wait(SOON, || hears_part(&gw.sim, 1, SUPERVISOR_HZ)),
        "the caller hears sue"
    );
    assert!(hears_part(&gw.sim, 1, AGENT_HZ));
    assert!(hears_part(&gw.sim, 2, SUPERVISOR_HZ) && hears_part(&gw.sim, 2, CALLER_HZ));
    assert!(hears_part(&gw.sim, 3, CALLER_HZ) && hears_part(&gw.sim, 3, AGENT_HZ));
    // Nobody hears themselves.
    assert!(deaf_to(&gw.sim, 1, CALLER_HZ));
    assert!(deaf_to(&gw.sim, 2, AGENT_HZ));
    assert!(deaf_to(&gw.sim, 3, SUPERVISOR_HZ));

    // Sue hangs up: the call goes on as a two-party call.
    sup.on_hook();
    assert!(
        wait(SOON, || hears(&listen(&gw.sim, 1, 400, false), AGENT_HZ)),
        "the caller hears alice alone again"
    );
    assert!(hears(&listen(&gw.sim, 2, 400, false), CALLER_HZ));

    // Sue joins again (barge); the caller hangs up: Sue is dropped with busy tone.
    dial_code(&gw, &sup, "*67100#");
    assert!(
        wait(SOON, || hears_part(&gw.sim, 3, AGENT_HZ)),
        "sue is in again"
    );
    caller.on_hook();
    wait_tone(&gw.sim, 3, 480, 620).expect("sue hears busy");
    sup.on_hook();
    agent.on_hook();
    let cdrs = gw.wait_cdrs(1);
    assert_eq!(
        (cdrs[0].caller.as_str(), cdrs[0].disposition.as_str()),
        ("101", "answered")
    );
}

/// Three phones meet in room 800 (PIN 4711, at most 3 parties): each hears the two
/// others and not itself; entry and exit beeps; wrong PINs and a full room refused.
#[test]
fn a_meet_me_room_joins_three_phones_with_a_pin() {
    let plan = format!(
        "{}\n[[conference_rooms]]\nnumber = \"800\"\npin = \"4711\"\nmax_parties = 3\n",
        crate::harness::DIAL_PLAN
    );
    let gw = Gateway::start_with(&plan);
    let phones: Vec<Phone> = (1..=4).map(|p| gw.sim.phone(p)).collect();
    let prompt = |p: &Phone| {
        wait(SOON, || {
            p.tone()
                .is_some_and(|t| t.freq1_hz == 350 && !t.cadence.is_continuous())
        })
    };

    // Three wrong PINs: number unobtainable, and the right one no longer helps.
    dial_code(&gw, &phones[3], "800");
    assert!(prompt(&phones[3]), "PIN prompt");
    for pin in ["1111#", "2222#", "4712#"] {
        phones[3].dial(pin);
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_tone(&gw.sim, 4, 480, 620).expect("refused after three wrong PINs");
    phones[3].on_hook();

    // 101 and 102 join; when 103 joins they hear the entry beep (1400 Hz).
    for p in &phones[..2] {
        dial_code(&gw, p, "800");
        assert!(prompt(p), "PIN prompt on {}", p.port());
        p.dial("4711#");
        assert!(wait(SOON, || p.tone().is_none()), "prompt stops");
    }
    dial_code(&gw, &phones[2], "800");
    assert!(prompt(&phones[2]));
    phones[2].dial("4711");
    phones[0].take_heard();
    phones[2].dial("#");
    std::thread::sleep(Duration::from_millis(600));
    let heard = phones[0].take_heard();
    assert!(tone_ratio(&heard, 1400.0) > 0.3, "entry beep");

    // Everyone talks: each hears the two others, not itself.
    let tones = [CALLER_HZ, AGENT_HZ, SUPERVISOR_HZ];
    for (p, hz) in phones.iter().zip(tones) {
        p.inject_tone(hz, AMPLITUDE);
    }
    for (i, hz) in tones.iter().enumerate() {
        let port = i as u8 + 1;
        for (j, other) in tones.iter().enumerate() {
            if i != j {
                assert!(
                    wait(SOON, || hears_part(&gw.sim, port, *other)),
                    "{port} hears {other} Hz"
                );
            }
        }
        assert!(deaf_to(&gw.sim, port, *hz), "{port} hears itself");
    }

    // The room is full: 104 gets busy at once.
    dial_code(&gw, &phones[3], "800");
    wait_tone(&gw.sim, 4, 480, 620).expect("a full room is busy");
    phones[3].on_hook();

    // 103 leaves: the others hear the exit beep (700 Hz) and go on without it.
    for p in &phones[..3] {
        p.inject_silence();
    }
    std::thread::sleep(Duration::from_millis(300));
    phones[0].take_heard();
    phones[2].on_hook();
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        tone_ratio(&phones[0].take_heard(), 700.0) > 0.3,
        "exit beep"
    );
    phones[1].inject_tone(AGENT_HZ, AMPLITUDE);
    assert!(wait(SOON, || hears(
        &listen(&gw.sim, 1, 400, false),
        AGENT_HZ
    )));
    for p in &phones[..2] {
        p.on_hook();
    }
}

/// Three-way calling by hook-flash: 101 talks to 102, flashes, calls 103 and flashes
/// again once 103 answers: all three hear each other. 103 hanging up leaves 101 and
/// 102 talking.
#[test]
fn flash_dial_flash_makes_a_three_way_call() {
    let gw = Gateway::start();
    let [p1, p2, p3] = [1, 2, 3].map(|p| gw.sim.phone(p));
    dial_code(&gw, &p1, "102");
    assert!(wait(SOON, || p2.is_ringing()));
    p2.off_hook();
    assert!(wait(SOON, || p1.tone().is_none()), "ringback stops");
    p1.flash();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone for the second call");
    p1.dial("103");
    assert!(wait(SOON, || p3.is_ringing()));
    p3.off_hook();
    assert!(wait(SOON, || p1.tone().is_none()));
    p1.flash();
    let tones = [CALLER_HZ, AGENT_HZ, SUPERVISOR_HZ];
    for (p, hz) in [&p1, &p2, &p3].iter().zip(tones) {
        p.inject_tone(hz, AMPLITUDE);
    }
    for (i, hz) in tones.iter().enumerate() {
        let port = i as u8 + 1;
        for (j, other) in tones.iter().enumerate() {
            if i != j {
                assert!(
                    wait(SOON, || hears_part(&gw.sim, port, *other)),
                    "{port} hears {other} Hz"
                );
            }
        }
        assert!(deaf_to(&gw.sim, port, *hz), "{port} hears itself");
    }
    p3.on_hook();
    assert!(
        wait(SOON, || hears(&listen(&gw.sim, 1, 400, false), AGENT_HZ)),
        "101 and 102 talk on alone"
    );
    assert!(hears(&listen(&gw.sim, 2, 400, false), CALLER_HZ));
    p1.on_hook();
    p2.on_hook();
    assert_eq!(gw.wait_cdrs(2).len(), 2);
}

/// Supervision from a SIP phone: SIPp on extension 202 (supervisor Sue) sends an
/// INVITE to `*65100#`; SIPp runs with `-rtp_echo`, so what the box sends to the
/// supervisor's leg comes back as what the supervisor says. While Sue listens, the
/// caller does not hear its own tone come back through her; after she keys 6 (barge,
/// SIP INFO) it does; after her BYE the caller and Alice talk as before. Sam (201)
/// has no right over Alice's group: 403. Before the call: 480.
#[test]
fn a_sip_phone_supervisor_listens_barges_by_key_and_its_bye_restores_the_bridge() {
    use crate::sip_calls::{call_args, run_sipp, sip_addr, sipp, wait_sipp, with_status};
    let mut gw = crate::sip_calls::gateway();
    let admin = create_admin(&gw, "admin1", ADMIN_PASSWORD);
    let alice = add_user(&admin, "alice", "agent", "102", Some(("100", "4821")));
    let sue = add_user(&admin, "sue", "supervisor", "103", None);
    let sam = add_user(&admin, "sam", "supervisor", "104", None);
    add_group(&admin, "team", &[(sue, true), (alice, false)]);
    add_group(&admin, "other", &[(sam, true)]);
    gw.stop_with(nix::sys::signal::Signal::SIGTERM);
    // Their phones are the SIP accounts 202 and 201. The users API only takes the
    // extensions of the `extensions` table (FXS ports and HQ's rows), which SIP-only
    // accounts of the config are not: written here as HQ's user sync would.
    rusqlite::Connection::open(gw.db_path())
        .expect("open the store")
        .execute_batch(
            "UPDATE users SET extension = '202' WHERE username = 'sue';
             UPDATE users SET extension = '201' WHERE username = 'sam';",
        )
        .expect("phones of the supervisors");
    gw.restart();
    assert!(gw.wait_log_count("sip endpoint listening", 2, SOON));
    let addr = sip_addr(&gw);
    let phone = |scenario: &str, ext: &str, password: &str, code: &str, extra: &[&str]| {
        let mut args = call_args(code, ext, password, addr);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sipp(scenario, addr, crate::sip_calls::free_port(), &args)
    };
    let (caller, agent) = (gw.sim.phone(1), gw.sim.phone(2));
    dial_code(&gw, &agent, "*61100*4821#");
    assert!(wait(SOON, || agent.tone().is_some_and(|t| t.freq1_hz
        == 350
        && !t.cadence.is_continuous())));
    agent.on_hook();
    assert!(wait(SOON, || agent.tone().is_none()));

    // No call to join yet: 480.
    let unavailable = with_status(&gw, "uac_phone_refused.xml", 480);
    let path = unavailable.to_str().expect("path");
    run_sipp(
        phone(path, "202", "soft-phone-pass-two", "*65100%23", &[]),
        "no live call",
        &gw,
    );

    dial_code(&gw, &caller, "102");
    assert!(wait(SOON, || agent.is_ringing()), "alice rings");
    agent.off_hook();
    assert!(wait(SOON, || caller.tone().is_none()), "ringback stops");
    caller.inject_tone(CALLER_HZ, AMPLITUDE);
    agent.inject_tone(AGENT_HZ, AMPLITUDE);
    assert!(wait(SOON, || hears_part(&gw.sim, 1, AGENT_HZ)));

    // Sam may not: 403, and the call is untouched.
    let forbidden = with_status(&gw, "uac_phone_refused.xml", 403);
    let path = forbidden.to_str().expect("path");
    run_sipp(
        phone(path, "201", "desk-phone-pass-one", "*65100%23", &[]),
        "no right",
        &gw,
    );
    assert!(hears_part(&gw.sim, 1, AGENT_HZ));

    // Sue listens (the `#` left out, as phones do), then barges, then hangs up.
    let sup = phone(
        "uac_supervisor.xml",
        "202",
        "soft-phone-pass-two",
        "*65100",
        &["-d", "8000", "-rtp_echo"],
    )
    .spawn()
    .expect("sipp starts");
    assert!(
        gw.wait_log("supervisor joined the agent's call", SOON),
        "{}",
        gw.log_text()
    );
    // Listening: her echo reaches nobody; caller and agent still hear each other.
    assert!(wait(SOON, || hears_part(&gw.sim, 1, AGENT_HZ)));
    assert!(deaf_to(&gw.sim, 1, CALLER_HZ), "a listener is heard");
    assert!(deaf_to(&gw.sim, 2, AGENT_HZ), "a listener is heard");
    // Barge (key 6): what she sends back is heard by both.
    assert!(
        wait(SOON, || hears_part(&gw.sim, 1, CALLER_HZ)),
        "the barging supervisor is not heard:\n{}",
        gw.log_text()
    );
    assert!(wait(SOON, || hears_part(&gw.sim, 2, AGENT_HZ)));
    wait_sipp(sup, "supervisor", &gw);
    assert!(gw.wait_log("supervisor left the agent's call", SOON));
    // The two-party bridge is back: each hears the other and not itself.
    assert!(wait(SOON, || deaf_to(&gw.sim, 1, CALLER_HZ)
        && hears_part(&gw.sim, 1, AGENT_HZ)));
    assert!(wait(SOON, || hears_part(&gw.sim, 2, CALLER_HZ)));
    caller.on_hook();
    agent.on_hook();
}

/// A SIP phone (SIPp on 202, `-rtp_echo`) calls meet-me room 800: three wrong PINs
/// (keyed by SIP INFO) end its call; with the right PIN keyed as RFC 4733 events it
/// joins analog phone
/// 101 in the room: 101 hears its own tone come back through the SIP member, until
/// the phone hangs up.
#[test]
fn a_sip_phone_joins_a_meet_me_room_with_an_rfc4733_pin() {
    use crate::sip_calls::{call_args, run_sipp, sip_addr, sipp, wait_sipp, SIP_PLAN};
    let plan = format!(
        "{}\n{SIP_PLAN}\n[[conference_rooms]]\nnumber = \"800\"\npin = \"4712\"\nmax_parties = 3\n",
        crate::harness::DIAL_PLAN
    );
    let gw = Gateway::start_with(&plan);
    assert!(gw.wait_log("sip endpoint listening", SOON));
    let addr = sip_addr(&gw);
    let phone = |scenario: &str, extra: &[&str]| {
        let mut args = call_args("800", "202", "soft-phone-pass-two", addr);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sipp(scenario, addr, crate::sip_calls::free_port(), &args)
    };
    run_sipp(phone("uac_meetme_wrong_pin.xml", &[]), "wrong PINs", &gw);
    assert!(gw.wait_log("conference room refused", SOON));

    let analog = gw.sim.phone(1);
    dial_code(&gw, &analog, "800");
    assert!(wait(SOON, || analog.tone().is_some_and(|t| t.freq1_hz
        == 350
        && !t.cadence.is_continuous())));
    analog.dial("4712#");
    assert!(wait(SOON, || analog.tone().is_none()), "prompt stops");
    analog.inject_tone(CALLER_HZ, AMPLITUDE);
    // Alone in the room, 101 hears nothing of itself.
    assert!(deaf_to(&gw.sim, 1, CALLER_HZ));
    let sip = phone("uac_meetme.xml", &["-d", "15000", "-rtp_echo"])
        .spawn()
        .expect("sipp starts");
    assert!(
        gw.wait_log_count("joined conference room", 2, SOON),
        "{}",
        gw.log_text()
    );
    assert!(
        wait(SOON, || hears_part(&gw.sim, 1, CALLER_HZ)),
        "the SIP member's audio does not reach the room:\n{}",
        gw.log_text()
    );
    wait_sipp(sip, "meet-me phone", &gw);
    assert!(gw.wait_log_count("left conference room", 1, SOON));
    assert!(wait(SOON, || deaf_to(&gw.sim, 1, CALLER_HZ)));
    analog.on_hook();
}
