use super::*;

#[test]
fn hosts_are_names_or_ip_literals_only() {
    for ok in [
        "hq.example.com",
        "hq",
        "10.0.0.1",
        "::1",
        "[2001:db8::1]",
        "a-b.c9.",
        " hq.local ",
    ] {
        assert!(Host::parse(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "-f",
        "--help",
        "hq;reboot",
        "hq example",
        "$(id)",
        "a..b",
        "-hq.example",
        "hq-.example",
        "1.2.3",
        "hq.example.com/x",
        "fe80::1%eth0",
        "héllo",
        &"a".repeat(64),
        &format!("{}.com", "a.".repeat(130)),
    ] {
        assert!(
            matches!(Host::parse(bad), Err(ToolError::BadHost { .. })),
            "{bad:?} accepted"
        );
    }
    assert_eq!(Host::parse("[::1]").expect("v6").as_str(), "::1");
}

#[test]
fn probe_uris_are_checked() {
    let u = ProbeUri::parse("sip:127.0.0.1:5070").expect("uri");
    assert_eq!((u.port, u.transport), (5070, rsip::Transport::Udp));
    assert_eq!(u.text, "sip:127.0.0.1:5070");
    let u = ProbeUri::parse("SIP:trunk@carrier.example;transport=TCP").expect("uri");
    assert_eq!(u.text, "sip:trunk@carrier.example:5060;transport=tcp");
    assert_eq!(u.transport, rsip::Transport::Tcp);
    let u = ProbeUri::parse("sip:[::1]:5062").expect("v6");
    assert_eq!(u.text, "sip:[::1]:5062");
    for bad in [
        "",
        "127.0.0.1",
        "http://hq",
        "sips:hq",
        "sip:",
        "sip:-x",
        "sip:hq:0",
        "sip:hq:70000",
        "sip:hq;lr",
        "sip:a b@hq",
        "sip:hq;transport=tls",
        "sip:[::1",
        "sip:hq:5060\r\nX: y",
    ] {
        assert!(
            matches!(ProbeUri::parse(bad), Err(ToolError::BadUri { .. })),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn the_hq_host_comes_from_the_url() {
    assert_eq!(
        url_host("https://hq.example:8443/x").map(|h| h.0),
        Some("hq.example".into())
    );
    assert_eq!(
        url_host("https://[2001:db8::2]:443").map(|h| h.0),
        Some("2001:db8::2".into())
    );
    assert_eq!(
        url_host("https://127.0.0.1").map(|h| h.0),
        Some("127.0.0.1".into())
    );
    assert_eq!(url_host("https://bad host/"), None);
}

fn tools() -> (Tools, mpsc::UnboundedReceiver<OptionsProbe>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let settings = ToolsSettings {
        hq_host: Some(Host::parse("127.0.0.1").expect("host")),
        ..ToolsSettings::default()
    };
    (Tools::new(settings, tx, None), rx)
}

#[tokio::test]
async fn bad_input_runs_nothing() {
    let (t, _rx) = tools();
    assert!(matches!(
        t.ping(Some("-c 1000 hq"), None).await,
        Err(ToolError::BadHost { .. })
    ));
    assert!(matches!(
        t.ping(None, Some(0)).await,
        Err(ToolError::BadCount { count: 0 })
    ));
    assert!(matches!(
        t.ping(None, Some(11)).await,
        Err(ToolError::BadCount { .. })
    ));
    assert!(matches!(
        t.traceroute(Some("--help")).await,
        Err(ToolError::BadHost { .. })
    ));
    assert!(matches!(
        t.sip_options(Some("http://x")).await,
        Err(ToolError::BadUri { .. })
    ));
    assert!(matches!(
        t.sip_options(None).await,
        Err(ToolError::NoTarget { .. })
    ));
    for s in [0, -1, 61, i64::MAX] {
        assert!(
            matches!(t.capture(s, &[]).await, Err(ToolError::BadDuration { .. })),
            "{s}"
        );
    }
    assert!(!t.capture_running());
}

#[tokio::test]
async fn ping_runs_the_real_program_or_says_it_is_missing() {
    let (t, _rx) = tools();
    match t.ping(None, Some(1)).await {
        Ok(run) => {
            assert_eq!(run.command[0], "ping");
            assert!(run.command.contains(&"127.0.0.1".to_owned()));
            assert!(!run.timed_out);
            // ping prints its own summary (or an error) either way.
            assert!(!(run.stdout.is_empty() && run.stderr.is_empty()));
        }
        Err(ToolError::NotInstalled { program }) => assert_eq!(program, "ping"),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn the_probe_goes_through_the_endpoint_channel() {
    let (t, mut rx) = tools();
    let answer = tokio::spawn(async move {
        let p = rx.recv().await.expect("probe");
        assert_eq!(p.uri, "sip:127.0.0.1:5099;transport=tcp");
        assert_eq!(p.destination, "127.0.0.1:5099".parse().expect("addr"));
        p.reply
            .send(ProbeAnswer::Response {
                code: 404,
                reason: "Not Found".into(),
                server: Some("peer".into()),
                rtt: Duration::from_micros(1500),
                local: "127.0.0.1:5060".parse().expect("addr"),
            })
            .expect("reply");
    });
    let r = t
        .sip_options(Some("sip:127.0.0.1:5099;transport=tcp"))
        .await
        .expect("report");
    answer.await.expect("task");
    assert_eq!(
        (r.outcome, r.status, r.rtt_ms),
        ("answered", Some(404), Some(1.5))
    );
    assert_eq!(r.reason.as_deref(), Some("Not Found"));
    // Without an endpoint (no [sip]) the probe says so.
    let (t, rx) = tools();
    drop(rx);
    assert!(matches!(
        t.sip_options(Some("sip:127.0.0.1")).await,
        Err(ToolError::NoSip)
    ));
}
