//! A logged-in client of `branchd`'s JSON API (`/api/v1`) for the system tests: the
//! session cookie and CSRF token kept by hand, as a browser would.

use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;

use serde_json::{json, Value};

use crate::harness::{bin, command, Gateway, SOON};

/// Makes an admin with `branchd user-add` (the console path, while the daemon runs)
/// and logs in as it.
pub fn create_admin(gw: &Gateway, username: &str, password: &str) -> Api {
    add_user(gw, username, "admin", password);
    Api::login(gw.web_addr(), username, password).0
}

/// Adds a user with `role` from the console (`branchd user-add`), password on stdin.
pub fn add_user(gw: &Gateway, username: &str, role: &str, password: &str) {
    let mut child = command(bin("branchd"))
        .arg("--config")
        .arg(gw.config_path())
        .args(["user-add", "--username", username, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("branchd user-add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("password on stdin");
    let out = child.wait_with_output().expect("user-add exits");
    assert!(
        out.status.success(),
        "user-add {username}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A logged-in HTTP client: cookie and CSRF token kept by hand.
pub struct Api {
    agent: ureq::Agent,
    base: String,
    cookie: String,
    csrf: String,
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(SOON))
        .build()
        .into()
}

pub fn body_json(resp: &mut ureq::http::Response<ureq::Body>) -> Value {
    let text = resp.body_mut().read_to_string().expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

impl Api {
    pub fn login(addr: SocketAddr, username: &str, password: &str) -> (Api, Value) {
        let agent = agent();
        let base = format!("http://{addr}");
        let mut resp = agent
            .post(&format!("{base}/api/v1/session"))
            .send_json(json!({ "username": username, "password": password }))
            .expect("login request");
        assert_eq!(resp.status(), 200, "login {username}");
        let cookie = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("session cookie")
            .to_owned();
        let body = body_json(&mut resp);
        let csrf = body["csrf_token"].as_str().expect("csrf").to_owned();
        (
            Api {
                agent,
                base,
                cookie,
                csrf,
            },
            body,
        )
    }

    /// The session cookie (`bl_session=...`), for clients that speak HTTP by hand.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// The base URL (`http://127.0.0.1:port`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The session's CSRF token, for clients that speak HTTP by hand.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let (status, text) = self.get_text(path);
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, json)
    }

    /// GETs `path` (a page or an API route): the status and the body as text.
    pub fn get_text(&self, path: &str) -> (u16, String) {
        let mut resp = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .call()
            .expect("request");
        let text = resp.body_mut().read_to_string().expect("body");
        (resp.status().as_u16(), text)
    }

    pub fn delete(&self, path: &str) -> u16 {
        self.agent
            .delete(&format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .header("X-CSRF-Token", &self.csrf)
            .call()
            .expect("request")
            .status()
            .as_u16()
    }

    /// Sends `body` as JSON with the CSRF token (PATCH, PUT or POST); the status and
    /// the JSON answer (`null` when the answer has no body).
    fn send_json(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "PATCH" => self.agent.patch(&url),
            "PUT" => self.agent.put(&url),
            _ => self.agent.post(&url),
        };
        let mut resp = request
            .header("Cookie", &self.cookie)
            .header("X-CSRF-Token", &self.csrf)
            .send_json(body)
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// PATCHes `body` with the CSRF token; the status and the JSON answer.
    pub fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.send_json("PATCH", path, body)
    }

    /// PUTs `body` with the CSRF token; the status and the JSON answer.
    pub fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send_json("PUT", path, body)
    }

    /// POSTs `body` with the CSRF token; the status and the JSON answer (`null` when
    /// the answer has no body).
    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send_json("POST", path, body)
    }

    /// POSTs a `multipart/form-data` body of `(name, file name, bytes)` parts with the
    /// CSRF token; the status and the JSON answer (`null` when not JSON).
    pub fn post_multipart(&self, path: &str, parts: &[(&str, &str, &[u8])]) -> (u16, Value) {
        let boundary = "XbranchlineTESTboundary7";
        let mut body = Vec::new();
        for (name, file, bytes) in parts {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let mut resp = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .header("X-CSRF-Token", &self.csrf)
            .header(
                "Content-Type",
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .send(&body[..])
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POSTs `text` as CSV with the CSRF token; the status and the JSON answer.
    pub fn post_csv(&self, path: &str, text: &str) -> (u16, Value) {
        let mut resp = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .header("X-CSRF-Token", &self.csrf)
            .header("Content-Type", "text/csv")
            .send(text)
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}
