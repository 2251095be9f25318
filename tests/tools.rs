//! The tools page's tools against the real `branchd`: a SIP OPTIONS probe sent by the
//! daemon's own SIP endpoint to this test's UDP responder (and to a peer that never
//! answers), a packet capture taken while SIPp calls an analog phone, read back with
//! `pcap-file` (the INVITE, the 200, the BYE and the RTP both ways are in it), and the
//! diagnostics bundle with the daemon's recent logs and none of the configured
//! passwords, and the live SIP message trace of a SIPp call (API, SSE and page); and
//! the ports page's line test on the simulated board (a healthy phone line, a PSTN line
//! cut and mended, a port in use refused), and its loopback test (a tone through the
//! simulated board's loop; an over-current and foreign voltage fail it); and the echo
//! test code a phone dials (it hears its own voice half a second late). Needs root
//! (or CAP_NET_RAW) for the capture, like the box's branchd.

use std::io::Read;
use std::net::UdpSocket;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api_client::{add_user, create_admin, Api};
use crate::harness::{hears, listen, wait, wait_tone, Gateway, SOON};
use crate::sip_calls::{call_args, free_port, gateway, register, sip_addr, sipp, wait_sipp};

const PASSWORD: &str = "Field-tech-pass-2024";

/// A SIP peer that answers one OPTIONS with `200 OK`: the request's text and source.
pub(crate) fn answer_one_options(
    sock: UdpSocket,
) -> std::thread::JoinHandle<(std::net::SocketAddr, String)> {
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        let (n, from) = sock.recv_from(&mut buf).expect("an OPTIONS arrives");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let mut response = String::from("SIP/2.0 200 OK\r\n");
        for line in text.lines() {
            let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
            match name.as_str() {
                "via" | "from" | "call-id" | "cseq" => response.push_str(&format!("{line}\r\n")),
                "to" => response.push_str(&format!("{line};tag=responder1\r\n")),
                _ => {}
            }
        }
        response.push_str("Server: tools-test-responder\r\nContent-Length: 0\r\n\r\n");
        sock.send_to(response.as_bytes(), from).expect("answer");
        (from, text)
    })
}

#[test]
fn sip_options_probe_leaves_from_the_box_sip_port_and_reports_the_answer() {
    let gw = gateway();
    add_user(&gw, "tech1", "technician", PASSWORD);
    add_user(&gw, "agent1", "agent", PASSWORD);
    let tech = Api::login(gw.web_addr(), "tech1", PASSWORD).0;
    let agent = Api::login(gw.web_addr(), "agent1", PASSWORD).0;

    let responder = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = responder.local_addr().expect("addr").port();
    let peer = answer_one_options(responder);
    let uri = format!("sip:127.0.0.1:{port}");
    let (status, v) = tech.post("/api/v1/tools/sip-options", json!({ "uri": uri }));
    assert_eq!(status, 200, "{v}\n{}", gw.log_text());
    let (from, request) = peer.join().expect("responder");
    assert_eq!(v["outcome"], "answered", "{v}");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["reason"], "OK", "{v}");
    assert_eq!(v["server"], "tools-test-responder", "{v}");
    assert!(
        v["rtt_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0 && ms < 5000.0),
        "{v}"
    );
    // Sent by the SIP endpoint itself: from its listener, as a proper request.
    assert_eq!(from, sip_addr(&gw), "{request}");
    assert!(
        request.starts_with(&format!("OPTIONS {uri} SIP/2.0\r\n")),
        "{request}"
    );
    assert!(request.contains("User-Agent: Branchline/"), "{request}");
    assert!(request.contains(";branch=z9hG4bK"), "{request}");

    // A peer that never answers: a timeout, reported as such.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let (status, v) = tech.post(
        "/api/v1/tools/sip-options",
        json!({ "uri": format!("sip:127.0.0.1:{silent_port}") }),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["outcome"], "timeout", "{v}");
    assert!(v["status"].is_null(), "{v}");
    let mut buf = [0u8; 2048];
    silent
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let (n, _) = silent
        .recv_from(&mut buf)
        .expect("the OPTIONS reached the silent peer");
    assert!(buf[..n].starts_with(b"OPTIONS "));

    // Bad URIs are 400 and send nothing; agents may not probe.
    for bad in ["http://127.0.0.1", "sip:127.0.0.1;lr", "sip:-oops"] {
        let (status, v) = tech.post("/api/v1/tools/sip-options", json!({ "uri": bad }));
        assert_eq!(status, 400, "{bad}: {v}");
        assert_eq!(v["problems"][0]["field"], "uri", "{v}");
    }
    let (status, _) = agent.post("/api/v1/tools/sip-options", json!({ "uri": uri }));
    assert_eq!(status, 403);

    // The bundle: the daemon's recent logs, and none of the configured passwords.
    let (status, gz) = download(&tech, "GET", "/api/v1/tools/bundle", None);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&gz));
    let files = untar(&gz);
    assert!(
        files["logs/recent.log"].contains("sip endpoint listening"),
        "{}",
        files["logs/recent.log"]
    );
    assert!(
        files["config.toml"].contains("branch.test"),
        "{}",
        files["config.toml"]
    );
    for (name, text) in &files {
        for secret in ["desk-phone-pass-one", "soft-phone-pass-two"] {
            assert!(!text.contains(secret), "{secret} in {name}");
        }
    }
    let store: Value = serde_json::from_str(&files["store.json"]).expect("json");
    assert!(
        store["tables"]["audit_log"].as_i64().unwrap_or(0) > 0,
        "{store}"
    );

    // The recent logs, filtered by level: info shows the endpoint starting; warn and
    // above never shows an info line; bad filters are a 400; agents may not.
    let (status, v) = tech.get("/api/v1/logs?level=info&limit=2000");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["kept"], true);
    let lines = v["lines"].as_array().expect("lines");
    assert!(
        lines.iter().any(|l| l["text"]
            .as_str()
            .unwrap_or("")
            .contains("sip endpoint listening")),
        "{v}"
    );
    assert!(!v.to_string().contains('\u{1b}'), "colour codes removed");
    let (status, v) = tech.get("/api/v1/logs?level=warn");
    assert_eq!(status, 200, "{v}");
    assert!(
        v["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .all(|l| l["level"] != "info" && l["level"] != "debug"),
        "{v}"
    );
    for bad in ["level=loud", "limit=0", "limit=abc"] {
        let (status, v) = tech.get(&format!("/api/v1/logs?{bad}"));
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let (status, _) = agent.get("/api/v1/logs");
    assert_eq!(status, 403);
    let (status, page) = tech.get_text("/logs?level=info");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("sip endpoint listening"), "{page}");
}

/// A raw request with the session's cookie and CSRF token: status and body bytes.
fn download(api: &Api, method: &str, path: &str, body: Option<Value>) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(90)))
        .build()
        .into();
    let url = format!("{}{path}", api_base(api));
    let mut resp = match (method, body) {
        ("GET", _) => agent
            .get(&url)
            .header("Cookie", api.cookie())
            .call()
            .expect("request"),
        (_, body) => agent
            .post(&url)
            .header("Cookie", api.cookie())
            .header("X-CSRF-Token", api.csrf())
            .send_json(body.unwrap_or(json!({})))
            .expect("request"),
    };
    let mut bytes = Vec::new();
    resp.body_mut()
        .as_reader()
        .read_to_end(&mut bytes)
        .expect("body");
    (resp.status().as_u16(), bytes)
}

fn api_base(api: &Api) -> String {
    api.base().to_owned()
}

/// The files of a bundle by their path under its top directory.
fn untar(gz: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut files = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    for entry in archive.entries().expect("tar.gz") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("text");
        files.insert(name.split_once('/').expect("top dir").1.to_owned(), text);
    }
    files
}

/// What a capture holds, by kind.
#[derive(Debug, Default)]
pub(crate) struct CaptureSummary {
    pub invites: usize,
    pub ok_to_invite: usize,
    pub byes: usize,
    pub rtp: usize,
    pub packets: usize,
}

/// Reads a pcap of the tools' capture (LINKTYPE_RAW, IPv4) and sorts its packets.
pub(crate) fn summarize_pcap(
    pcap: &[u8],
    rtp_ports: std::ops::RangeInclusive<u16>,
) -> CaptureSummary {
    let mut reader = pcap_file::pcap::PcapReader::new(pcap).expect("a pcap file");
    assert_eq!(reader.header().datalink, pcap_file::DataLink::RAW);
    let mut s = CaptureSummary::default();
    while let Some(p) = reader.next_packet() {
        let p = p.expect("a whole packet");
        let ip = &p.data;
        s.packets += 1;
        if ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = usize::from(ip[0] & 15) * 4;
        let (src, dst) = (
            u16::from_be_bytes([ip[ihl], ip[ihl + 1]]),
            u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]),
        );
        let payload = &ip[ihl + 8..];
        let text = String::from_utf8_lossy(payload);
        if text.starts_with("INVITE sip:") {
            s.invites += 1;
        } else if text.starts_with("SIP/2.0 200") && text.contains(" INVITE\r\n") {
            s.ok_to_invite += 1;
        } else if text.starts_with("BYE sip:") {
            s.byes += 1;
        } else if (rtp_ports.contains(&src) || rtp_ports.contains(&dst))
            && payload.len() >= 12
            && payload[0] >> 6 == 2
        {
            s.rtp += 1;
        }
    }
    s
}

#[test]
fn a_capture_during_a_sip_call_holds_its_signalling_and_rtp() {
    let gw = gateway();
    add_user(&gw, "tech1", "technician", PASSWORD);
    let tech = Api::login(gw.web_addr(), "tech1", PASSWORD).0;
    let target = sip_addr(&gw);
    let port = free_port();
    register(&gw, "201", "desk-phone-pass-one", port);

    let capture = {
        let tech = Api::login(gw.web_addr(), "tech1", PASSWORD).0;
        std::thread::spawn(move || {
            download(
                &tech,
                "POST",
                "/api/v1/tools/capture",
                Some(json!({ "seconds": 12 })),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(800));
    // One capture at a time.
    let (status, v) = tech.post("/api/v1/tools/capture", json!({ "seconds": 1 }));
    assert_eq!(status, 409, "{v}");

    // SIPp (phone 201) calls analog 101, which answers; SIPp plays speech and hangs up.
    let args = call_args("101", "201", "desk-phone-pass-one", target);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let call = sipp("uac_call.xml", target, port, &args)
        .spawn()
        .expect("sipp starts");
    let phone = gw.sim.phone(1);
    assert!(
        wait(SOON, || phone.is_ringing()),
        "FXS 1 rings:\n{}",
        gw.log_text()
    );
    phone.off_hook();
    wait_sipp(call, "call", &gw);
    phone.on_hook();

    let (status, pcap) = capture.join().expect("capture thread");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&pcap));
    // `[media]` defaults: RTP on 10000-10999.
    let s = summarize_pcap(&pcap, 10_000..=10_999);
    assert!(s.invites >= 1, "{s:?}");
    assert!(s.ok_to_invite >= 1, "{s:?}");
    assert!(s.byes >= 1, "{s:?}");
    // SIPp sends speech for seconds at 50 packets/s and the box answers with the
    // analog phone's audio.
    assert!(s.rtp >= 100, "{s:?}");
}

/// The SIP trace while SIPp (phone 201, with digest auth) calls analog 101: the live
/// stream (opened before the call, filtered by the number) delivers the INVITE as it
/// arrives; the kept trace holds the call's messages both ways, filtered by number or
/// by Call-ID, with the digest response hidden; the page shows them; bad filters are a
/// 400 and an agent may not read the trace.
#[test]
fn the_sip_trace_shows_a_calls_messages_both_ways_filtered_live_and_redacted() {
    let gw = gateway();
    add_user(&gw, "tech1", "technician", PASSWORD);
    add_user(&gw, "agent1", "agent", PASSWORD);
    let tech = Api::login(gw.web_addr(), "tech1", PASSWORD).0;
    let agent = Api::login(gw.web_addr(), "agent1", PASSWORD).0;
    let live = crate::screen_pop::Events::open(
        gw.web_addr(),
        tech.cookie(),
        "/api/v1/events/sip-trace?filter=101",
    );
    let target = sip_addr(&gw);
    let port = free_port();
    register(&gw, "201", "desk-phone-pass-one", port);
    let args = call_args("101", "201", "desk-phone-pass-one", target);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let call = sipp("uac_call.xml", target, port, &args)
        .spawn()
        .expect("sipp starts");
    let phone = gw.sim.phone(1);
    assert!(wait(SOON, || phone.is_ringing()), "{}", gw.log_text());
    phone.off_hook();
    wait_sipp(call, "call", &gw);
    phone.on_hook();

    let first = live.next("message");
    assert_eq!(first["direction"], "in", "{first}");
    assert!(
        first["first_line"]
            .as_str()
            .is_some_and(|l| l.starts_with("INVITE sip:101@")),
        "{first}"
    );

    let (status, v) = tech.get("/api/v1/sip/trace?filter=101");
    assert_eq!(status, 200, "{v}");
    let messages = v["messages"].as_array().expect("messages").clone();
    let line = |m: &Value| m["first_line"].as_str().unwrap_or("").to_owned();
    let call_id = first["call_id"].as_str().expect("call id").to_owned();
    let of_call: Vec<&Value> = messages
        .iter()
        .filter(|m| m["call_id"] == call_id.as_str())
        .collect();
    for (direction, start) in [
        ("in", "INVITE sip:101@"),
        ("out", "SIP/2.0 200"),
        ("in", "ACK "),
        ("in", "BYE "),
        ("out", "SIP/2.0 200"),
    ] {
        assert!(
            of_call
                .iter()
                .any(|m| m["direction"] == direction && line(m).starts_with(start)),
            "{direction} {start} in {of_call:#?}"
        );
    }
    // Digest: the authenticated INVITE keeps its username, not its response.
    let authed: Vec<&&Value> = of_call
        .iter()
        .filter(|m| {
            m["text"]
                .as_str()
                .unwrap_or("")
                .contains("Authorization: Digest")
        })
        .collect();
    assert!(!authed.is_empty(), "{of_call:#?}");
    for m in authed {
        let text = m["text"].as_str().unwrap_or("");
        assert!(
            text.contains("response=\"…\"") && text.contains("username=\"201\""),
            "{text}"
        );
    }
    // By Call-ID: only that call's messages (its REGISTERs are another Call-ID).
    let (status, v) = tech.get(&format!("/api/v1/sip/trace?filter={call_id}"));
    assert_eq!(status, 200, "{v}");
    let by_id = v["messages"].as_array().expect("messages");
    assert!(by_id.len() >= of_call.len(), "{v}");
    assert!(
        by_id.iter().all(|m| m["call_id"] == call_id.as_str()),
        "{v}"
    );
    let (_, v) = tech.get("/api/v1/sip/trace?filter=999999&limit=5");
    assert_eq!(v["messages"], json!([]), "{v}");

    for bad in ["filter=a%20b", "limit=0", "limit=201", "limit=x"] {
        let (status, v) = tech.get(&format!("/api/v1/sip/trace?{bad}"));
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let (status, _) = agent.get("/api/v1/sip/trace");
    assert_eq!(status, 403);
    let (status, page) = tech.get_text("/sip/trace?filter=101");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("INVITE sip:101@"), "{page}");
    assert!(page.contains("data-sip-trace=\"101\""), "{page}");
    let (status, _) = agent.get_text("/sip/trace");
    assert_eq!(status, 403);
}

#[test]
fn the_line_test_judges_the_boards_own_readings_and_refuses_a_port_in_use() {
    let gw = Gateway::start();
    add_user(&gw, "tech1", "technician", PASSWORD);
    add_user(&gw, "agent1", "agent", PASSWORD);
    let tech = Api::login(gw.web_addr(), "tech1", PASSWORD).0;
    let agent = Api::login(gw.web_addr(), "agent1", PASSWORD).0;

    // A healthy phone line (FXS 1) and PSTN line (FXO 5), as the simulator reads them.
    for port in [1, 5] {
        let (status, v) = tech.post(&format!("/api/v1/ports/{port}/line-test"), json!({}));
        assert_eq!(status, 200, "{v}\n{}", gw.log_text());
        assert_eq!(v["result"]["passed"], true, "port {port}: {v}");
        assert_eq!(v["result"]["checks"][1]["detail"], "48.0 V", "{v}");
    }
    // An agent may not run it.
    let (status, v) = agent.post("/api/v1/ports/1/line-test", json!({}));
    assert_eq!(status, 403, "{v}");

    // The PSTN line is cut: the board reports the fault, the line test says why.
    gw.sim.inject_fault(5, line_proto::FaultKind::NoLineVoltage);
    let faulty = wait(SOON, || {
        tech.get("/api/v1/status").1["ports"][4]["state"] == "fault"
    });
    assert!(faulty, "{}", tech.get("/api/v1/status").1);
    let (status, v) = tech.post("/api/v1/ports/5/line-test", json!({}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["passed"], false, "{v}");
    let failed: Vec<&str> = v["result"]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["passed"] == false)
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(failed, ["self-test", "line voltage", "fault"], "{v}");
    assert!(
        v["result"]["checks"][1]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no line")),
        "{v}"
    );
    // Mended: the test passes and its passed self-test puts the line back in service.
    gw.sim.clear_fault(5);
    let (status, v) = tech.post("/api/v1/ports/5/line-test", json!({}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["result"]["passed"], false,
        "the fault was reported before: {v}"
    );
    let back = wait(SOON, || {
        tech.get("/api/v1/status").1["ports"][4]["state"] == "idle"
    });
    assert!(back, "{}", tech.get("/api/v1/status").1);
    let (_, v) = tech.post("/api/v1/ports/5/line-test", json!({}));
    assert_eq!(v["result"]["passed"], true, "{v}");

    // A phone off the hook: refused, nothing run.
    let phone = gw.sim.phone(2);
    phone.off_hook();
    let lifted = wait(SOON, || {
        tech.get("/api/v1/status").1["ports"][1]["hook"] == "off-hook"
    });
    assert!(lifted);
    let (status, v) = tech.post("/api/v1/ports/2/line-test", json!({}));
    assert_eq!(status, 409, "{v}");
    assert!(tech.get("/api/v1/status").1["ports"][1]["line_test"].is_null());
    phone.on_hook();

    // The page shows the result; the audit log has every run.
    let (status, page) = tech.get_text("/ports?tested=5");
    assert_eq!(status, 200);
    assert!(page.contains("Line test of port 5 passed."), "{page}");
    let admin = create_admin(&gw, "admin1", PASSWORD);
    let (_, audit) = admin.get("/api/v1/audit?after_id=0&limit=500");
    let runs = audit["items"]
        .as_array()
        .or_else(|| audit.as_array())
        .map(|rows| rows.iter().filter(|r| r["action"] == "line_test").count())
        .unwrap_or(0);
    assert_eq!(runs, 6, "{audit}");
}

#[test]
fn the_loopback_test_sends_a_tone_through_the_boards_loop_and_a_fault_fails_it() {
    let gw = Gateway::start();
    add_user(&gw, "tech1", "technician", PASSWORD);
    add_user(&gw, "agent1", "agent", PASSWORD);
    let tech = Api::login(gw.web_addr(), "tech1", PASSWORD).0;
    let agent = Api::login(gw.web_addr(), "agent1", PASSWORD).0;

    // A healthy phone port and PSTN port: the tone comes back at its level.
    for port in [1u8, 5] {
        let (status, v) = tech.post(&format!("/api/v1/ports/{port}/loopback-test"), json!({}));
        assert_eq!(status, 200, "{v}\n{}", gw.log_text());
        let r = &v["result"];
        assert_eq!(r["passed"], true, "port {port}: {v}");
        let level = r["level_tenth_dbm0"].as_i64().expect("level");
        assert!((-105..=-95).contains(&level), "{v}");
        assert!(r["delay_ms"].as_u64().is_some_and(|d| d <= 100), "{v}");
        assert!(
            r["sinad_tenth_db"].as_i64().is_some_and(|s| s >= 300),
            "{v}"
        );
        assert_eq!(r["frames_sent"], 55, "{v}");
    }
    // The loopback is off again.
    assert!(wait(SOON, || !gw.sim.phone(1).is_looped_back()));
    // An agent may not run it.
    let (status, v) = agent.post("/api/v1/ports/1/loopback-test", json!({}));
    assert_eq!(status, 403, "{v}");

    // Port 2's SLIC shuts down on an over-current: no audio comes back.
    gw.sim.inject_fault(2, line_proto::FaultKind::OverCurrent);
    assert!(wait(SOON, || {
        tech.get("/api/v1/status").1["ports"][1]["state"] == "fault"
    }));
    let (status, v) = tech.post("/api/v1/ports/2/loopback-test", json!({}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["passed"], false, "{v}");
    assert_eq!(v["result"]["checks"][0]["name"], "audio back", "{v}");
    assert!(
        v["result"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no audio came back")),
        "{v}"
    );
    assert!(wait(SOON, || !gw.sim.phone(2).is_looped_back()));
    // Port 3 has foreign voltage on its pair: mains hum on the voice path.
    gw.sim
        .inject_fault(3, line_proto::FaultKind::ForeignVoltage);
    assert!(wait(SOON, || {
        tech.get("/api/v1/status").1["ports"][2]["state"] == "fault"
    }));
    let (status, v) = tech.post("/api/v1/ports/3/loopback-test", json!({}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["passed"], false, "{v}");
    assert!(
        v["result"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("noisy")),
        "{v}"
    );

    // A phone off the hook: refused, nothing run, no loopback.
    let phone = gw.sim.phone(4);
    phone.off_hook();
    assert!(wait(SOON, || {
        tech.get("/api/v1/status").1["ports"][3]["hook"] == "off-hook"
    }));
    let (status, v) = tech.post("/api/v1/ports/4/loopback-test", json!({}));
    assert_eq!(status, 409, "{v}");
    assert!(!phone.is_looped_back());
    assert!(tech.get("/api/v1/status").1["ports"][3]["loopback_test"].is_null());
    phone.on_hook();

    // The page shows the result; the audit log has every run.
    let (status, page) = tech.get_text("/ports?looped=1");
    assert_eq!(status, 200);
    assert!(page.contains("Loopback test of port 1 passed."), "{page}");
    let admin = create_admin(&gw, "admin1", PASSWORD);
    let (_, audit) = admin.get("/api/v1/audit?after_id=0&limit=500");
    let runs = audit["items"]
        .as_array()
        .or_else(|| audit.as_array())
        .map(|rows| {
            rows.iter()
                .filter(|r| r["action"] == "loopback_test")
                .count()
        })
        .unwrap_or(0);
    assert_eq!(runs, 5, "{audit}");
}

#[test]
fn the_echo_test_code_plays_the_phones_voice_back_half_a_second_late() {
    const VOICE_HZ: f64 = 1600.0;
    let gw = Gateway::start();
    let phone = gw.sim.phone(1);
    phone.off_hook();
    wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    phone.dial("*43");
    assert!(gw.wait_log("echo test started", SOON), "{}", gw.log_text());
    assert!(wait(SOON, || phone.tone().is_none()), "dial tone stops");
    // The phone speaks: for the first quarter second it hears nothing of it...
    phone.inject_tone(VOICE_HZ, 8000);
    let early = listen(&gw.sim, 1, 250, false);
    assert!(
        !hears(&early, VOICE_HZ),
        "the voice came back before the delay"
    );
    // ...then its own voice, through the board, the codec and the media engine.
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        hears(&listen(&gw.sim, 1, 1000, false), VOICE_HZ),
        "the phone hears itself"
    );
    // Quiet again: what it hears goes quiet the delay later.
    phone.inject_silence();
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !hears(&listen(&gw.sim, 1, 500, false), VOICE_HZ),
        "the echo outlives the voice"
    );
    phone.on_hook();
    assert!(gw.wait_log("echo test ended", SOON), "{}", gw.log_text());
    let cdr = gw.wait_cdrs(1).pop().expect("CDR");
    assert_eq!((cdr.caller.as_str(), cdr.callee.as_str()), ("101", "*43"));
    assert_eq!(cdr.disposition, "answered");
    assert_eq!(cdr.hangup_side, "caller");
}
