//! The tools page and `/api/v1/tools/...` in-process: permissions, CSRF, bad input,
//! a real ping of 127.0.0.1, a real capture (a packet socket: these tests run as root
//! like the box's branchd with CAP_NET_RAW) read back with `pcap-file`, and the
//! bundle unpacked and searched for secrets. The OPTIONS probe against a real SIP
//! endpoint is in the end-to-end tests (`tests/tools.rs`).

use std::io::Read;
use std::path::Path;

use super::*;
use crate::tools::{Host, ToolsSettings};

/// Secrets of the test config; none may leave in a bundle.
const SECRETS: [&str; 4] = [
    "Trunk-Secret-4242",
    "Phone-Secret-201x",
    "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
    "80417",
];

/// Tools over a config file holding [`SECRETS`], a free UDP port as the SIP port.
pub(super) fn settings(dir: &Path) -> ToolsSettings {
    let config = dir.join("branchd.toml");
    let text = format!(
        r#"[site]
name = "Test branch"
[auth]
installer_password_hash = "{}"
[sip]
udp = "127.0.0.1:5060"
[sip.trunk]
servers = ["sip:127.0.0.1:5070"]
username = "branch9"
password = "{}"
[[sip_accounts]]
extension = "201"
password = "{}"
[[conference_rooms]]
number = "800"
pin = "{}"
"#,
        SECRETS[2], SECRETS[0], SECRETS[1], SECRETS[3]
    );
    std::fs::write(&config, text).expect("config");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    ToolsSettings {
        hq_host: Some(Host::parse("127.0.0.1").expect("host")),
        trunk_uri: None,
        sip_ports: vec![port],
        rtp_ports: None,
        config_file: Some(config),
        secrets: SECRETS.iter().map(|s| (*s).to_owned()).collect(),
        db_path: Some(dir.join("branchline.db")),
        board_model: "sim".into(),
    }
}

impl Env {
    async fn api_post(&self, uri: &str, b: &Browser, csrf: bool, body: &str) -> Reply {
        let headers: Vec<(&str, &str)> = if csrf {
            vec![("x-csrf-token", b.csrf.as_str())]
        } else {
            Vec::new()
        };
        self.send(
            Method::POST,
            uri,
            &[&b.cookie],
            &headers,
            Some(body.to_owned()),
        )
        .await
    }
}

async fn send_raw(
    env: &Env,
    method: Method,
    uri: &str,
    b: &Browser,
    body: &str,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::COOKIE, &b.cookie)
        .header("x-csrf-token", &b.csrf)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request");
    let addr: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
    req.extensions_mut().insert(ConnectInfo(addr));
    let resp = env.router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, bytes.to_vec())
}

#[tokio::test]
async fn tools_need_the_permission_csrf_and_good_input() {
    let mut env = env().await;
    let tech = env.login("tech").await;
    let agent = env.login("agent1").await;
    // Agents: no page, no tool, no bundle, no capture.
    assert_eq!(
        env.get("/tools", Some(&agent)).await.status,
        StatusCode::FORBIDDEN
    );
    for (uri, body) in [
        ("/api/v1/tools/ping", "{}"),
        ("/api/v1/tools/traceroute", "{}"),
        ("/api/v1/tools/sip-options", r#"{"uri":"sip:127.0.0.1"}"#),
        ("/api/v1/tools/capture", r#"{"seconds":1}"#),
    ] {
        let r = env.api_post(uri, &agent, true, body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}: {}", r.text);
    }
    assert_eq!(
        env.get("/api/v1/tools/bundle", Some(&agent)).await.status,
        StatusCode::FORBIDDEN
    );
    assert!(env
        .audit()
        .iter()
        .any(|a| a.actor == "agent1" && a.result == "denied" && a.target == "capture"));
    // Not logged in: 401.
    let r = env
        .send(
            Method::POST,
            "/api/v1/tools/ping",
            &[],
            &[],
            Some("{}".into()),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // No CSRF header: 403, nothing runs (no audit row of a ping).
    let r = env.api_post("/api/v1/tools/ping", &tech, false, "{}").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("CSRF"), "{}", r.text);
    assert!(!env.audit().iter().any(|a| a.action == "tool_ping"));
    // Bad input: 400 naming the field, nothing run.
    for (uri, body, field) in [
        ("/api/v1/tools/ping", r#"{"host":"-f"}"#, "host"),
        (
            "/api/v1/tools/ping",
            r#"{"host":"127.0.0.1; reboot"}"#,
            "host",
        ),
        ("/api/v1/tools/ping", r#"{"host":"--help"}"#, "host"),
        ("/api/v1/tools/ping", r#"{"count":0}"#, "count"),
        ("/api/v1/tools/ping", r#"{"count":11}"#, "count"),
        ("/api/v1/tools/ping", r#"{"hosts":"x"}"#, "body"),
        ("/api/v1/tools/ping", "not json", "body"),
        (
            "/api/v1/tools/traceroute",
            r#"{"host":"$(reboot)"}"#,
            "host",
        ),
        ("/api/v1/tools/sip-options", r#"{"uri":"http://hq"}"#, "uri"),
        ("/api/v1/tools/sip-options", r#"{"uri":"sip:hq;lr"}"#, "uri"),
        (
            "/api/v1/tools/sip-options",
            r#"{"uri":"sip:-x:5060"}"#,
            "uri",
        ),
        ("/api/v1/tools/capture", r#"{"seconds":0}"#, "seconds"),
        ("/api/v1/tools/capture", r#"{"seconds":61}"#, "seconds"),
        ("/api/v1/tools/capture", r#"{"seconds":-5}"#, "seconds"),
        ("/api/v1/tools/capture", "{}", "seconds"),
    ] {
        let r = env.api_post(uri, &tech, true, body).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{uri} {body}: {}",
            r.text
        );
        assert_eq!(
            r.json()["problems"][0]["field"],
            field,
            "{uri} {body}: {}",
            r.text
        );
    }
    assert!(
        !env.audit().iter().any(|a| a.action.starts_with("tool_")),
        "bad input ran a tool"
    );
    // Without a SIP endpoint the probe says SIP is not configured (409).
    env.probes.close();
    let r = env
        .api_post(
            "/api/v1/tools/sip-options",
            &tech,
            true,
            r#"{"uri":"sip:127.0.0.1:5999"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("SIP is not configured"), "{}", r.text);
}

#[tokio::test]
async fn ping_and_traceroute_run_the_real_programs() {
    let env = env().await;
    let tech = env.login("tech").await;
    let r = env
        .api_post(
            "/api/v1/tools/ping",
            &tech,
            true,
            r#"{"host":"127.0.0.1","count":1}"#,
        )
        .await;
    match r.status {
        StatusCode::OK => {
            let v = r.json();
            assert_eq!(v["command"][0], "ping");
            assert_eq!(v["exit_code"], 0, "{v}");
            assert!(
                v["stdout"].as_str().unwrap_or("").contains("1 received"),
                "{v}"
            );
        }
        StatusCode::NOT_IMPLEMENTED => assert!(r.text.contains("ping is not installed")),
        s => panic!("{s}: {}", r.text),
    }
    // The default host is HQ's (127.0.0.1 here), through the page's form.
    let page = env
        .post_form(
            "/tools/ping",
            &tech,
            &format!("csrf={}&host=&count=1", tech.csrf),
        )
        .await;
    if r.status == StatusCode::OK {
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        assert!(page.text.contains("Ping result"), "{}", page.text);
        assert!(
            page.text.contains("ping -n -c 1 -W 2 127.0.0.1"),
            "{}",
            page.text
        );
    }
    // A bad host on the page: the form again with the reason, 400.
    let page = env
        .post_form(
            "/tools/ping",
            &tech,
            &format!("csrf={}&host=-f&count=1", tech.csrf),
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.text.contains("is not a host name or IP address"),
        "{}",
        page.text
    );
    // Forms without the token are refused.
    let page = env
        .post_form("/tools/ping", &tech, "csrf=nope&host=127.0.0.1")
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let r = env
        .api_post(
            "/api/v1/tools/traceroute",
            &tech,
            true,
            r#"{"host":"127.0.0.1"}"#,
        )
        .await;
    match r.status {
        StatusCode::OK => assert!(r.json()["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("127.0.0.1")),
        StatusCode::NOT_IMPLEMENTED => assert!(r.text.contains("traceroute is not installed")),
        s => panic!("{s}: {}", r.text),
    }
    assert!(env
        .audit()
        .iter()
        .any(|a| a.action == "tool_ping" && a.actor == "tech"));
}

#[tokio::test]
async fn a_capture_holds_the_sip_packets_sent_meanwhile_and_a_second_one_waits() {
    let env = Arc::new(env().await);
    let tech = env.login("tech").await;
    let port = env.tools.sip_ports[0];
    let e = Arc::clone(&env);
    let b = tech.clone();
    let first = tokio::spawn(async move {
        send_raw(
            &e,
            Method::POST,
            "/api/v1/tools/capture",
            &b,
            r#"{"seconds":2}"#,
        )
        .await
    });
    // Once it runs, a second one is refused.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let second = env
        .api_post("/api/v1/tools/capture", &tech, true, r#"{"seconds":1}"#)
        .await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.text);
    // SIP to the box's SIP port, and a packet to another port that must not be kept.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    let options =
        format!("OPTIONS sip:probe@127.0.0.1:{port} SIP/2.0\r\nCall-ID: capture-test\r\n\r\n");
    for _ in 0..3 {
        sock.send_to(options.as_bytes(), ("127.0.0.1", port))
            .expect("send");
        sock.send_to(b"not sip", ("127.0.0.1", 9)).expect("send");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, headers, pcap) = first.await.expect("capture task");
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&pcap));
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/vnd.tcpdump.pcap"
    );
    assert!(headers[header::CONTENT_DISPOSITION]
        .to_str()
        .expect("ascii")
        .contains(".pcap"));
    let mut reader = pcap_file::pcap::PcapReader::new(&pcap[..]).expect("a pcap file");
    assert_eq!(reader.header().datalink, pcap_file::DataLink::RAW);
    let mut sip = 0;
    while let Some(p) = reader.next_packet() {
        let p = p.expect("packet");
        let ip = &p.data;
        assert_eq!(ip[0] >> 4, 4, "IPv4");
        let ihl = usize::from(ip[0] & 15) * 4;
        let dst = u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]);
        let src = u16::from_be_bytes([ip[ihl], ip[ihl + 1]]);
        assert!(
            dst == port || src == port,
            "a packet of another port was kept"
        );
        if ip[ihl + 8..].starts_with(b"OPTIONS sip:probe@") {
            sip += 1;
        }
    }
    // Each datagram once (the loopback's sent copy is skipped).
    assert_eq!(sip, 3, "the three OPTIONS in the capture");
    assert_eq!(headers["x-capture-packets"], "3");
    // The flag is down again: the next capture runs.
    let r = env
        .api_post("/api/v1/tools/capture", &tech, true, r#"{"seconds":1}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(env
        .audit()
        .iter()
        .any(|a| a.action == "tool_capture" && a.result == "ok"));
}

#[tokio::test]
async fn the_bundle_has_the_config_without_secrets_store_stats_and_versions() {
    let env = env().await;
    let tech = env.login("tech").await;
    let (status, headers, gz) =
        send_raw(&env, Method::GET, "/api/v1/tools/bundle", &tech, "").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&gz));
    assert_eq!(headers[header::CONTENT_TYPE], "application/gzip");
    let mut files = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("text");
        files.insert(name.split_once('/').expect("top dir").1.to_owned(), text);
    }
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "config.toml",
            "logs/recent.log",
            "status.json",
            "store.json",
            "versions.json"
        ]
    );
    for (name, text) in &files {
        for s in SECRETS {
            assert!(!text.contains(s), "{s} in {name}:\n{text}");
        }
    }
    let config = &files["config.toml"];
    assert!(
        config.contains("Test branch") && config.contains("branch9"),
        "{config}"
    );
    assert!(config.contains("<redacted>"), "{config}");
    let store: Value = serde_json::from_str(&files["store.json"]).expect("json");
    assert_eq!(store["schema_version"], crate::store::SCHEMA_VERSION);
    assert!(
        store["tables"]["users"].as_i64().unwrap_or(0) >= 4,
        "{store}"
    );
    assert!(store["db_bytes"].as_u64().unwrap_or(0) > 0, "{store}");
    let versions: Value = serde_json::from_str(&files["versions.json"]).expect("json");
    assert_eq!(versions["branchd"], env!("CARGO_PKG_VERSION"));
    let live: Value = serde_json::from_str(&files["status.json"]).expect("json");
    assert!(live["box"]["ports"].is_array(), "{live}");
    assert!(live["sync_and_wan"].is_object(), "{live}");
    // The page links it for the technician; a supervisor has no diagnostics at all.
    let page = env.get("/tools", Some(&tech)).await;
    assert_eq!(page.status, StatusCode::OK);
    for needle in [
        "/api/v1/tools/bundle",
        "/tools/capture",
        "/tools/sip-options",
        "/tools/ping",
        "href=\"/tools\"",
    ] {
        assert!(page.text.contains(needle), "{needle}: {}", page.text);
    }
    let sup = env.login("sup").await;
    assert_eq!(
        env.get("/tools", Some(&sup)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send_raw(&env, Method::GET, "/api/v1/tools/bundle", &sup, "")
            .await
            .0,
        StatusCode::FORBIDDEN
    );
}
