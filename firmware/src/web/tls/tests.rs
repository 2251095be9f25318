//! HTTPS of the web listener over real sockets: certificate files made by a test CA
//! the way HQ signs device certificates (CN = serial, clientAuth), a TLS client that
//! verifies the chain against that CA, and plain HTTP before, after and around it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::*;

const POLL: Duration = Duration::from_millis(50);
const SERIAL: &str = "BL-TEST-0001";

/// A CA as HQ's: signs device certificates.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let der = params.self_signed(&key).unwrap().der().clone();
        Ca { params, key, der }
    }

    /// A device certificate and its key (PEM), as HQ issues them.
    fn device(&self, serial: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, serial);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn hq_in(dir: &Path) -> HqConfig {
    HqConfig {
        url: "https://127.0.0.1:9".into(),
        ca_cert: dir.join("ca.pem"),
        client_cert: dir.join("box.pem"),
        client_key: dir.join("box.key"),
        box_id: SERIAL.into(),
        batch_records: 500,
        long_poll: Duration::from_secs(25),
        request_timeout: Duration::from_secs(30),
        upload_interval: Duration::from_secs(30),
        upload_bandwidth_kbps: 0,
        probe_interval: Duration::from_secs(10),
        renew_at_percent: 67,
    }
}

/// Writes the certificate and key as enrollment does (replacing the files).
fn install(hq: &HqConfig, (cert, key): &(String, String)) {
    for (path, text) in [(&hq.client_key, key), (&hq.client_cert, cert)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
}

#[test]
fn the_watch_follows_enrollment_breakage_renewal_and_removal() {
    let dir = tempfile::tempdir().unwrap();
    let hq = hq_in(dir.path());
    let ca = Ca::new("HQ CA");
    let mut watch = CertWatch::new(hq.clone());

    // Not enrolled: plain HTTP, no alarm.
    watch.check();
    assert!(!watch.status().https && watch.status().error.is_none());
    assert!(watch.config().is_none() && watch.status().alarm().is_none());
    assert!(!watch.check(), "nothing changed");

    // A broken certificate: plain HTTP with an alarm naming the file.
    std::fs::write(&hq.client_cert, "not a certificate").unwrap();
    std::fs::write(&hq.client_key, "not a key").unwrap();
    assert!(watch.check());
    assert!(!watch.status().https && watch.config().is_none());
    let alarm = watch.status().alarm().expect("alarm");
    assert!(
        alarm.contains("box.pem") && alarm.contains("plain HTTP"),
        "{alarm}"
    );

    // A key that does not go with the certificate: still plain HTTP, alarm.
    let (cert, _) = ca.device(SERIAL);
    let (_, other_key) = ca.device(SERIAL);
    install(&hq, &(cert, other_key));
    watch.check();
    assert!(watch.config().is_none());
    let error = watch.status().error.clone().expect("error");
    assert!(error.contains("does not go with"), "{error}");

    // Enrolled: HTTPS with the certificate, the alarm gone.
    install(&hq, &ca.device(SERIAL));
    assert!(watch.check());
    let status = watch.status().clone();
    assert!(status.https && status.error.is_none(), "{status:?}");
    assert_eq!(status.certificate.as_ref().unwrap().subject, SERIAL);
    let first = watch.config().expect("TLS config");

    // A renewal that left a broken file: the previous certificate stays, alarm.
    std::fs::write(&hq.client_cert, "garbage").unwrap();
    assert!(watch.check());
    assert!(watch.status().https && watch.status().alarm().is_some());
    assert!(Arc::ptr_eq(&first, &watch.config().unwrap()));

    // The renewal completes: the new certificate, no alarm.
    install(&hq, &ca.device(SERIAL));
    assert!(watch.check());
    assert!(watch.status().https && watch.status().error.is_none());
    assert!(!Arc::ptr_eq(&first, &watch.config().unwrap()));

    // Removed (factory reset): plain HTTP again, no alarm.
    std::fs::remove_file(&hq.client_cert).unwrap();
    assert!(watch.check());
    assert!(!watch.status().https && watch.status().alarm().is_none());
    assert!(watch.config().is_none());
}

#[test]
fn the_redirect_keeps_host_path_and_this_port() {
    let request = |host: Option<&str>, uri: &str| {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).unwrap()
    };
    let location = |r: &axum::response::Response| {
        r.headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let r = redirect_to_https(&request(Some("192.0.2.7:8080"), "/calls?page=2"), 8080);
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        location(&r).as_deref(),
        Some("https://192.0.2.7:8080/calls?page=2")
    );
    // Reached through another port (a forward): the listener's port, not the Host's.
    let r = redirect_to_https(&request(Some("box.lan"), "/"), 8443);
    assert_eq!(location(&r).as_deref(), Some("https://box.lan:8443/"));
    let r = redirect_to_https(&request(Some("[2001:db8::1]:80"), "/x"), 443);
    assert_eq!(location(&r).as_deref(), Some("https://[2001:db8::1]/x"));
    // No usable Host: a plain refusal, no Location.
    for host in [None, Some("a b"), Some("evil.example/path")] {
        let r = redirect_to_https(&request(host, "/"), 443);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{host:?}");
        assert!(location(&r).is_none(), "{host:?}");
    }
}

/// Accepts a server certificate only when it chains to `ca` as a device certificate
/// (clientAuth, as HQ checks it); records what the server presented.
#[derive(Debug)]
struct DeviceCertVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    presented: Mutex<Vec<CertificateDer<'static>>>,
}

impl DeviceCertVerifier {
    fn new(ca: &Ca) -> Arc<DeviceCertVerifier> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
        let chain = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
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
            .unwrap()
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

/// One HTTP/1.1 GET on `io`: the whole answer as text.
async fn get_on(mut io: impl AsyncRead + AsyncWrite + Unpin, path: &str) -> String {
    io.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn plain_get(addr: SocketAddr, path: &str) -> String {
    get_on(tokio::net::TcpStream::connect(addr).await.unwrap(), path).await
}

async fn tls_get(
    addr: SocketAddr,
    verifier: Arc<DeviceCertVerifier>,
    path: &str,
) -> Result<String, std::io::Error> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(verifier)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(SERIAL).unwrap(), tcp)
        .await?;
    Ok(get_on(tls, path).await)
}

/// A site that answers how it was reached: `tls` or `plain`, and the peer address.
fn echo_site() -> Router {
    Router::new().route(
        "/who",
        get(
            |Secure(secure): Secure, ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                format!(
                    "{} from {}",
                    if secure { "tls" } else { "plain" },
                    peer.ip()
                )
            },
        ),
    )
}

async fn start(hq: &HqConfig) -> (SocketAddr, HttpsHandle, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = HttpsHandle::default();
    let stop = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        echo_site(),
        CertWatch::new(hq.clone()).with_poll(POLL),
        handle.clone(),
        stop.clone().cancelled_owned(),
    ));
    (addr, handle, stop)
}

async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if cond() {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_until_enrolled_then_https_with_the_device_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let hq = hq_in(dir.path());
    let ca = Ca::new("HQ CA");
    let (addr, handle, stop) = start(&hq).await;

    // Before enrollment: the site over plain HTTP; a TLS client gets nowhere.
    let answer = plain_get(addr, "/who").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("plain from 127.0.0.1"), "{answer}");
    assert!(tls_get(addr, DeviceCertVerifier::new(&ca), "/who")
        .await
        .is_err());
    assert!(!handle.get().https);

    // Enrolled (no restart): HTTPS with the device certificate, chained to HQ's CA.
    let device = ca.device(SERIAL);
    install(&hq, &device);
    assert!(wait_for(|| handle.get().https).await, "{:?}", handle.get());
    let verifier = DeviceCertVerifier::new(&ca);
    let answer = tls_get(addr, verifier.clone(), "/who").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("tls from 127.0.0.1"), "{answer}");
    let presented = verifier.presented.lock().unwrap()[0].clone();
    let on_disk = rustls_pemfile::certs(&mut device.0.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(presented, on_disk, "the device certificate itself");

    // A client that trusts another CA refuses the page.
    let stranger = Ca::new("Another CA");
    assert!(tls_get(addr, DeviceCertVerifier::new(&stranger), "/who")
        .await
        .is_err());

    // Plain HTTP now only redirects, to the same port and path.
    let answer = plain_get(addr, "/who?x=1").await;
    assert!(answer.starts_with("HTTP/1.1 307"), "{answer}");
    assert!(
        answer.contains(&format!(
            "location: https://127.0.0.1:{}/who?x=1",
            addr.port()
        )),
        "{answer}"
    );
    assert!(!answer.contains("plain from"), "{answer}");

    // A renewal: the next connection gets the new certificate, no restart.
    let renewed = ca.device(SERIAL);
    install(&hq, &renewed);
    let renewed_der = rustls_pemfile::certs(&mut renewed.0.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let mut served = None;
    for _ in 0..100 {
        let verifier = DeviceCertVerifier::new(&ca);
        tls_get(addr, verifier.clone(), "/who").await.unwrap();
        let got = verifier.presented.lock().unwrap()[0].clone();
        if got == renewed_der {
            served = Some(got);
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert!(served.is_some(), "the renewed certificate was never served");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_certificate_keeps_the_page_on_plain_http_with_an_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let hq = hq_in(dir.path());
    std::fs::write(&hq.client_cert, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    std::fs::write(&hq.client_key, "").unwrap();
    let (addr, handle, stop) = start(&hq).await;
    let answer = plain_get(addr, "/who").await;
    assert!(answer.ends_with("plain from 127.0.0.1"), "{answer}");
    let status = handle.get();
    assert!(!status.https, "{status:?}");
    let alarm = status.alarm().expect("an alarm");
    assert!(alarm.contains("box.pem"), "{alarm}");

    // Repaired: HTTPS from the next look at the files.
    let ca = Ca::new("HQ CA");
    install(&hq, &ca.device(SERIAL));
    assert!(wait_for(|| handle.get().https).await, "{:?}", handle.get());
    assert!(handle.get().alarm().is_none());
    let answer = tls_get(addr, DeviceCertVerifier::new(&ca), "/who")
        .await
        .unwrap();
    assert!(answer.ends_with("tls from 127.0.0.1"), "{answer}");
    stop.cancel();
}
