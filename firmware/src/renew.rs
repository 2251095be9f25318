//! Renewal of the device certificate before it expires, over the mutual-TLS
//! connection it still authenticates.
//!
//! # When
//!
//! [`RenewTask`] runs next to the sync agent once the box has a certificate. It reads
//! the certificate's notBefore and notAfter and renews once `[hq] renew_at_percent`
//! of that lifetime has passed ([`renew_at_ms`], a pure function of the validity and
//! the clock, tested on an injected clock). HQ signs certificates for
//! `box_cert_lifetime_s` (5 years by default), so with the default 67 % a box renews
//! after about 3 years and 4 months.
//!
//! # Steps
//!
//! 1. A new key (ECDSA P-256) written to the *staged* key file `<client_key>.new`
//!    (0600, atomically: temp, fsync, rename, fsync of the directory) and reused by a
//!    retry; the key in use is not touched.
//! 2. A CSR for it, CN = `[hq] box_id`, `POST`ed to [`RENEW_PATH`] with the current
//!    certificate (no token: the certificate authenticates the box).
//! 3. The answer is checked: one certificate, for the new key and this box, from the
//!    CA the box already trusts (`[hq] ca_cert`).
//! 4. The certificate is written to `<client_cert>.new` (atomically), then the staged
//!    key is renamed over `client_key` and the staged certificate over `client_cert`
//!    ([`commit`]); only then does the shared [`DeviceIdentity`] switch (every client
//!    of the daemon presents the new certificate on its next connection).
//!
//! HQ keeps accepting the old certificate until the box's first request with the new
//! one, so a box that lost the answer or lost power before step 4 finished still
//! gets in with the old one and simply renews again.
//!
//! # Power cuts
//!
//! The two renames of step 4 are not one atomic step, so [`recover`] runs at start
//! before any client is built: a staged certificate that goes with the staged key (or,
//! after the first rename, with the key in place) is renamed into place; a staged
//! certificate that goes with neither is deleted. A staged key alone is left for the
//! next attempt to reuse. Whatever the moment of the cut, `client_key` and
//! `client_cert` go together after [`recover`].
//!
//! # Failures
//!
//! HQ unreachable, 5xx and answers that do not check out are retried with seeded
//! full-jitter backoff (1 s doubling to [`RETRY_CAP`]). HQ's 403 `revoked` (the
//! operator revoked the box) is shown as `revoked` and retried only at the cap: the
//! box stops hammering HQ, and only a re-enrollment with a fresh token
//! ([`crate::enroll`]) makes it a member again. The certificate's validity, the
//! renewal time and the last outcome are in the sync status (`certificate`); the
//! last outcome is also kept in `<client_cert>.renewal.json` ([`outcome_path`]), so
//! `branchd sync-status` and a restarted daemon show it too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use branchline_sync::agent::{Backoff, BackoffConfig};
use branchline_sync::wire::{ErrorBody, ErrorCode, RenewRequest, RenewResponse, RENEW_PATH};
use rcgen::{KeyPair, PublicKeyData};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::HqConfig;
use crate::enroll::{lan_alt_names, load_or_make_key, make_csr_for, write_atomic, EnrollError};
use crate::sync::client::DeviceIdentity;
use crate::sync::status::SyncHandle;

/// Largest wait between renewal attempts after failures (and after a revocation).
pub const RETRY_CAP: Duration = Duration::from_secs(3600);
/// Longest sleep before looking at the certificate again (the clock may be set
/// meanwhile; NTP corrects a box that booted with a wrong clock).
pub const RECHECK: Duration = Duration::from_secs(3600);
/// Timeout of one renewal request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type Result<T, E = EnrollError> = std::result::Result<T, E>;

/// The staged form of a key or certificate file: `<path>.new`.
pub fn staged(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".new");
    PathBuf::from(s)
}

/// Where the last renewal outcome is kept across restarts:
/// `<client_cert>.renewal.json` (written atomically after every attempt).
pub fn outcome_path(hq: &HqConfig) -> PathBuf {
    let mut s = hq.client_cert.as_os_str().to_owned();
    s.push(".renewal.json");
    PathBuf::from(s)
}

/// The last renewal outcome stored by [`RenewTask`], if any (an unreadable file
/// counts as none).
pub fn last_outcome(hq: &HqConfig) -> Option<RenewalOutcome> {
    let bytes = std::fs::read(outcome_path(hq)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn store_outcome(hq: &HqConfig, outcome: &RenewalOutcome) {
    let stored = serde_json::to_vec(outcome)
        .map_err(|e| e.to_string())
        .and_then(|json| write_atomic(&outcome_path(hq), &json, 0o644).map_err(|e| e.to_string()));
    if let Err(e) = stored {
        tracing::warn!(error = %e, "cannot store the renewal outcome");
    }
}

/// A certificate's validity, ms since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Validity {
    /// notBefore.
    pub not_before_ms: i64,
    /// notAfter.
    pub not_after_ms: i64,
}

/// When a certificate valid for `v` is due for renewal: `percent` of its lifetime
/// after notBefore.
pub fn renew_at_ms(v: Validity, percent: u8) -> i64 {
    let lifetime = (v.not_after_ms - v.not_before_ms).max(0);
    v.not_before_ms
        + lifetime / 100 * i64::from(percent)
        + lifetime % 100 * i64::from(percent) / 100
}

/// Whether a certificate valid for `v` is due for renewal at `now_ms`.
pub fn renewal_due(v: Validity, percent: u8, now_ms: i64) -> bool {
    now_ms >= renew_at_ms(v, percent)
}

fn answer_err(reason: impl Into<String>) -> EnrollError {
    EnrollError::Answer {
        reason: reason.into(),
    }
}

fn first_cert(pem: &[u8]) -> Option<Vec<u8>> {
    rustls_pemfile::certs(&mut &pem[..])
        .next()
        .and_then(std::result::Result::ok)
        .map(|c| c.as_ref().to_vec())
}

/// The validity of the certificate in a PEM text.
pub fn validity_of_pem(pem: &[u8]) -> Result<Validity, String> {
    let der = first_cert(pem).ok_or("no PEM certificate")?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| format!("not X.509: {e}"))?;
    let v = cert.validity();
    Ok(Validity {
        not_before_ms: v.not_before.timestamp().saturating_mul(1000),
        not_after_ms: v.not_after.timestamp().saturating_mul(1000),
    })
}

/// The validity of the certificate file at `path`.
pub fn validity(path: &Path) -> Result<Validity> {
    let pem = std::fs::read(path).map_err(|source| EnrollError::File {
        op: "read",
        path: path.to_owned(),
        source,
    })?;
    validity_of_pem(&pem).map_err(|reason| EnrollError::Key {
        path: path.to_owned(),
        reason: format!("not a usable certificate: {reason}"),
    })
}

/// The SubjectPublicKeyInfo of the certificate in a PEM text.
fn cert_spki(pem: &[u8]) -> Option<Vec<u8>> {
    let der = first_cert(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.tbs_certificate.subject_pki.raw.to_vec())
}

/// The SubjectPublicKeyInfo of the key file at `path`, if it holds a key.
fn key_spki(path: &Path) -> Option<Vec<u8>> {
    let pem = std::fs::read_to_string(path).ok()?;
    KeyPair::from_pem(&pem)
        .ok()
        .map(|k| k.subject_public_key_info())
}

/// What [`recover`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// No staged certificate.
    Nothing,
    /// A staged identity was put in place (a cut between the renames of a commit).
    Completed,
    /// A staged certificate that goes with no key was deleted.
    Discarded,
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|source| EnrollError::File {
        op: "rename into",
        path: to.to_owned(),
        source,
    })
}

fn sync_dir(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| EnrollError::File {
            op: "sync directory",
            path: dir.to_owned(),
            source,
        })
}

/// Finishes or discards a staged identity (see "Power cuts" in the module doc).
pub fn recover(hq: &HqConfig) -> Result<Recovery> {
    let (key_new, cert_new) = (staged(&hq.client_key), staged(&hq.client_cert));
    let Ok(cert_pem) = std::fs::read(&cert_new) else {
        return Ok(Recovery::Nothing);
    };
    let spki = cert_spki(&cert_pem);
    if spki.is_some() && spki == key_spki(&key_new) {
        rename(&key_new, &hq.client_key)?;
    }
    if spki.is_some() && spki == key_spki(&hq.client_key) {
        rename(&cert_new, &hq.client_cert)?;
        sync_dir(&hq.client_cert)?;
        return Ok(Recovery::Completed);
    }
    std::fs::remove_file(&cert_new).map_err(|source| EnrollError::File {
        op: "remove",
        path: cert_new.clone(),
        source,
    })?;
    Ok(Recovery::Discarded)
}

/// Stores a new identity whose key is already staged (`<client_key>.new`): the
/// certificate to `<client_cert>.new`, then both renamed into place, key first.
pub fn commit(hq: &HqConfig, cert_pem: &str) -> Result<()> {
    let (key_new, cert_new) = (staged(&hq.client_key), staged(&hq.client_cert));
    write_atomic(&cert_new, cert_pem.as_bytes(), 0o644)?;
    rename(&key_new, &hq.client_key)?;
    rename(&cert_new, &hq.client_cert)?;
    sync_dir(&hq.client_cert)
}

/// Checks a renewal answer: one certificate, for `key` and CN `box_id`, and a CA
/// certificate that is the one in `ca_pem_trusted`.
pub fn check_renewal(
    answer: &RenewResponse,
    key: &KeyPair,
    box_id: &str,
    ca_pem_trusted: &[u8],
) -> Result<()> {
    let count = rustls_pemfile::certs(&mut answer.cert_pem.as_bytes()).count();
    if count != 1 {
        return Err(answer_err(format!(
            "{count} certificates in cert_pem, expected 1"
        )));
    }
    let der =
        first_cert(answer.cert_pem.as_bytes()).ok_or_else(|| answer_err("cert_pem is not PEM"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| answer_err(format!("cert_pem does not parse: {e}")))?;
    if cert.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
        return Err(answer_err("the certificate is not for the new key"));
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok());
    if cn != Some(box_id) {
        return Err(answer_err(format!(
            "the certificate names {cn:?}, not this box ({box_id})"
        )));
    }
    if first_cert(answer.ca_pem.as_bytes()).is_none()
        || first_cert(answer.ca_pem.as_bytes()) != first_cert(ca_pem_trusted)
    {
        return Err(answer_err(
            "ca_pem is not the CA this box trusts (hq.ca_cert)",
        ));
    }
    Ok(())
}

/// The last renewal attempt, for the sync status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RenewalOutcome {
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
    /// `"renewed"`, `"failed"` or `"revoked"`.
    pub result: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// The certificate part of the sync status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateStatus {
    /// The certificate in use.
    #[serde(flatten)]
    pub validity: Validity,
    /// When the box renews it.
    pub renew_at_ms: i64,
    /// The last renewal attempt since `branchd` started.
    pub last_renewal: Option<RenewalOutcome>,
    /// When the next attempt after a failure is due.
    pub next_attempt_ms: Option<i64>,
}

/// How one attempt ended.
#[derive(Debug)]
enum Attempt {
    Renewed,
    Revoked(String),
    Failed(String),
}

/// Renews the device certificate when due (see the module doc).
#[derive(Debug)]
pub struct RenewTask {
    /// `[hq]`: file paths, box id, `renew_at_percent`.
    pub hq: HqConfig,
    /// The daemon's HTTPS client to HQ (presents [`RenewTask::identity`]).
    pub client: reqwest::Client,
    /// The identity every client presents; reloaded after a renewal.
    pub identity: Arc<DeviceIdentity>,
    /// Where the status is shown.
    pub handle: SyncHandle,
    /// Jitter seed of the backoff.
    pub seed: u64,
    /// `[web] listen`: the addresses the CSR asks for
    /// ([`crate::enroll::lan_alt_names`], read again at each renewal).
    pub web_listen: Option<std::net::SocketAddr>,
}

fn now_ms() -> i64 {
    crate::store::system_clock_ms()
}

fn ms_after(d: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl RenewTask {
    /// Runs until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new(
            BackoffConfig {
                base: Duration::from_secs(1),
                cap: RETRY_CAP,
            },
            self.seed,
        );
        let mut last = last_outcome(&self.hq);
        loop {
            let wait = match validity(&self.hq.client_cert) {
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the device certificate for renewal");
                    RECHECK
                }
                Ok(v) => {
                    let at = renew_at_ms(v, self.hq.renew_at_percent);
                    let now = now_ms();
                    let mut status = CertificateStatus {
                        validity: v,
                        renew_at_ms: at,
                        last_renewal: last.clone(),
                        next_attempt_ms: None,
                    };
                    if now < at {
                        self.handle.set_certificate(status);
                        Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(RECHECK)
                    } else {
                        tracing::info!(
                            not_after_ms = v.not_after_ms,
                            "renewing the device certificate"
                        );
                        let outcome = self.attempt().await;
                        let instant = Instant::now();
                        let (result, error, wait) = match outcome {
                            Attempt::Renewed => {
                                backoff.succeed();
                                ("renewed", None, Duration::ZERO)
                            }
                            Attempt::Revoked(why) => {
                                tracing::error!(error = %why, "HQ refused the renewal: this box is revoked");
                                let next = backoff.at_cap(instant);
                                ("revoked", Some(format!("revoked: {why}")), next - instant)
                            }
                            Attempt::Failed(why) => {
                                tracing::warn!(error = %why, "certificate renewal failed; retrying");
                                let next = backoff.fail(instant);
                                ("failed", Some(why), next - instant)
                            }
                        };
                        let outcome = RenewalOutcome {
                            at_ms: now_ms(),
                            result: result.to_owned(),
                            error,
                        };
                        store_outcome(&self.hq, &outcome);
                        last = Some(outcome.clone());
                        if result == "renewed" {
                            // Logged once the outcome is stored (tests wait for it).
                            tracing::info!("device certificate renewed");
                            // Show the new certificate at once.
                            continue;
                        }
                        status.last_renewal = Some(outcome);
                        status.next_attempt_ms = Some(ms_after(wait));
                        self.handle.set_certificate(status);
                        wait
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    async fn attempt(&self) -> Attempt {
        match self.try_renew().await {
            Ok(a) => a,
            Err(e) => Attempt::Failed(e.to_string()),
        }
    }

    async fn try_renew(&self) -> Result<Attempt> {
        let key = load_or_make_key(&staged(&self.hq.client_key))?;
        let req = RenewRequest {
            protocol: branchline_sync::wire::PROTOCOL_VERSION,
            csr_pem: make_csr_for(
                &key,
                &self.hq.box_id,
                &lan_alt_names(&self.hq.box_id, self.web_listen, &self.hq.url),
            )?,
        };
        let url = format!("{}{RENEW_PATH}", self.hq.url.trim_end_matches('/'));
        let resp = match self
            .client
            .post(&url)
            .timeout(REQUEST_TIMEOUT)
            .json(&req)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return Ok(Attempt::Failed(format!(
                    "{url}: {}",
                    crate::sync::agent::error_chain(&e)
                )))
            }
        };
        let status = resp.status();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Ok(Attempt::Failed(format!("{url}: reading the answer: {e}"))),
        };
        if !status.is_success() {
            let refusal = serde_json::from_slice::<ErrorBody>(&body).ok();
            return Ok(match refusal {
                Some(r) if r.code == ErrorCode::Revoked => Attempt::Revoked(r.message),
                Some(r) => Attempt::Failed(format!("{url}: HQ answered {status}: {}", r.message)),
                None => Attempt::Failed(format!(
                    "{url}: HQ answered {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                )),
            });
        }
        let answer: RenewResponse = serde_json::from_slice(&body)
            .map_err(|e| answer_err(format!("not a RenewResponse: {e}")))?;
        let trusted = std::fs::read(&self.hq.ca_cert).map_err(|source| EnrollError::File {
            op: "read",
            path: self.hq.ca_cert.clone(),
            source,
        })?;
        check_renewal(&answer, &key, &self.hq.box_id, &trusted)?;
        commit(&self.hq, &answer.cert_pem)?;
        if let Err(e) = self.identity.reload(&self.hq) {
            return Ok(Attempt::Failed(format!(
                "renewed and stored, but the new certificate cannot be used: {e}"
            )));
        }
        Ok(Attempt::Renewed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType};

    const DAY: i64 = 86_400_000;

    fn v(nb: i64, na: i64) -> Validity {
        Validity {
            not_before_ms: nb,
            not_after_ms: na,
        }
    }

    #[test]
    fn renewal_is_due_after_the_configured_share_of_the_lifetime() {
        // A 300-day certificate renewed at 67 %: day 201.
        let cert = v(10 * DAY, 310 * DAY);
        assert_eq!(renew_at_ms(cert, 67), 10 * DAY + 201 * DAY);
        assert!(!renewal_due(cert, 67, 10 * DAY));
        assert!(!renewal_due(cert, 67, 211 * DAY - 1));
        assert!(renewal_due(cert, 67, 211 * DAY));
        assert!(renewal_due(cert, 67, 400 * DAY), "expired: still due");
        // The bounds of the setting.
        assert_eq!(renew_at_ms(cert, 10), 40 * DAY);
        assert_eq!(renew_at_ms(cert, 95), 295 * DAY);
        // Millisecond lifetimes do not overflow or round past notAfter.
        let short = v(1_000, 121_000);
        assert_eq!(renew_at_ms(short, 50), 61_000);
        let huge = v(0, i64::MAX / 2);
        assert!(renew_at_ms(huge, 95) < i64::MAX / 2);
        // A certificate whose notAfter is before notBefore is due at once.
        assert!(renewal_due(v(5 * DAY, DAY), 67, 5 * DAY));
    }

    fn hq_in(dir: &Path) -> HqConfig {
        HqConfig {
            url: "https://127.0.0.1:9".into(),
            ca_cert: dir.join("ca.pem"),
            client_cert: dir.join("box.pem"),
            client_key: dir.join("box.key"),
            box_id: "BOX-1".into(),
            batch_records: 500,
            long_poll: Duration::from_secs(25),
            request_timeout: Duration::from_secs(30),
            upload_interval: Duration::from_secs(30),
            upload_bandwidth_kbps: 0,
            probe_interval: Duration::from_secs(10),
            renew_at_percent: 67,
        }
    }

    fn cert_for(key: &KeyPair, cn: &str) -> String {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.self_signed(key).unwrap().pem()
    }

    fn key() -> KeyPair {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
    }

    /// Every point a power cut can hit during a commit leaves a key and certificate
    /// that go together after `recover`.
    #[test]
    fn a_cut_anywhere_in_a_commit_leaves_a_matching_identity() {
        let (old, new) = (key(), key());
        let (old_cert, new_cert) = (cert_for(&old, "BOX-1"), cert_for(&new, "BOX-1"));
        let setup = |stage: u8| {
            let dir = tempfile::tempdir().unwrap();
            let hq = hq_in(dir.path());
            std::fs::write(&hq.client_key, old.serialize_pem()).unwrap();
            std::fs::write(&hq.client_cert, &old_cert).unwrap();
            if stage >= 1 {
                std::fs::write(staged(&hq.client_key), new.serialize_pem()).unwrap();
            }
            if stage >= 2 {
                std::fs::write(staged(&hq.client_cert), &new_cert).unwrap();
            }
            if stage >= 3 {
                std::fs::rename(staged(&hq.client_key), &hq.client_key).unwrap();
            }
            if stage >= 4 {
                std::fs::rename(staged(&hq.client_cert), &hq.client_cert).unwrap();
            }
            (dir, hq)
        };
        for (stage, expect, renewed) in [
            (0, Recovery::Nothing, false),
            (1, Recovery::Nothing, false),
            (2, Recovery::Completed, true),
            (3, Recovery::Completed, true),
            (4, Recovery::Nothing, true),
        ] {
            let (_dir, hq) = setup(stage);
            assert_eq!(recover(&hq).unwrap(), expect, "stage {stage}");
            let cert = std::fs::read(&hq.client_cert).unwrap();
            assert_eq!(
                cert_spki(&cert),
                key_spki(&hq.client_key),
                "stage {stage}: key and certificate differ"
            );
            assert_eq!(cert == new_cert.as_bytes(), renewed, "stage {stage}");
            assert!(!staged(&hq.client_cert).exists(), "stage {stage}");
            DeviceIdentity::load(&hq).unwrap();
        }
        // A staged certificate for no key we hold is dropped; the identity stays.
        let (_dir, hq) = setup(0);
        std::fs::write(staged(&hq.client_cert), cert_for(&key(), "BOX-1")).unwrap();
        assert_eq!(recover(&hq).unwrap(), Recovery::Discarded);
        assert_eq!(std::fs::read_to_string(&hq.client_cert).unwrap(), old_cert);
        // A staged key alone stays for the next attempt to reuse.
        let (_dir, hq) = setup(1);
        recover(&hq).unwrap();
        assert!(staged(&hq.client_key).exists());
    }

    #[test]
    fn commit_puts_the_staged_key_and_the_certificate_in_place() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let hq = hq_in(dir.path());
        let old = key();
        std::fs::write(&hq.client_key, old.serialize_pem()).unwrap();
        std::fs::write(&hq.client_cert, cert_for(&old, "BOX-1")).unwrap();
        let identity = DeviceIdentity::load(&hq).unwrap();
        let before = identity.certificate_der();
        let new = load_or_make_key(&staged(&hq.client_key)).unwrap();
        commit(&hq, &cert_for(&new, "BOX-1")).unwrap();
        assert!(!staged(&hq.client_key).exists() && !staged(&hq.client_cert).exists());
        let mode = std::fs::metadata(&hq.client_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        identity.reload(&hq).unwrap();
        assert_ne!(identity.certificate_der(), before);
        // A commit without a staged key fails and leaves the identity usable.
        let err = commit(&hq, &cert_for(&key(), "BOX-1")).unwrap_err();
        assert!(err.to_string().contains("box.key"), "{err}");
        assert_eq!(recover(&hq).unwrap(), Recovery::Discarded);
        DeviceIdentity::load(&hq).unwrap();
    }

    /// HQ unreachable: the attempt fails, the status says so with the next attempt
    /// (backoff), and the identity in use is untouched.
    #[tokio::test]
    async fn an_unreachable_hq_is_retried_later_and_changes_nothing() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let mut hq = hq_in(dir.path());
        // A closed port on loopback.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        hq.url = format!("https://127.0.0.1:{port}");
        let k = key();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "BOX-1");
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let cert = p.self_signed(&k).unwrap().pem();
        std::fs::write(&hq.client_key, k.serialize_pem()).unwrap();
        std::fs::write(&hq.client_cert, &cert).unwrap();
        std::fs::write(&hq.ca_cert, &cert).unwrap();
        let identity = DeviceIdentity::load(&hq).unwrap();
        let client = crate::sync::client::http_client_with(&hq, Arc::clone(&identity)).unwrap();
        let handle = SyncHandle::not_configured();
        let task = RenewTask {
            hq: hq.clone(),
            client,
            identity,
            handle: handle.clone(),
            seed: 7,
            web_listen: None,
        };
        let stop = CancellationToken::new();
        let run = tokio::spawn(task.run(stop.clone()));
        let mut status = None;
        for _ in 0..100 {
            status = handle.certificate().filter(|c| c.last_renewal.is_some());
            if status.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        run.await.unwrap();
        let status = status.expect("a renewal attempt was recorded");
        let last = status.last_renewal.clone().unwrap();
        assert_eq!(last.result, "failed", "{status:?}");
        assert!(
            last.error
                .as_deref()
                .is_some_and(|e| e.contains(&port.to_string())),
            "{status:?}"
        );
        assert!(
            status.next_attempt_ms.is_some_and(|n| n >= last.at_ms),
            "{status:?}"
        );
        assert_eq!(status.validity.not_after_ms, 1_609_459_200_000);
        assert_eq!(std::fs::read_to_string(&hq.client_cert).unwrap(), cert);
        assert!(!staged(&hq.client_cert).exists());
        // The outcome outlives the daemon.
        assert_eq!(
            last_outcome(&hq).map(|o| o.result),
            Some("failed".to_owned())
        );
    }

    #[test]
    fn a_renewal_answer_must_be_for_the_new_key_this_box_and_the_trusted_ca() {
        let ca_key = key();
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.clone().self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let new = key();
        let issue = |cn: &str, k: &KeyPair| {
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.signed_by(k, &issuer).unwrap().pem()
        };
        let answer = |cert_pem: String, ca_pem: String| RenewResponse {
            protocol: 1,
            cert_pem,
            ca_pem,
            not_after_ms: 0,
        };
        let trusted = ca.pem();
        check_renewal(
            &answer(issue("BOX-1", &new), ca.pem()),
            &new,
            "BOX-1",
            trusted.as_bytes(),
        )
        .unwrap();
        for (bad, why) in [
            (answer(issue("BOX-1", &key()), ca.pem()), "new key"),
            (answer(issue("BOX-2", &new), ca.pem()), "names"),
            (
                answer(issue("BOX-1", &new), cert_for(&key(), "X")),
                "trusts",
            ),
            (answer(String::new(), ca.pem()), "0 certificates"),
        ] {
            let err = check_renewal(&bad, &new, "BOX-1", trusted.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }
}
