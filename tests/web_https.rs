//! The web page over HTTPS with the device certificate, on the real binaries: a box
//! with `[web] https = "auto"` serves plain HTTP until it enrolls with the real
//! `branch-hq` (enroll_e2e.rs's rig), then, without a restart, HTTPS with the
//! certificate HQ signed (checked against HQ's CA), `Secure` cookies, and plain HTTP
//! only redirects. A box whose certificate file is broken stays reachable over plain
//! HTTP, logs the error and shows an alarm.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::api_client::{add_user, create_admin};
use crate::enroll_e2e::Rig;
use crate::harness::{wait, Gateway, DIAL_PLAN, SOON};
use crate::provision_usb::{drop_bundle, sha256_of, wait_status, SERIAL};

/// Accepts the server's certificate only when it chains to HQ's CA as a device
/// certificate (what HQ itself checks: clientAuth); keeps what the server presented.
/// The device certificate names the serial, not 127.0.0.1, so the name is not checked.
#[derive(Debug)]
struct DeviceCertVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    presented: Mutex<Vec<CertificateDer<'static>>>,
}

impl DeviceCertVerifier {
    fn trusting(ca_pem: &Path) -> Arc<DeviceCertVerifier> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca_pem).expect("HQ CA");
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(c.expect("CA PEM")).expect("CA");
        }
        let chain = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .expect("verifier");
        Arc::new(DeviceCertVerifier {
            chain,
            provider,
            presented: Mutex::new(Vec::new()),
        })
    }
}

impl ServerCertVerifier for DeviceCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.chain
            .verify_client_cert(end_entity, intermediates, now)?;
        self.presented
            .lock()
            .expect("lock")
            .push(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An HTTP/1.1 answer: status, headers (lowercase names) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn parse(raw: &[u8]) -> Answer {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Answer {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `Set-Cookie` header for `name`.
    fn set_cookie(&self, name: &str) -> String {
        self.header("set-cookie")
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} cookie in {self:?}"))
            .to_owned()
    }
}

fn request_text(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    text
}

fn plain(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(SOON)).expect("timeout");
    tcp.write_all(request_text(method, path, headers, "").as_bytes())
        .expect("send");
    let mut raw = Vec::new();
    let _ = tcp.read_to_end(&mut raw);
    Answer::parse(&raw)
}

/// One request over TLS, the server's certificate checked by `verifier`.
fn tls(
    addr: SocketAddr,
    verifier: &Arc<DeviceCertVerifier>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Answer> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .dangerous()
    .with_custom_certificate_verifier(verifier.clone())
    .with_no_client_auth();
    let name = ServerName::try_from(SERIAL).expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(SOON))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    stream.write_all(request_text(method, path, headers, body).as_bytes())?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // The server may close without close_notify: what arrived is the answer.
        Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e),
    }
    Ok(Answer::parse(&raw))
}

fn first_cert(pem_file: &Path) -> CertificateDer<'static> {
    let pem = std::fs::read(pem_file).expect("certificate file");
    let cert = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .expect("a certificate")
        .expect("PEM");
    cert.into_owned()
}

#[test]
fn after_enrollment_the_page_is_https_with_the_device_certificate() {
    let Rig {
        work: _work,
        usb,
        hq,
        mut gw,
        cert,
        bundles,
        ..
    } = Rig::with_web("", "", true);
    let hq_ca = hq.tls_dir().join("ca.pem");

    // Before enrollment: plain HTTP, cookies without Secure, no TLS.
    let addr = gw.web_addr();
    let login = plain(addr, "GET", "/login", &[]);
    assert_eq!(login.status, 200, "{login:?}");
    assert!(
        !login.set_cookie("bl_login_csrf").contains("Secure"),
        "{login:?}"
    );
    let verifier = DeviceCertVerifier::trusting(&hq_ca);
    assert!(tls(addr, &verifier, "GET", "/login", &[], "").is_err());

    // Enrollment (the applied bundle restarts branchd; it enrolls after that start).
    let bundle = bundles.make("https.blp");
    let ready_before = gw.log_count("branchd ready");
    drop_bundle(&usb, &bundle);
    wait_status(&usb, &sha256_of(&bundle), "applied", &gw);
    gw.follow_self_restart(ready_before);
    assert!(
        wait(SOON * 3, || cert.exists()),
        "no certificate\nbox:\n{}\nHQ:\n{}",
        gw.log_text(),
        hq.log_text()
    );
    assert!(gw.wait_log("enrolled with HQ", SOON), "{}", gw.log_text());
    // The same process picks the certificate up (no restart since enrollment).
    let ready = gw.log_count("branchd ready");
    assert!(
        gw.wait_log(
            "web page served over HTTPS with the device certificate",
            SOON
        ),
        "{}",
        gw.log_text()
    );
    assert_eq!(gw.log_count("branchd ready"), ready, "no restart");
    let addr = gw.latest_web_addr();

    // HTTPS with exactly the certificate HQ signed, chained to HQ's CA.
    let verifier = DeviceCertVerifier::trusting(&hq_ca);
    let login = tls(addr, &verifier, "GET", "/login", &[], "").expect("HTTPS");
    assert_eq!(login.status, 200, "{login:?}");
    assert_eq!(
        verifier.presented.lock().expect("lock")[0],
        first_cert(&cert),
        "the device certificate"
    );
    let csrf_cookie = login.set_cookie("bl_login_csrf");
    assert!(csrf_cookie.contains("; Secure"), "{csrf_cookie}");
    // A client that trusts another CA (the box's own certificate as a "CA") refuses it.
    let stranger = DeviceCertVerifier::trusting(&cert);
    assert!(tls(addr, &stranger, "GET", "/login", &[], "").is_err());

    // Logging in over HTTPS: the session cookie is Secure (and still HttpOnly, Strict).
    add_user(&gw, "tech", "admin", "a-Good-passphrase-42");
    let session = tls(
        addr,
        &verifier,
        "POST",
        "/api/v1/session",
        &[("Content-Type", "application/json")],
        r#"{"username":"tech","password":"a-Good-passphrase-42"}"#,
    )
    .expect("login");
    assert_eq!(session.status, 200, "{session:?}");
    let cookie = session.set_cookie("bl_session");
    for attribute in ["; Secure", "; HttpOnly", "; SameSite=Strict"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    let token = cookie.split(';').next().expect("name=value").to_owned();

    // The system page says how it is served; the dashboard has no HTTPS alarm.
    let system = tls(addr, &verifier, "GET", "/system", &[("Cookie", &token)], "").expect("page");
    assert_eq!(system.status, 200, "{system:?}");
    assert!(
        system.body.contains("HTTPS with the device certificate") && system.body.contains(SERIAL),
        "{}",
        system.body
    );
    let dashboard = tls(
        addr,
        &verifier,
        "GET",
        "/dashboard",
        &[("Cookie", &token)],
        "",
    )
    .expect("page");
    assert!(
        !dashboard.body.contains("HTTPS is off"),
        "{}",
        dashboard.body
    );

    // Plain HTTP only redirects now, to the same port and path; no page, no cookie.
    let redirect = plain(addr, "GET", "/dashboard?x=1", &[("Cookie", &token)]);
    assert_eq!(redirect.status, 307, "{redirect:?}");
    assert_eq!(
        redirect.header("location"),
        [format!("https://127.0.0.1:{}/dashboard?x=1", addr.port()).as_str()]
    );
    assert!(redirect.header("set-cookie").is_empty(), "{redirect:?}");
    let api = plain(addr, "GET", "/api/v1/status", &[("Cookie", &token)]);
    assert_eq!(api.status, 307, "{api:?}");
}

#[test]
fn a_broken_device_certificate_keeps_the_page_on_plain_http_with_an_alarm() {
    let creds = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = (
        creds.path().join("ca.pem"),
        creds.path().join("box.pem"),
        creds.path().join("box.key"),
    );
    std::fs::write(&ca, "not a CA").expect("ca");
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\ntruncated\n").expect("cert");
    std::fs::write(&key, "not a key").expect("key");
    let plan = format!(
        "{DIAL_PLAN}\n[hq]\nurl = \"https://127.0.0.1:9\"\nca_cert = {ca:?}\nclient_cert = {cert:?}\n\
         client_key = {key:?}\nbox_id = \"{SERIAL}\"\n"
    );
    let gw = Gateway::start_https(&plan);
    let addr = gw.web_addr();
    assert!(
        gw.wait_log("the device certificate does not load", SOON),
        "{}",
        gw.log_text()
    );
    // Reachable over plain HTTP, logged in as ever, with the alarm on the dashboard.
    let login = plain(addr, "GET", "/login", &[]);
    assert_eq!(login.status, 200, "{login:?}");
    let admin = create_admin(&gw, "tech", "a-Good-passphrase-42");
    let (status, page) = admin.get_text("/dashboard");
    assert_eq!(status, 200);
    assert!(page.contains("HTTPS is off"), "{page}");
    assert!(page.contains("box.pem"), "{page}");
    let (_, system) = admin.get_text("/system");
    assert!(system.contains("plain HTTP"), "{system}");
    // Still up: not a crash loop.
    std::thread::sleep(std::time::Duration::from_secs(6));
    assert_eq!(gw.log_count("branchd ready"), 1, "{}", gw.log_text());
    assert_eq!(
        gw.log_count("the device certificate does not load"),
        1,
        "logged once, not at every look: {}",
        gw.log_text()
    );
    assert_eq!(plain(addr, "GET", "/login", &[]).status, 200);
}
