//! Headless Chromium for the browser tests and the web benchmark: Debian's `chromium`
//! driven through `chromedriver` (WebDriver) with `fantoccini`, and the login form.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::harness::{wait, SOON};

/// Debian's chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromium-driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// `chromedriver` on a free loopback port, killed on drop.
pub struct Driver {
    child: Child,
    /// The WebDriver endpoint.
    pub url: String,
}

impl Driver {
    /// Starts it; panics when chromium or chromedriver is missing.
    pub fn start() -> Driver {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: `apt-get install chromium chromium-driver` (as .ci/run does)"
            );
        }
        for _attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let mut child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts");
            let url = format!("http://127.0.0.1:{port}");
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(2)))
                .build()
                .into();
            let ready = wait(SOON, || {
                matches!(child.try_wait(), Ok(Some(_)))
                    || agent
                        .get(&format!("{url}/status"))
                        .call()
                        .is_ok_and(|r| r.status() == 200)
            });
            if ready && child.try_wait().ok().flatten().is_none() {
                return Driver { child, url };
            }
            // The port was taken meanwhile (or the driver died): try another.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("chromedriver did not start on a free port");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session (1280x900) through `driver`.
pub async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session through chromedriver")
}

/// Logs `username` in with the login form (from `/dashboard`, which sends a visitor
/// without a session to `/login`).
pub async fn login(c: &Client, base: &str, username: &str, password: &str) {
    c.goto(&format!("{base}/dashboard")).await.expect("goto");
    let url = c.current_url().await.expect("url");
    assert_eq!(url.path(), "/login", "not logged in: {url}");
    c.find(Locator::Css("#username"))
        .await
        .expect("username field")
        .send_keys(username)
        .await
        .expect("type");
    c.find(Locator::Css("#password"))
        .await
        .expect("password field")
        .send_keys(password)
        .await
        .expect("type");
    c.find(Locator::Css("form.stack button[type=submit]"))
        .await
        .expect("login button")
        .click()
        .await
        .expect("click");
}
