//! The web diagnostics page in a real browser: Debian's `chromium`, headless, driven
//! through `chromedriver` (WebDriver) with `fantoccini`, against the real `branchd` on
//! the simulated board.
//!
//! A technician logs in with the form, sees the dashboard, a simulated handset is
//! lifted and the page shows it without a reload (SSE), a ring test from the ports
//! page makes the simulated phone ring, a busy port's ring test is refused, and an
//! agent gets the 403 page on the dashboard, ports and system pages; an admin sees the
//! CDR of a call between two simulated phones on the calls page, and the SIP and sync
//! pages say "not configured". Every page is
//! saved as a screenshot under `target/web-screenshots/` (not committed) with the
//! dashboard's weight and paint timing in `metrics.json` (see BENCHMARKS.md).
//!
//! Without `chromium` and `chromedriver` (Debian `chromium chromium-driver`, which
//! `.ci/run` installs) this test fails; it does not skip.
//!
//! The tools page: the technician pings 127.0.0.1 and sends an OPTIONS probe with
//! the forms and sees the results, and a capture made through the page's own form
//! data with the browser's session downloads a pcap that parses and holds the SIP sent
//! meanwhile.
//!
//! The provisioning page: an admin sees the box's claim QR, pastes a token made by
//! `branch-prov`, gets the confirm step (nothing applied yet), applies it and sees
//! the result; `branchd` then restarts with the settings.
//!
//! Without a browser: a SIPp phone registers with a `branchd` that has `[sip]`, and
//! `GET /api/v1/sip` and the `/sip` page show its contact, source address and expiry
//! from the SIP endpoint.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::{json, Value};

use crate::api_client::Api;
use crate::browser::{browser, Driver};
use crate::harness::{wait, Gateway, DIAL_PLAN, SOON};

const PASSWORD: &str = "Field-tech-pass-2024";
/// Generous bound for anything the page must show (only stops a hang; the suite also
/// runs under qemu).
const PAGE_WAIT: Duration = Duration::from_secs(60);

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("web-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("save screenshot");
}

/// Adds a user from the console (`branchd user-add`) with the test's password.
fn add_user(gw: &Gateway, username: &str, role: &str) {
    crate::api_client::add_user(gw, username, role, PASSWORD);
}

/// Polls the text of the element at `css` until `want` holds.
async fn wait_text(c: &Client, css: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PAGE_WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(el) = c.find(Locator::Css(css)).await {
            if let Ok(t) = el.text().await {
                if want(&t) {
                    return t;
                }
                last = t;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: still {last:?}");
}

async fn login(c: &Client, base: &str, username: &str) {
    crate::browser::login(c, base, username, PASSWORD).await;
}

async fn path_of(c: &Client) -> String {
    let u = c.current_url().await.expect("url");
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    }
}

async fn wait_path(c: &Client, want: &str) {
    let deadline = Instant::now() + PAGE_WAIT;
    while Instant::now() < deadline {
        if path_of(c).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never reached {want}: at {}", path_of(c).await);
}

#[test]
fn technician_sees_live_ports_rings_a_phone_and_an_agent_is_refused() {
    let gw = Gateway::start();
    let addr: SocketAddr = gw.web_addr();
    let base = format!("http://{addr}");
    add_user(&gw, "tech1", "technician");
    add_user(&gw, "agent1", "agent");
    add_user(&gw, "boss1", "admin");
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(&driver).await;

        // Not logged in: the login page.
        c.goto(&format!("{base}/dashboard")).await.expect("goto");
        wait_path(&c, "/login?next=/dashboard").await;
        shot(&c, "01-login").await;
        login(&c, &base, "tech1").await;
        wait_path(&c, "/dashboard").await;

        // The dashboard from the real daemon: port 1 on-hook (read from the board),
        // no calls, sync and SIP not configured.
        let hook1 = "[data-port=\"1\"][data-field=\"hook\"]";
        wait_text(&c, hook1, |t| t == "on-hook").await;
        let page = c.source().await.expect("source");
        assert!(page.contains("101 Reception"), "{page}");
        assert!(page.contains("not configured (no [sip] section)"));
        // The page's measurements for BENCHMARKS.md (no timed assertion here).
        let metrics = c
            .execute(
                "const n = performance.getEntriesByType('navigation')[0];
                 const paint = performance.getEntriesByType('paint');
                 const fp = paint.find(p => p.name === 'first-paint');
                 const fcp = paint.find(p => p.name === 'first-contentful-paint');
                 return {
                   html_bytes: n.decodedBodySize,
                   resources: performance.getEntriesByType('resource')
                     .filter(r => r.name.includes('/static/'))
                     .map(r => ({ name: r.name, bytes: r.decodedBodySize })),
                   response_end_ms: n.responseEnd,
                   dom_content_loaded_ms: n.domContentLoadedEventEnd,
                   first_paint_ms: fp ? fp.startTime : null,
                   first_contentful_paint_ms: fcp ? fcp.startTime : null,
                 };",
                vec![],
            )
            .await
            .expect("performance timing");
        let weight = metrics["html_bytes"].as_u64().unwrap_or(0)
            + metrics["resources"]
                .as_array()
                .map_or(0, |r| r.iter().filter_map(|x| x["bytes"].as_u64()).sum());
        assert!(
            metrics["resources"]
                .as_array()
                .is_some_and(|r| r.len() == 2),
            "the CSS and the JS load: {metrics}"
        );
        assert!(
            weight > 0 && weight < 100 * 1024,
            "page weight {weight} B: {metrics}"
        );
        let mut report = metrics.clone();
        report["page_weight_bytes"] = json!(weight);
        std::fs::write(
            screenshot_dir().join("metrics.json"),
            serde_json::to_vec_pretty(&report).expect("json"),
        )
        .expect("save metrics");
        println!("dashboard metrics: {report}");
        shot(&c, "02-dashboard").await;

        // Live: the script got its first SSE event; a handset lifted on the simulator
        // shows without a reload.
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let v = c
                .execute(
                    "return document.documentElement.getAttribute('data-status-version');",
                    vec![],
                )
                .await
                .expect("script");
            if v.is_string() {
                break;
            }
            assert!(Instant::now() < deadline, "the SSE stream never delivered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c.execute("window.blNoReload = 'still here';", vec![])
            .await
            .expect("marker");
        gw.sim.phone(1).off_hook();
        wait_text(&c, hook1, |t| t == "off-hook").await;
        wait_text(&c, "[data-port=\"1\"][data-field=\"state\"]", |t| {
            t != "idle"
        })
        .await;
        let marker: Value = c
            .execute("return window.blNoReload || null;", vec![])
            .await
            .expect("marker");
        assert_eq!(marker, json!("still here"), "the page reloaded");
        shot(&c, "03-dashboard-off-hook").await;
        gw.sim.phone(1).on_hook();
        wait_text(&c, hook1, |t| t == "on-hook").await;

        // Ports: line readings, and a ring test that rings the simulated phone.
        c.goto(&format!("{base}/ports")).await.expect("goto");
        wait_text(&c, "[data-port=\"2\"][data-field=\"line\"]", |t| {
            t.contains(" V, ")
        })
        .await;
        shot(&c, "04-ports").await;
        assert!(!gw.sim.phone(2).is_ringing());
        c.find(Locator::Css("form[action=\"/ports/2/ring-test\"] button"))
            .await
            .expect("ring test button")
            .click()
            .await
            .expect("click");
        wait_path(&c, "/ports?rang=2").await;
        assert!(
            wait(SOON, || gw.sim.phone(2).is_ringing()),
            "the simulated phone 2 rings"
        );
        let notice = wait_text(&c, "p.notice", |t| t.contains("port 2")).await;
        assert!(notice.contains("Ring test started"), "{notice}");
        wait_text(&c, "[data-port=\"2\"][data-field=\"ring_test\"]", |t| {
            t == "ringing"
        })
        .await;
        shot(&c, "05-ports-ring-test").await;
        // It stops by itself.
        assert!(
            wait(PAGE_WAIT, || !gw.sim.phone(2).is_ringing()),
            "the ring test ends"
        );
        wait_text(&c, "[data-port=\"2\"][data-field=\"ring_test\"]", |t| {
            t == "off"
        })
        .await;

        // A line test of a PSTN line the simulator reports cut: the checks say why.
        gw.sim.inject_fault(6, line_proto::FaultKind::NoLineVoltage);
        c.find(Locator::Css("form[action=\"/ports/6/line-test\"] button"))
            .await
            .expect("line test button")
            .click()
            .await
            .expect("click");
        wait_path(&c, "/ports?tested=6").await;
        let notice = wait_text(&c, "p.notice", |t| t.contains("port 6")).await;
        assert!(notice.contains("failed: self-test"), "{notice}");
        let checks = wait_text(&c, "#port-6 table.checks", |t| t.contains("no line")).await;
        assert!(checks.contains("0.0 V"), "{checks}");
        shot(&c, "05b-ports-line-test").await;
        gw.sim.clear_fault(6);

        // A port in use: refused with the reason; the phone does not ring.
        gw.sim.phone(3).off_hook();
        wait_text(&c, "[data-port=\"3\"][data-field=\"hook\"]", |t| {
            t == "off-hook"
        })
        .await;
        c.find(Locator::Css("form[action=\"/ports/3/ring-test\"] button"))
            .await
            .expect("ring test button")
            .click()
            .await
            .expect("click");
        let refused = wait_text(&c, "main", |t| t.contains("Ring test not started")).await;
        assert!(refused.contains("busy"), "{refused}");
        assert!(refused.contains("409"), "{refused}");
        assert!(!gw.sim.phone(3).is_ringing());
        shot(&c, "06-ring-test-refused").await;
        gw.sim.phone(3).on_hook();

        c.goto(&format!("{base}/system")).await.expect("goto");
        wait_text(&c, "h1", |t| t == "System").await;
        shot(&c, "07-system").await;
        // Reboot asks to confirm first (not confirmed here: the test goes on).
        c.find(Locator::Css("form[action=\"/system/reboot\"] button"))
            .await
            .expect("reboot button")
            .click()
            .await
            .expect("click");
        let confirm = wait_text(&c, "main", |t| t.contains("Reboot the box?")).await;
        assert!(confirm.contains("No call is in progress."), "{confirm}");
        shot(&c, "07-system-reboot-confirm").await;
        c.find(Locator::Css("#confirm a.button"))
            .await
            .expect("cancel")
            .click()
            .await
            .expect("click");
        wait_text(&c, "h1", |t| t == "System").await;

        // A phone screen: nothing wider than the screen.
        c.set_window_size(390, 844).await.expect("resize");
        c.goto(&format!("{base}/dashboard")).await.expect("goto");
        wait_text(&c, hook1, |t| t == "on-hook").await;
        let fits = c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .expect("script");
        assert_eq!(
            fits,
            json!(true),
            "the dashboard scrolls sideways on a phone"
        );
        shot(&c, "08-dashboard-phone").await;
        c.goto(&format!("{base}/ports")).await.expect("goto");
        shot(&c, "09-ports-phone").await;
        c.set_window_size(1280, 900).await.expect("resize");

        // Log out, then an agent: 403 on the technician's pages.
        c.goto(&format!("{base}/dashboard")).await.expect("goto");
        c.find(Locator::Css("form.logout button"))
            .await
            .expect("logout button")
            .click()
            .await
            .expect("click");
        wait_path(&c, "/login?bye=1").await;
        login(&c, &base, "agent1").await;
        wait_path(&c, "/dashboard").await;
        for (page, permission) in [
            ("/dashboard", "diagnostics.view"),
            ("/ports", "diagnostics.view"),
            ("/system", "system_config.view"),
        ] {
            c.goto(&format!("{base}{page}")).await.expect("goto");
            let text = wait_text(&c, "main", |t| t.contains("Access denied")).await;
            assert!(text.contains(permission), "{page}: {text}");
            assert!(text.contains("403"), "{page}: {text}");
        }
        shot(&c, "10-agent-forbidden").await;

        // A call between two simulated phones, then an admin (calls.view and
        // numbers.view) finds its CDR on the calls page.
        gw.sim.phone(1).off_hook();
        gw.sim.phone(1).dial("102");
        assert!(wait(SOON, || gw.sim.phone(2).is_ringing()), "phone 2 rings");
        gw.sim.phone(2).off_hook();
        c.find(Locator::Css("form.logout button"))
            .await
            .expect("logout button")
            .click()
            .await
            .expect("click");
        wait_path(&c, "/login?bye=1").await;
        login(&c, &base, "boss1").await;
        wait_path(&c, "/dashboard").await;
        c.goto(&format!("{base}/calls")).await.expect("goto");
        let active = wait_text(&c, "#active", |t| t.contains("FXS port 2")).await;
        assert!(
            active.contains("101") && active.contains("connected"),
            "{active}"
        );
        shot(&c, "11-calls-active").await;
        gw.sim.phone(2).on_hook();
        gw.sim.phone(1).on_hook();
        let stored = gw.wait_cdrs(1);
        assert_eq!(stored.len(), 1, "one CDR");
        c.goto(&format!("{base}/calls")).await.expect("goto");
        let cdrs = wait_text(&c, "#cdrs", |t| t.contains("answered")).await;
        assert!(cdrs.contains("101") && cdrs.contains("102"), "{cdrs}");
        let active = wait_text(&c, "#active", |t| !t.is_empty()).await;
        assert!(active.contains("No call in progress."), "{active}");
        shot(&c, "12-calls-cdr").await;
        c.goto(&format!("{base}/sip")).await.expect("goto");
        wait_text(&c, "main", |t| t.contains("Not configured")).await;
        shot(&c, "13-sip").await;
        c.goto(&format!("{base}/sync")).await.expect("goto");
        let sync = wait_text(&c, "#backlog", |t| t.contains("records")).await;
        assert!(sync.contains("Outbox backlog"), "{sync}");
        // No [hq] and no [wan] trunk: the WAN section says so.
        let wan = wait_text(&c, "#wan", |t| !t.is_empty()).await;
        assert!(wan.contains("Not configured"), "{wan}");
        shot(&c, "14-sync").await;
        c.goto(&format!("{base}/logs?level=info"))
            .await
            .expect("goto");
        wait_text(&c, "h1", |t| t.contains("log")).await;
        shot(&c, "15-logs").await;
        c.goto(&format!("{base}/queues")).await.expect("goto");
        wait_text(&c, "h1", |t| t.contains("Queues")).await;
        shot(&c, "16-queues").await;
        // The error page of an address that does not exist.
        c.goto(&format!("{base}/no-such-page")).await.expect("goto");
        let missing = wait_text(&c, "main", |t| t.contains("Page not found")).await;
        assert!(missing.contains("/no-such-page"), "{missing}");
        shot(&c, "17-error-404").await;

        // Every page of a logged-in admin on a phone screen: nothing wider than it.
        c.set_window_size(390, 844).await.expect("resize");
        for (page, name) in [
            ("/system", "system"),
            ("/sync", "sync"),
            ("/calls", "calls"),
            ("/sip", "sip"),
            ("/sip/trace", "sip-trace"),
            ("/logs?level=info", "logs"),
            ("/queues", "queues"),
            ("/tools", "tools"),
            ("/provisioning", "provisioning"),
            ("/no-such-page", "error-404"),
        ] {
            c.goto(&format!("{base}{page}")).await.expect("goto");
            wait_text(&c, "h1", |t| !t.is_empty()).await;
            let fits = c
                .execute(
                    "return document.documentElement.scrollWidth <= window.innerWidth;",
                    vec![],
                )
                .await
                .expect("script");
            shot(&c, &format!("18-phone-{name}")).await;
            assert_eq!(fits, json!(true), "{page} scrolls sideways on a phone");
        }
        c.close().await.expect("close the browser");
    });
}

/// The system page of a box with A/B slots, after a real update's trial boot: the
/// health check commits slot B, and the page shows both slots from the updater's
/// backend (the same state `branch-image` writes). The box also watches a SIP trunk
/// that refuses connections (`[wan] trunk`, no `[hq]`): the sync page's WAN section
/// shows it offline with the probe's error, and HQ not configured.
#[test]
fn system_page_shows_the_ab_slots_after_an_update_and_sync_page_the_wan() {
    let dir = tempfile::tempdir().expect("tmp");
    let slots = crate::health_check::box_on_trial_of_b(dir.path());
    // A port nothing listens on: the TCP probe is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let plan = format!(
        "{DIAL_PLAN}{}\n[wan]\ntrunk = \"{closed}\"\ntrunk_transport = \"tcp\"\nprobe_interval_ms = 500\n",
        crate::health_check::update_section(&slots)
    );
    let gw = Gateway::start_with(&plan);
    assert!(
        gw.wait_log("update committed", SOON),
        "never committed:\n{}",
        gw.log_text()
    );
    let base = format!("http://{}", gw.web_addr());
    add_user(&gw, "tech1", "technician");
    let tech = Api::login(gw.web_addr(), "tech1", PASSWORD).0;
    let (status, system) = tech.get("/api/v1/system");
    assert_eq!(status, 200, "{system}");
    let s = &system["slots"];
    assert_eq!(s["configured"], true, "{system}");
    assert_eq!(s["booted"], "B", "{system}");
    assert_eq!(s["floor"], "1.2.0", "{system}");
    assert_eq!(s["slots"][0]["version"], "1.1.0", "{system}");
    assert_eq!(s["slots"][0]["state"], "good", "{system}");
    assert_eq!(s["slots"][1]["version"], "1.2.0", "{system}");
    assert_eq!(s["slots"][1]["state"], "good", "committed: {system}");
    assert_eq!(s["slots"][1]["booted"], true, "{system}");
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(&driver).await;
        login(&c, &base, "tech1").await;
        wait_path(&c, "/dashboard").await;
        c.goto(&format!("{base}/system")).await.expect("goto");
        let card = wait_text(&c, "#slots", |t| t.contains("1.2.0")).await;
        for want in ["1.1.0", "good", "booted", "Anti-rollback floor"] {
            assert!(card.contains(want), "{want}: {card}");
        }
        assert!(!card.contains("Not configured"), "{card}");
        scroll_to(&c, "slots").await;
        shot(&c, "07b-system-slots").await;

        c.goto(&format!("{base}/sync")).await.expect("goto");
        let wan = wait_text(&c, "#wan", |t| t.contains("Connection refused")).await;
        for want in [
            "offline",
            "not configured",
            &closed.to_string(),
            "do not use the SIP trunk",
        ] {
            assert!(wan.contains(want), "{want}: {wan}");
        }
        shot(&c, "14b-sync-wan-offline").await;
        c.close().await.expect("close the browser");
    });
}

/// The live SIP trace: the page filtered by a number is open before any SIP traffic;
/// two SIPp phones register, and the matching phone's messages appear in the page
/// without a reload (SSE) while the other phone's stay out; unfiltered, both show.
#[test]
fn sip_trace_page_shows_matching_messages_live_and_hides_the_others() {
    use crate::sip_calls::{free_port, register, SIP_PLAN};
    let gw = Gateway::start_with(&format!("{DIAL_PLAN}\n{SIP_PLAN}"));
    assert!(
        gw.wait_log("sip endpoint listening", SOON),
        "no SIP listener:\n{}",
        gw.log_text()
    );
    let base = format!("http://{}", gw.web_addr());
    add_user(&gw, "tech1", "technician");
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(&driver).await;
        login(&c, &base, "tech1").await;
        wait_path(&c, "/dashboard").await;
        c.goto(&format!("{base}/sip/trace?filter=201"))
            .await
            .expect("goto");
        wait_text(&c, "#trace-empty", |t| t.contains("No message matches yet")).await;
        // A reload would lose this.
        c.execute("window.blNotReloaded = true; return true;", vec![])
            .await
            .expect("script");
        let items = "return Array.from(document.querySelectorAll('ol.trace li[data-seq]'))\
                     .map(function (li) { return li.textContent; });";
        // Give the page's EventSource a moment to connect (it would get the kept
        // messages at connect anyway).
        tokio::time::sleep(Duration::from_millis(500)).await;
        register(&gw, "202", "soft-phone-pass-two", free_port());
        register(&gw, "201", "desk-phone-pass-one", free_port());
        // 201's two REGISTERs and the 401 and 200 answers.
        let deadline = Instant::now() + PAGE_WAIT;
        let shown = loop {
            let v = c.execute(items, vec![]).await.expect("script");
            let texts: Vec<String> = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if texts.iter().filter(|t| t.contains("SIP/2.0 200")).count() >= 1 && texts.len() >= 4 {
                break texts;
            }
            assert!(
                Instant::now() < deadline,
                "201's messages never came: {texts:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            c.execute("return window.blNotReloaded === true;", vec![])
                .await
                .expect("script"),
            json!(true),
            "the page was reloaded"
        );
        for t in &shown {
            assert!(t.contains("sip:201@"), "a message not about 201: {t}");
            assert!(!t.contains("sip:202@"), "202's message shown: {t}");
            assert!(!t.contains("desk-phone-pass-one"), "a password shown: {t}");
        }
        assert!(
            shown.iter().any(|t| t.contains("REGISTER sip:")),
            "{shown:?}"
        );
        assert!(shown.iter().any(|t| t.contains("SIP/2.0 401")), "{shown:?}");
        assert!(
            c.find(Locator::Id("trace-empty")).await.is_err(),
            "the 'nothing yet' line is gone"
        );
        // Each message ends at its last line: the CRLFs that close it are not drawn
        // as blank lines under it (added live here, server-rendered below).
        let pres = "return Array.from(document.querySelectorAll('ol.trace li[data-seq] pre'))\
                    .map(function (p) { return p.textContent; });";
        let ends_at_last_line = |v: Value, how: &str| {
            let texts = v.as_array().cloned().unwrap_or_default();
            assert!(!texts.is_empty(), "{how}: no message");
            for t in texts.iter().filter_map(Value::as_str) {
                assert!(t.contains("SIP/2.0"), "{how}: {t:?}");
                assert!(
                    !t.ends_with(['\n', '\r']) && !t.contains('\r'),
                    "{how}: blank lines under the message: {t:?}"
                );
            }
        };
        ends_at_last_line(c.execute(pres, vec![]).await.expect("script"), "live");
        // Open the first message, as a technician would, for the screenshot.
        c.find(Locator::Css("ol.trace li[data-seq] summary"))
            .await
            .expect("a message")
            .click()
            .await
            .expect("click");
        shot(&c, "13b-sip-trace-live").await;

        // Unfiltered: 202's messages are there too (server-rendered now).
        c.goto(&format!("{base}/sip/trace")).await.expect("goto");
        wait_text(&c, "ol.trace", |t| t.contains("REGISTER")).await;
        let all = c.execute(items, vec![]).await.expect("script").to_string();
        assert!(all.contains("sip:202@"), "202 unfiltered: {all}");
        assert!(all.contains("sip:201@"), "201 unfiltered: {all}");
        ends_at_last_line(c.execute(pres, vec![]).await.expect("script"), "rendered");
        shot(&c, "13c-sip-trace-all").await;
        c.close().await.expect("close the browser");
    });
}

/// A SIPp UAS on `ip`:`port` running `scenario` once (a trunk's registrar).
fn sipp_uas(scenario: &str, ip: &str, port: u16) -> Child {
    Command::new("/usr/bin/sipp")
        .arg("-sf")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("data/sip")
                .join(scenario),
        )
        .args(["-i", ip, "-mi", ip, "-nostdin"])
        .args(["-p", &port.to_string()])
        .args(["-mp", &crate::sip_calls::free_port().to_string()])
        .args(["-timeout", "30s", "-timeout_error", "-m", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp starts")
}

#[test]
fn sip_page_and_api_show_the_trunk_and_a_phone_registered_with_sipp() {
    use crate::sip_calls::{free_port, register, SIP_PLAN};
    // The trunk's registrar: SIPp answers one REGISTER with 200 (300 s). On
    // 127.0.0.2: requests from a trunk server's address count as the trunk's, and the
    // phone below calls from 127.0.0.1.
    let trunk_port = free_port();
    let mut registrar = sipp_uas("uas_register_ok.xml", "127.0.0.2", trunk_port);
    std::thread::sleep(Duration::from_millis(300));
    let plan = format!(
        r#"{DIAL_PLAN}
{SIP_PLAN}
[sip.trunk]
servers = ["127.0.0.2:{trunk_port}"]
domain = "carrier.test"
username = "branch17"
password = "trunk-secret"
expires = 3600
keepalive_s = 0
"#
    );
    let gw = Gateway::start_with(&plan);
    assert!(
        gw.wait_log("trunk registered", SOON),
        "no trunk registration:\n{}",
        gw.log_text()
    );
    let _ = registrar.wait();
    add_user(&gw, "tech1", "technician");
    let port = free_port();
    register(&gw, "201", "desk-phone-pass-one", port);
    assert!(gw.wait_log("added 201", SOON), "binding logged");

    let tech = Api::login(gw.web_addr(), "tech1", PASSWORD).0;
    let get = |path: &str| tech.get_text(path);
    let source = format!("udp 127.0.0.1:{port}");
    let (status, text) = get("/api/v1/sip");
    assert_eq!(status, 200, "{text}");
    let sip: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(sip["configured"], true, "{sip}");
    let trunk = &sip["trunk"];
    assert_eq!(trunk["state"], "registered", "{sip}");
    assert_eq!(trunk["usable"], true, "{sip}");
    assert_eq!(trunk["username"], "branch17");
    assert_eq!(
        trunk["server"],
        format!("127.0.0.2:{trunk_port};transport=udp").as_str(),
        "{sip}"
    );
    assert_eq!(trunk["servers"][0]["health"], "ok", "{sip}");
    let granted = trunk["expires_at_ms"].as_i64().unwrap_or(0) - sip["at_ms"].as_i64().unwrap_or(0);
    assert!(granted > 0 && granted <= 300_000, "granted 300 s: {sip}");
    assert_eq!(sip["phones_registered"], 1, "{sip}");
    let phone = sip["phones"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["extension"] == "201"))
        .expect("account 201");
    assert_eq!(phone["name"], "Desk Phone");
    let contact = &phone["contacts"][0];
    assert_eq!(contact["source"], source.as_str(), "{sip}");
    assert!(
        contact["contact"]
            .as_str()
            .is_some_and(|c| c.starts_with("sip:201@127.0.0.1")),
        "{sip}"
    );
    // Registered for 300 s: it expires within that, after the snapshot.
    let left = contact["expires_at_ms"].as_i64().unwrap_or(0) - sip["at_ms"].as_i64().unwrap_or(0);
    assert!(left > 0 && left <= 300_000, "{sip}");
    let other = sip["phones"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["extension"] == "202"))
        .expect("account 202");
    assert_eq!(other["contacts"], json!([]), "202 never registered");

    let (status, page) = get("/sip");
    assert_eq!(status, 200);
    assert!(page.contains("1 of 2 registered"), "{page}");
    assert!(page.contains(&source), "{page}");
    assert!(page.contains("Desk Phone"), "{page}");
    assert!(page.contains("not registered"), "202: {page}");
    assert!(page.contains("branch17"), "{page}");
    for secret in ["desk-phone-pass-one", "trunk-secret"] {
        assert!(!page.contains(secret), "{secret} on the page");
        assert!(!text.contains(secret), "{secret} in the API");
    }

    // The phone calls analog 101, which answers: the calls in progress show its SIP
    // leg with the codec SIPp offered and the RTP the media engine counts (an admin:
    // SIP account numbers are not in the extensions table, so other roles see them
    // masked).
    add_user(&gw, "boss1", "admin");
    let admin = Api::login(gw.web_addr(), "boss1", PASSWORD).0;
    let active = || {
        let (status, calls) = admin.get("/api/v1/calls/active");
        assert_eq!(status, 200, "{calls}");
        calls
    };
    let target = crate::sip_calls::sip_addr(&gw);
    let call = crate::sip_calls::sipp(
        "uac_call.xml",
        target,
        port,
        &crate::sip_calls::call_args("101", "201", "desk-phone-pass-one", target)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .spawn()
    .expect("sipp starts");
    let phone = gw.sim.phone(1);
    assert!(
        wait(SOON, || phone.is_ringing()),
        "FXS 1 rings:\n{}",
        gw.log_text()
    );
    phone.off_hook();
    let mut calls = Value::Null;
    let measured = wait(SOON, || {
        calls = active();
        calls["calls"][0]["legs"][0]["mos"].is_f64()
            && calls["calls"][0]["legs"][0]["packets_in"]
                .as_u64()
                .is_some_and(|n| n > 0)
    });
    assert!(measured, "no RTP statistics: {calls}");
    let c = &calls["calls"][0];
    assert_eq!(c["caller"], "201", "{calls}");
    assert_eq!(c["caller_via"], "SIP phone");
    assert_eq!(c["callee_via"], "FXS port 1");
    assert_eq!(c["phase"], "connected");
    let leg = &c["legs"][0];
    assert_eq!(leg["side"], "caller", "{calls}");
    assert_eq!(leg["codec"], "PCMA", "SIPp offers PCMA: {calls}");
    assert!(
        leg["loss_percent"].is_f64() && leg["jitter_ms"].is_f64(),
        "{calls}"
    );
    assert!(calls["rtp_error"].is_null(), "{calls}");
    phone.on_hook();
    crate::sip_calls::wait_sipp(call, "call", &gw);
    assert!(
        wait(SOON, || active()["calls"] == json!([])),
        "the call ended"
    );
}

#[test]
fn sync_page_forces_a_running_agent_with_the_form_and_shows_the_backlog_drain() {
    use crate::harness::{HqDb, HqServer};
    let mut hq = HqServer::new(HqDb::Sqlite);
    hq.add_site("branch-1");
    let creds = hq.add_box("branch-1", "box-1");
    hq.serve();
    let gw = Gateway::start_with(&format!(
        "{DIAL_PLAN}{}",
        hq.box_config(&creds, hq.sync, "")
    ));
    assert!(gw.wait_log("sync agent started", SOON), "{}", gw.log_text());
    add_user(&gw, "tech1", "technician");
    let base = format!("http://{}", gw.web_addr());
    // Redirects are the answer under test: not followed.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(SOON))
        .build()
        .into();
    let mut resp = agent
        .post(&format!("{base}/api/v1/session"))
        .send_json(json!({ "username": "tech1", "password": PASSWORD }))
        .expect("login");
    assert_eq!(resp.status(), 200);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_owned();
    let session: Value =
        serde_json::from_str(&resp.body_mut().read_to_string().expect("body")).expect("json");
    let csrf = session["csrf_token"].as_str().expect("csrf").to_owned();
    let page = |path: &str| {
        let mut r = agent
            .get(&format!("{base}{path}"))
            .header("Cookie", &cookie)
            .call()
            .expect("request");
        assert_eq!(r.status(), 200, "{path}");
        r.body_mut().read_to_string().expect("body")
    };
    let force = |token: &str| {
        agent
            .post(&format!("{base}/sync/force"))
            .header("Cookie", &cookie)
            .send_form([("csrf", token)])
            .expect("force")
    };

    let before = page("/sync");
    assert!(before.contains("running"), "{before}");
    assert!(before.contains("action=\"/sync/force\""), "{before}");
    // A forged token changes nothing.
    assert_eq!(force("forged").status(), 403);
    let r = force(&csrf);
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/sync?forced=1")
    );
    let after = page("/sync?forced=1");
    assert!(after.contains("Sync requested"), "{after}");
    // The user, its audit rows and the login reach HQ: the backlog drains to 0.
    let drained = wait(SOON, || {
        page("/sync").contains("<p class=\"big\">0 records</p>")
    });
    assert!(drained, "{}\n{}", page("/sync"), gw.log_text());
    let forced: Vec<(String, String)> = gw
        .db()
        .prepare("SELECT actor, result FROM audit_log WHERE action = 'force_sync'")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .expect("audit rows");
    assert_eq!(forced, vec![("tech1".to_owned(), "ok".to_owned())]);
}

/// Fills the text field `css` with `text` (clearing what is there).
async fn fill(c: &Client, css: &str, text: &str) {
    let field = c.find(Locator::Css(css)).await.expect("field");
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
}

#[test]
fn tools_page_pings_probes_sip_and_downloads_a_pcap_that_parses() {
    let gw = crate::sip_calls::gateway();
    let base = format!("http://{}", gw.web_addr());
    add_user(&gw, "tech1", "technician");
    let sip = crate::sip_calls::sip_addr(&gw);
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(&driver).await;
        login(&c, &base, "tech1").await;
        wait_path(&c, "/dashboard").await;
        // The nav links the tools page.
        click(&c, "nav a[href=\"/tools\"]").await;
        wait_path(&c, "/tools").await;
        wait_text(&c, "#capture", |t| t.contains("Packet capture")).await;
        shot(&c, "20-tools").await;

        // Ping 127.0.0.1 once with the form: the page shows ping's own output.
        fill(&c, "#ping input[name=host]", "127.0.0.1").await;
        fill(&c, "#ping input[name=count]", "1").await;
        click(&c, "#ping form[action=\"/tools/ping\"] button").await;
        let out = wait_text(&c, "#tool-result", |t| t.contains("Ping result")).await;
        assert!(out.contains("1 packets transmitted, 1 received"), "{out}");
        shot(&c, "21-tools-ping").await;
        // Traceroute from the same form (its own button): the real program's output,
        // or the page says it is not installed.
        click(&c, "#ping button[formaction=\"/tools/traceroute\"]").await;
        let trace = wait_text(&c, "#tool-result", |t| t.contains("Traceroute")).await;
        assert!(
            trace.contains("traceroute -n -q 1 -w 2 -m 20 127.0.0.1")
                || trace.contains("traceroute is not installed on this box"),
            "{trace}"
        );

        // A bad host: the reason on the page, nothing run.
        fill(&c, "#ping input[name=host]", "-f 127.0.0.1").await;
        click(&c, "#ping form[action=\"/tools/ping\"] button").await;
        let err = wait_text(&c, "#tool-result", |t| t.contains("not run")).await;
        assert!(err.contains("is not a host name or IP address"), "{err}");

        // The OPTIONS probe to this test's responder: status and round trip shown.
        let responder = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = responder.local_addr().expect("addr").port();
        let peer = crate::tools::answer_one_options(responder);
        fill(&c, "#sip-options input[name=uri]", &format!("sip:127.0.0.1:{port}")).await;
        click(&c, "#sip-options button").await;
        let probe = wait_text(&c, "#probe-result", |t| t.contains("200")).await;
        assert!(probe.contains("200 OK") && probe.contains("ms"), "{probe}");
        assert!(probe.contains("tools-test-responder"), "{probe}");
        let (from, _) = peer.join().expect("responder");
        assert_eq!(from, sip, "sent from the box's SIP port");
        shot(&c, "22-tools-sip-options").await;

        // A capture through the page's own form data (its CSRF token) with the
        // browser's session: SIP sent to the box meanwhile is in the pcap.
        let poker = std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            std::thread::sleep(Duration::from_millis(800));
            let msg = format!(
                "OPTIONS sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {}:{};branch=z9hG4bKbrowser1\r\n\
                 From: <sip:tester@127.0.0.1>;tag=b1\r\nTo: <sip:{sip}>\r\nCall-ID: browser-capture-1\r\n\
                 CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                "127.0.0.1",
                s.local_addr().expect("addr").port()
            );
            s.send_to(msg.as_bytes(), sip).expect("send");
            let mut buf = [0u8; 2048];
            s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            s.recv_from(&mut buf).is_ok()
        });
        let got = c
            .execute(
                "const f = document.querySelector('#capture form');
                 const body = new URLSearchParams(new FormData(f));
                 body.set('seconds', '3');
                 return fetch(f.action, { method: 'POST', body: body, credentials: 'same-origin' })
                   .then(async r => ({
                     status: r.status,
                     type: r.headers.get('content-type'),
                     disposition: r.headers.get('content-disposition'),
                     bytes: Array.from(new Uint8Array(await r.arrayBuffer())),
                   }));",
                vec![],
            )
            .await
            .expect("capture through the page");
        assert!(poker.join().expect("poker"), "the box answered the OPTIONS");
        assert_eq!(got["status"], 200, "{}", got["type"]);
        assert_eq!(got["type"], "application/vnd.tcpdump.pcap");
        assert!(got["disposition"].as_str().is_some_and(|d| d.contains(".pcap")), "{got}");
        let pcap: Vec<u8> = got["bytes"]
            .as_array()
            .expect("bytes")
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()).expect("a byte"))
            .collect();
        let mut reader = pcap_file::pcap::PcapReader::new(&pcap[..]).expect("the download parses as pcap");
        let mut texts = Vec::new();
        while let Some(p) = reader.next_packet() {
            let ip = p.expect("packet").data.into_owned();
            let ihl = usize::from(ip[0] & 15) * 4;
            texts.push(String::from_utf8_lossy(&ip[ihl + 8..]).into_owned());
        }
        assert!(
            texts.iter().any(|t| t.starts_with("OPTIONS sip:") && t.contains("browser-capture-1")),
            "{texts:?}"
        );
        assert!(
            texts.iter().any(|t| t.starts_with("SIP/2.0 200") && t.contains("browser-capture-1")),
            "the box's answer: {texts:?}"
        );
        shot(&c, "23-tools-after-capture").await;
        c.close().await.expect("close the browser");
    });
}

#[test]
fn provisioning_page_shows_the_claim_qr_and_applies_a_pasted_token_after_confirming() {
    let work = tempfile::tempdir().expect("tempdir");
    let usb = work.path().join("usb");
    std::fs::create_dir(&usb).expect("usb dir");
    let prefix = work.path().join("hq-prov");
    let prov = crate::provision_usb::branch_prov;
    prov(&[
        "key".as_ref(),
        "new".as_ref(),
        "--out".as_ref(),
        prefix.as_os_str(),
    ]);
    let text_file = work.path().join("token.txt");
    prov(&[
        "token".as_ref(),
        "make".as_ref(),
        "--site".as_ref(),
        crate::provision_usb::site_file().as_os_str(),
        "--key".as_ref(),
        prefix.with_extension("key").as_os_str(),
        "--out".as_ref(),
        text_file.as_os_str(),
        "--no-terminal".as_ref(),
    ]);
    let token = std::fs::read_to_string(&text_file)
        .expect("token")
        .trim()
        .to_owned();
    let plan = format!(
        "{DIAL_PLAN}\n[provisioning]\nwatch = [{usb:?}]\nkeys = [{key:?}]\nserial = \"{serial}\"\n",
        key = prefix.with_extension("pub"),
        serial = crate::provision_usb::SERIAL,
    );
    let gw = Gateway::start_with(&plan);
    let base = format!("http://{}", gw.web_addr());
    add_user(&gw, "boss", "admin");
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(&driver).await;
        login(&c, &base, "boss").await;
        wait_path(&c, "/dashboard").await;
        click(&c, "nav a[href=\"/provisioning\"]").await;
        wait_path(&c, "/provisioning").await;
        let state = wait_text(&c, "#state", |t| t.contains("not provisioned")).await;
        assert!(state.contains(crate::provision_usb::SERIAL), "{state}");
        let code = wait_text(&c, "#claim-code", |t| t.len() == 19).await;
        // The claim QR is drawn (inline SVG, sized by the page).
        let svg = c.find(Locator::Css("#claim svg")).await.expect("claim QR");
        let (_, _, w, h) = svg.rectangle().await.expect("size");
        assert!(w >= 100.0 && h >= 100.0, "claim QR {w}x{h}");
        shot(&c, "30-provisioning").await;

        // Paste the token: the confirm step says what it is; nothing applied yet.
        fill(&c, "#token", &token).await;
        click(&c, "#apply form[action=\"/provisioning/token\"] button").await;
        let confirm = wait_text(&c, "#confirm", |t| t.contains("Apply this token?")).await;
        assert!(
            confirm.contains("lyon-02") && confirm.contains("hq.example.com"),
            "{confirm}"
        );
        shot(&c, "31-provisioning-confirm").await;
        assert!(gw
            .db()
            .query_row("SELECT count(*) FROM provisioned_settings", [], |r| r
                .get::<_, i64>(0))
            .is_ok_and(|n| n == 0));
        click(&c, "#confirm button[type=submit]").await;
        let done = wait_text(&c, "#applied", |t| t.contains("applied for site")).await;
        assert!(done.contains("lyon-02"), "{done}");
        shot(&c, "32-provisioning-applied").await;
        let _ = c.close().await;
        assert!(!code.is_empty());
    });
    assert!(gw.wait_log("provisioning bundle applied: branchd restarts", SOON));
}

/// Scrolls the element with id `id` into view (for the screenshot).
async fn scroll_to(c: &Client, id: &str) {
    c.execute(
        "document.getElementById(arguments[0]).scrollIntoView();",
        vec![json!(id)],
    )
    .await
    .expect("scroll");
}

/// Polls until an element matches `css` on the page (reloading it, as the charts are
/// not live), or panics with the page.
async fn wait_element(c: &Client, url: &str, css: &str) {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        c.goto(url).await.expect("goto");
        if c.find(Locator::Css(css)).await.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never on {url}: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The charts with real data from the running daemon, sampled every second: a SIP
/// phone (SIPp, RTP from its pcap) calls analog extension 101, the calls page draws
/// the call's RTP jitter while it is up and after it ended, and the calls per hour
/// from its CDR; the ports page draws port 1's line voltage and loop current (off the
/// hook during the call); the sync page draws the outbox backlog. The API's numbers
/// agree, and an agent gets none of them.
#[test]
fn charts_show_the_running_daemons_calls_lines_and_backlog() {
    use crate::sip_calls::{call_args, free_port, register, sip_addr, sipp, wait_sipp, SIP_PLAN};
    let gw = Gateway::start_charts(&format!("{DIAL_PLAN}\n{SIP_PLAN}"));
    assert!(
        gw.wait_log("sip endpoint listening", SOON),
        "{}",
        gw.log_text()
    );
    let addr = gw.web_addr();
    let base = format!("http://{addr}");
    add_user(&gw, "tech1", "technician");
    add_user(&gw, "agent1", "agent");
    let target = sip_addr(&gw);
    let port = free_port();
    register(&gw, "201", "desk-phone-pass-one", port);
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(&driver).await;
        login(&c, &base, "tech1").await;
        wait_path(&c, "/dashboard").await;

        // The SIP phone calls 101; the analog phone answers.
        let call = sipp(
            "uac_call.xml",
            target,
            port,
            &call_args("101", "201", "desk-phone-pass-one", target)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .spawn()
        .expect("sipp starts");
        let phone = gw.sim.phone(1);
        assert!(
            wait(SOON, || phone.is_ringing()),
            "FXS 1 rings:\n{}",
            gw.log_text()
        );
        phone.off_hook();
        // RTP flows for about 4 s (then SIPp hangs up): the chart of the call in
        // progress once it has a few samples.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        c.goto(&format!("{base}/calls")).await.expect("goto");
        let active = c.source().await.expect("source");
        assert!(active.contains("in progress</span>"), "{active}");
        shot(&c, "40-charts-calls-active").await;
        wait_sipp(call, "call (SIPp hangs up)", &gw);
        phone.on_hook();
        // Left open, the page's chart follows the call to its end without a reload:
        // the section fetches the page again at its sampling interval (app.js).
        let live = async {
            while c
                .find(Locator::Css("#call-quality span.pill:not(.busy)"))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), live)
            .await
            .expect("the open calls page shows the call ended");

        // After the call: its trace is kept, and its CDR is in the calls per hour.
        wait_element(&c, &format!("{base}/calls"), "#calls-per-hour rect.bar").await;
        // The trace ends at the next sample after the call (a second here).
        wait_element(
            &c,
            &format!("{base}/calls"),
            "#call-quality span.pill:not(.busy)",
        )
        .await;
        let page = c.source().await.expect("source");
        assert!(page.contains("Calls from the call records: 1,"), "{page}");
        assert!(page.contains("ended "), "{page}");
        assert!(page.contains("from the caller (SIP phone)"), "{page}");
        c.find(Locator::Css("#call-quality svg.chart polyline"))
            .await
            .expect("the call's jitter drawn as a line");
        shot(&c, "41-charts-calls").await;
        scroll_to(&c, "calls-per-hour").await;
        shot(&c, "42-charts-calls-per-hour").await;
        let (api, _) = Api::login(addr, "tech1", PASSWORD);
        let (status, quality) = api.get("/api/v1/charts/call-quality");
        assert_eq!(status, 200, "{quality}");
        let traced = &quality["calls"][0];
        let id = traced["call_id"].as_str().expect("call id");
        assert!(page.contains(&format!("RTP jitter, call {id}")), "{page}");
        assert!(traced["ended_at_ms"].is_i64(), "{traced}");
        let samples = traced["samples"].as_array().expect("samples");
        assert!(
            samples.iter().any(|s| s["caller"]["jitter_ms"].is_f64()),
            "RTP from the SIP phone sampled: {traced}"
        );
        let (_, per_hour) = api.get("/api/v1/charts/calls-per-hour");
        assert_eq!(per_hour["timezone"], "UTC", "no [telephony] time_zone");
        let answered: u64 = per_hour["hours"]
            .as_array()
            .expect("hours")
            .iter()
            .filter_map(|h| h["answered"].as_u64())
            .sum();
        assert_eq!(answered, 1, "{per_hour}");

        // Ports: port 1's readings, on and off the hook.
        wait_element(&c, &format!("{base}/ports"), "#line-history polyline.s0").await;
        scroll_to(&c, "line-history").await;
        shot(&c, "43-charts-ports").await;
        let (_, lines) = api.get("/api/v1/charts/line");
        let port1 = lines["ports"][0]["samples"].as_array().expect("samples");
        assert!(port1.len() >= 2, "{lines}");
        assert!(
            port1
                .iter()
                .any(|s| s["microamps"].as_u64() >= Some(10_000)),
            "a reading off the hook: {lines}"
        );
        assert!(
            port1.iter().any(|s| s["microamps"].as_u64() < Some(10_000)),
            "a reading on the hook: {lines}"
        );

        // Sync: the outbox (users, audit rows, the CDR; no HQ configured) over time.
        wait_element(&c, &format!("{base}/sync"), "#backlog-history polyline").await;
        scroll_to(&c, "backlog-history").await;
        shot(&c, "44-charts-sync").await;
        let (_, backlog) = api.get("/api/v1/charts/sync-backlog");
        let last = backlog["samples"]
            .as_array()
            .and_then(|s| s.last())
            .cloned()
            .unwrap_or_default();
        assert!(last["depth"].as_i64() > Some(0), "{backlog}");

        // An agent gets none of the charts.
        let (agent, _) = Api::login(addr, "agent1", PASSWORD);
        for path in [
            "/api/v1/charts/line",
            "/api/v1/charts/call-quality",
            "/api/v1/charts/calls-per-hour",
            "/api/v1/charts/sync-backlog",
        ] {
            assert_eq!(agent.get(path).0, 403, "{path}");
        }
        c.close().await.expect("close");
    });
}

/// Runs an async WebDriver script: `done` is its callback (`arguments[0]`).
async fn run_async(c: &Client, script: &str) -> Value {
    c.execute_async(script, vec![]).await.expect("script runs")
}

/// Recordings in the browser: 101 (policy `always`) calls 102 and they talk; a
/// quality inspector's calls page shows the call with an `<audio>` player whose source
/// is the recording, Chromium loads it (a duration as long as the call) and seeks in
/// it through the API's range requests, and the playback is audited; an agent on 101
/// gets no calls page and the API refuses them the audio; a technician sees the call
/// without any word of its recording.
#[test]
fn a_quality_inspector_plays_a_recorded_call_in_the_browser_and_an_agent_gets_no_player() {
    let plan = format!(
        "{DIAL_PLAN}\n[recording]\npolicies = {{ \"101\" = \"always\" }}\nmin_free_mb = 16\n"
    );
    let gw = Gateway::start_with(&plan);
    let base = format!("http://{}", gw.web_addr());
    add_user(&gw, "qa1", "quality_inspector");
    add_user(&gw, "agent1", "agent");
    add_user(&gw, "tech1", "technician");
    let admin = crate::api_client::create_admin(&gw, "boss1", PASSWORD);
    let (status, users) = admin.get("/api/v1/users?limit=100");
    assert_eq!(status, 200, "{users}");
    let agent_id = users["items"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["username"] == "agent1")
        .expect("agent1")["id"]
        .clone();
    let (status, body) = admin.patch(
        &format!("/api/v1/users/{agent_id}"),
        json!({ "extension": "101" }),
    );
    assert_eq!(status, 200, "{body}");

    // 101 calls 102; both talk for 2 s.
    let (a, b) = (gw.sim.phone(1), gw.sim.phone(2));
    a.off_hook();
    crate::harness::wait_tone(&gw.sim, 1, 350, 440).expect("dial tone");
    a.dial("102");
    assert!(wait(SOON, || b.is_ringing()), "102 rings");
    b.off_hook();
    assert!(wait(SOON, || a.tone().is_none()), "answered");
    a.inject_tone(1000.0, 8000);
    b.inject_tone(2000.0, 8000);
    assert!(gw.wait_log("recording started", SOON), "{}", gw.log_text());
    std::thread::sleep(Duration::from_millis(2000));
    b.on_hook();
    a.on_hook();
    let cdrs = gw.wait_cdrs(1);
    assert!(
        gw.wait_log("recording registered", SOON),
        "{}",
        gw.log_text()
    );
    let (rec_id, size, duration_ms): (i64, i64, i64) = gw
        .db()
        .query_row(
            "SELECT id, size, duration_ms FROM recordings WHERE call_id = ?1",
            [&cdrs[0].call_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the call's recording");
    assert!(duration_ms >= 1500, "{duration_ms} ms recorded");

    // The API from outside: a seek is a 206 with the bytes asked for.
    let (qa, _) = crate::api_client::Api::login(gw.web_addr(), "qa1", PASSWORD);
    let mut resp = crate::api_client::agent()
        .get(&format!("{base}/api/v1/recordings/{rec_id}/audio"))
        .header("Cookie", qa.cookie())
        .header("Range", "bytes=44-1043")
        .call()
        .expect("range request");
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok()),
        Some(format!("bytes 44-1043/{size}").as_str())
    );
    let part = resp.body_mut().read_to_vec().expect("body");
    assert_eq!(part.len(), 1000);
    let (status, list) = qa.get(&format!(
        "/api/v1/recordings?since=0&call_id={}",
        cdrs[0].call_id
    ));
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"][0]["id"], rec_id, "{list}");
    assert_eq!(list["items"][0]["may_listen"], true);
    assert_eq!(list["items"][0]["may_download"], false);

    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(&driver).await;
        login(&c, &base, "qa1").await;
        wait_path(&c, "/dashboard").await;
        c.goto(&format!("{base}/calls")).await.expect("goto");
        let cdrs_text = wait_text(&c, "#cdrs", |t| t.contains("answered")).await;
        assert!(cdrs_text.contains("recorded"), "{cdrs_text}");
        let page = c.source().await.expect("source");
        let src = format!("/api/v1/recordings/{rec_id}/audio");
        assert!(page.contains(&format!("src=\"{src}\"")), "{page}");
        assert!(page.contains("preload=\"none\""), "{page}");
        // No download link: the quality inspector may not take recordings off the box.
        assert!(!page.contains("download=true"), "{page}");
        // Chromium loads the recording through the player and knows its length.
        let loaded = run_async(
            &c,
            "const done = arguments[arguments.length - 1];
             const a = document.querySelector('#cdrs audio');
             if (!a) { done({ error: 'no audio element' }); return; }
             a.addEventListener('loadedmetadata', () => done({ duration: a.duration }));
             a.addEventListener('error', () => done({ error: 'media error ' + (a.error && a.error.code) }));
             a.load();",
        )
        .await;
        let duration = loaded["duration"].as_f64().unwrap_or_else(|| panic!("{loaded}"));
        let expected = duration_ms as f64 / 1000.0;
        assert!(
            (duration - expected).abs() < 0.1,
            "the browser's duration {duration} s, the recording's {expected} s"
        );
        // Seek to the middle: the browser asks for a range and plays from there.
        let seeked = run_async(
            &c,
            "const done = arguments[arguments.length - 1];
             const a = document.querySelector('#cdrs audio');
             a.muted = true;
             a.addEventListener('seeked', () => done({ at: a.currentTime, ready: a.readyState }));
             a.addEventListener('error', () => done({ error: 'media error ' + (a.error && a.error.code) }));
             a.currentTime = a.duration / 2;",
        )
        .await;
        let at = seeked["at"].as_f64().unwrap_or_else(|| panic!("{seeked}"));
        assert!((at - expected / 2.0).abs() < 0.2, "{seeked}");
        shot(&c, "30-calls-recording-player").await;
        // The playback is in the audit log, once, as qa1's listen of the call.
        let listens: Vec<(String, String)> = {
            let db = gw.db();
            let mut stmt = db
                .prepare(
                    "SELECT actor, target FROM audit_log
                      WHERE resource = 'recordings' AND action = 'listen' AND result = 'ok'",
                )
                .expect("query");
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect())
                .expect("rows")
        };
        assert!(
            listens
                .iter()
                .any(|(who, call)| who == "qa1" && call == &cdrs[0].call_id),
            "{listens:?}"
        );

        // The agent on 101: no calls page (diagnostics.view or recordings.view), no
        // player anywhere.
        click(&c, "form.logout button").await;
        wait_path(&c, "/login?bye=1").await;
        login(&c, &base, "agent1").await;
        wait_path(&c, "/dashboard").await;
        c.goto(&format!("{base}/calls")).await.expect("goto");
        let text = wait_text(&c, "main", |t| t.contains("Access denied")).await;
        assert!(text.contains("diagnostics.view"), "{text}");
        let page = c.source().await.expect("source");
        assert!(!page.contains("<audio"), "{page}");
        assert!(!page.contains("/api/v1/recordings/"), "{page}");
        shot(&c, "31-calls-agent-no-player").await;
        // The technician (diagnostics.view, no recordings): the call without a word of
        // its recording.
        click(&c, "form.logout button").await;
        wait_path(&c, "/login?bye=1").await;
        login(&c, &base, "tech1").await;
        wait_path(&c, "/dashboard").await;
        c.goto(&format!("{base}/calls")).await.expect("goto");
        let text = wait_text(&c, "#cdrs", |t| !t.is_empty()).await;
        assert!(!text.contains("recorded"), "{text}");
        let page = c.source().await.expect("source");
        assert!(!page.contains("<audio"), "{page}");
        c.close().await.expect("close the browser");
    });
    let (agent, _) = crate::api_client::Api::login(gw.web_addr(), "agent1", PASSWORD);
    let (status, _) = agent.get_text(&format!("/api/v1/recordings/{rec_id}/audio"));
    assert_eq!(status, 403);
}

/// The ports page's loopback test in the browser: the technician runs it on an idle
/// phone port with the form and sees it pass with its measurements on the port's
/// card; on a port whose SLIC shut down (over-current) it fails saying why.
#[test]
fn technician_runs_a_loopback_test_from_the_ports_page() {
    let gw = Gateway::start();
    let base = format!("http://{}", gw.web_addr());
    add_user(&gw, "tech1", "technician");
    gw.sim.inject_fault(2, line_proto::FaultKind::OverCurrent);
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(&driver).await;
        login(&c, &base, "tech1").await;
        wait_path(&c, "/dashboard").await;
        c.goto(&format!("{base}/ports")).await.expect("goto");
        click(&c, "form[action=\"/ports/1/loopback-test\"] button").await;
        wait_path(&c, "/ports?looped=1").await;
        let notice = wait_text(&c, "p.notice", |t| t.contains("Loopback test")).await;
        assert_eq!(notice, "Loopback test of port 1 passed.");
        let card = wait_text(&c, "#port-1", |t| t.contains("signal to noise")).await;
        assert!(card.contains("(sent -10.0 dBm0)"), "{card}");
        assert!(card.contains("ms round trip"), "{card}");
        c.execute(
            "document.getElementById('port-1').scrollIntoView();",
            vec![],
        )
        .await
        .expect("scroll");
        shot(&c, "32-ports-loopback-passed").await;
        assert!(
            !gw.sim.phone(1).is_looped_back(),
            "the loopback is off again"
        );

        click(&c, "form[action=\"/ports/2/loopback-test\"] button").await;
        wait_path(&c, "/ports?looped=2").await;
        let notice = wait_text(&c, "p.notice", |t| t.contains("Loopback test")).await;
        assert!(
            notice.starts_with("Loopback test of port 2 failed: audio back: no audio came back"),
            "{notice}"
        );
        c.execute(
            "document.getElementById('port-2').scrollIntoView();",
            vec![],
        )
        .await
        .expect("scroll");
        shot(&c, "33-ports-loopback-failed").await;
        c.close().await.expect("close the browser");
    });
}
