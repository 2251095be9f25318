//! Enrollment: a box trades a one-time provisioning token and a CSR for its device
//! certificate (`POST` [`ENROLL_PATH`] on the sync listener).
//!
//! # Where it sits
//!
//! The box has no client certificate yet, so this is the one route the sync listener
//! serves to a TLS client without one ([`crate::hq::server::serve`]'s `anonymous`
//! router; [`crate::hq::pki::server_tls_config`] lets such a client through the
//! handshake and sends the CA certificate after the server's, so the box can check the
//! chain against the CA pin in its token). Every other route still needs a device
//! certificate.
//!
//! # The token
//!
//! Tokens are made offline by `branch-prov` with HQ's provisioning key (ed25519), the
//! same text the box got in its USB bundle or QR code (`branchline_provisioning::token`):
//! the signature is the authenticator and the token id the nonce, there is no shared
//! secret. HQ trusts the public keys in `provisioning_keys` ([`EnrollSettings`]); with
//! none configured it enrolls nobody.
//!
//! # Checks, in order ([`check_request`], pure, then the store)
//!
//! 1. protocol version, body shape (400 `malformed`);
//! 2. token framing, key id and signature (403 `bad_token`);
//! 3. the CSR: PEM, DER, its self-signature (rcgen's `CertificateSigningRequestParams`,
//!    which verifies it with x509-parser), key type ECDSA P-256, a subject CN that is a
//!    valid box serial, subjectAltNames that are only IP addresses and DNS names the
//!    box may have ([`crate::alt_names::check`]: private or link-local addresses, names
//!    made of its serial) (400 `bad_csr`, naming the refused one);
//! 4. `branchline_provisioning::check::check` with the CSR's CN as the serial:
//!    expiry, serial binding, the revocation list (403 `expired`, `wrong_serial`,
//!    `revoked`);
//! 5. HQ signs a device certificate for the CSR's key: CN = the serial (the box id),
//!    clientAuth and serverAuth, valid for `box_cert_lifetime_s`
//!    ([`crate::hq::HqConfig::box_cert_lifetime`], [`crate::hq::pki::box_validity`]),
//!    with the CSR's checked subjectAltNames unless one is HQ's own (400 `bad_csr`);
//!    nothing else of the CSR is used ([`crate::hq::pki::Ca::sign_box_csr`]);
//! 6. [`crate::hq::store::HqStore::enroll_box`], one transaction: the site exists, the
//!    token is unused (or was used by this box with this very key: a box that lost
//!    the answer gets a fresh certificate), the box is not registered in another
//!    site, a revoked box presents a token it has not used before; then the box is
//!    registered with the certificate pinned (a staged renewal dropped, a revocation
//!    cleared) and the token recorded (409 `token_used`, `wrong_site`; 403 `revoked`).
//!    A refusal stores nothing, and the certificate signed in step 5 is dropped
//!    unseen. Enrollments and re-enrollments are audited (`admin_audit`).
//!
//! The answer carries the certificate and the CA certificate.
//!
//! # Re-enrollment and revocation
//!
//! A box HQ knows enrolls again with a fresh token (a factory-reset box, a new
//! bundle, a revoked box): its certificate is replaced, so the old one is refused
//! from then on. An operator revokes a box with `POST /admin/v1/boxes/{id}/revoke`
//! ([`crate::hq::admin_api`]); every mutual-TLS request of a revoked box is refused
//! (`crate::hq::sync_api`), and only such an explicit re-enrollment with a token the
//! box has not used before clears the revocation.
//!
//! # Renewal
//!
//! `renew` serves [`crate::wire::RENEW_PATH`] on the mutual-TLS router: the box's
//! current certificate authenticates it (no token), the CSR passes [`check_csr`] and
//! names the same box, and HQ stages the new certificate next to the current one
//! ([`crate::hq::store::HqStore::stage_renewal`]): both are accepted until the box
//! first uses the new one, which then replaces the old.
//!
//! # Limits
//!
//! The revocation list of tokens is read once at start. The site's initial config is
//! not part of the answer: the box pulls it through the change feed once it syncs.

use std::time::SystemTime;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use branchline_provisioning::check::{self, CheckContext, MemoryUsedTokens};
use branchline_provisioning::keys::TrustedKeys;
use branchline_provisioning::payload::{BoxSerial, SiteId, TokenId};
use branchline_provisioning::revocation::RevocationList;
use branchline_provisioning::token;
use rcgen::{CertificateSigningRequestParams, SanType};
use sha2::{Digest, Sha256};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;

use crate::alt_names::{self, AltName};
use crate::hq::server::PeerIdentity;
use crate::hq::store::{EnrollmentRecord, RenewalRecord};
use crate::hq::sync_api::{self, SyncError};
use crate::hq::{now_ms, pki, AppState, Error};
use crate::wire::{
    EnrollError, EnrollErrorCode, EnrollRequest, EnrollResponse, ErrorCode, RenewRequest,
    RenewResponse, ENROLL_PATH, MAX_ENROLL_BODY, PROTOCOL_VERSION,
};

/// What HQ enrolls with: the provisioning keys tokens must be signed with and the
/// revocation list.
#[derive(Debug, Clone)]
pub struct EnrollSettings {
    keys: TrustedKeys,
    revoked: RevocationList,
}

impl EnrollSettings {
    /// Trusts `keys`, refuses the tokens of `revoked` (certificates last
    /// [`crate::hq::HqConfig::box_cert_lifetime`]).
    pub fn new(keys: TrustedKeys, revoked: RevocationList) -> EnrollSettings {
        EnrollSettings { keys, revoked }
    }
}

/// Why an enrollment request was refused before anything was signed or stored.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Another protocol version.
    #[error("protocol version {found} is not {PROTOCOL_VERSION}")]
    Protocol {
        /// What the box sent.
        found: u16,
    },
    /// The token failed a check of the provisioning crate (which names it).
    #[error("enrollment token refused: {0}")]
    Token(#[source] branchline_provisioning::Error),
    /// The CSR is not acceptable.
    #[error("certificate signing request refused: {reason}")]
    Csr {
        /// Why.
        reason: String,
    },
}

impl Refusal {
    /// The wire code.
    pub fn code(&self) -> EnrollErrorCode {
        use branchline_provisioning::Error as P;
        match self {
            Refusal::Protocol { .. } => EnrollErrorCode::Malformed,
            Refusal::Csr { .. } => EnrollErrorCode::BadCsr,
            Refusal::Token(P::Expired { .. }) => EnrollErrorCode::Expired,
            Refusal::Token(P::WrongSerial { .. }) => EnrollErrorCode::WrongSerial,
            Refusal::Token(P::Revoked { .. }) => EnrollErrorCode::Revoked,
            Refusal::Token(P::Replayed(_)) => EnrollErrorCode::TokenUsed,
            Refusal::Token(_) => EnrollErrorCode::BadToken,
        }
    }
}

/// An enrollment request whose token and CSR passed every check that needs no store.
#[derive(Debug, Clone)]
pub struct CheckedRequest {
    /// The token's id.
    pub token_id: TokenId,
    /// The token's expiry, Unix seconds.
    pub expires_at: u64,
    /// The site the token is for.
    pub site: SiteId,
    /// The box: the CSR's CN, one of the token's serials.
    pub box_id: BoxSerial,
    /// sha256 (hex) of the CSR key's SubjectPublicKeyInfo.
    pub key_sha256: String,
    /// The verified CSR (only its key is used).
    pub csr: CertificateSigningRequestParams,
    /// The subjectAltNames it asks for, checked against the policy without HQ's
    /// names (the signer checks those).
    pub alt_names: Vec<AltName>,
}

fn csr_refused(reason: impl Into<String>) -> Refusal {
    Refusal::Csr {
        reason: reason.into(),
    }
}

/// A CSR that parsed, whose self-signature verified, with an ECDSA P-256 key, a
/// subject CN that is a valid box serial and acceptable subjectAltNames.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    /// The CN.
    pub box_id: BoxSerial,
    /// sha256 (hex) of the key's SubjectPublicKeyInfo.
    pub key_sha256: String,
    /// The verified request (only its key and [`CheckedCsr::alt_names`] are used).
    pub csr: CertificateSigningRequestParams,
    /// Its subjectAltNames, IP and DNS only, each one the box may have
    /// ([`crate::alt_names::check`] without HQ's names).
    pub alt_names: Vec<AltName>,
}

/// Checks a CSR (step 3 of the module doc; renewal checks the same). Pure.
pub fn check_csr(csr_pem: &str) -> Result<CheckedCsr, Refusal> {
    let (rest, pem) = x509_parser::pem::parse_x509_pem(csr_pem.trim().as_bytes())
        .map_err(|e| csr_refused(format!("not PEM: {e}")))?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(csr_refused(format!(
            "PEM label {:?}, expected \"CERTIFICATE REQUEST\"",
            pem.label
        )));
    }
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err(csr_refused("text after the PEM block"));
    }
    // rcgen parses and verifies the self-signature (proof of possession of the key).
    let csr = CertificateSigningRequestParams::from_der(&pem.contents.as_slice().into())
        .map_err(|e| csr_refused(e.to_string()))?;
    let (_, parsed) = X509CertificationRequest::from_der(&pem.contents)
        .map_err(|e| csr_refused(format!("not DER: {e}")))?;
    let info = &parsed.certification_request_info;
    let spki = &info.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err(csr_refused(format!(
            "key type {} (curve {}); must be ECDSA P-256",
            spki.algorithm.algorithm,
            curve.map_or_else(|| "none".to_owned(), |c| c.to_string())
        )));
    }
    let cn = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| csr_refused("subject has no CN (the box serial)"))?;
    let box_id: BoxSerial = cn
        .parse()
        .map_err(|e| csr_refused(format!("subject CN: {e}")))?;
    let alt_names = csr
        .params
        .subject_alt_names
        .iter()
        .map(|san| match san {
            SanType::IpAddress(ip) => Ok(AltName::Ip(*ip)),
            SanType::DnsName(dns) => Ok(AltName::Dns(dns.as_str().to_ascii_lowercase())),
            other => Err(csr_refused(format!(
                "subjectAltName {other:?}: only IP addresses and DNS names"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    alt_names::check(box_id.as_str(), &alt_names, &[]).map_err(|e| csr_refused(e.to_string()))?;
    let key_sha256 = hex::encode(Sha256::digest(spki.raw));
    Ok(CheckedCsr {
        box_id,
        key_sha256,
        csr,
        alt_names,
    })
}

/// Checks steps 1 to 4 of the module doc; `now` is Unix seconds. Changes nothing.
pub fn check_request(
    req: &EnrollRequest,
    settings: &EnrollSettings,
    now: u64,
) -> Result<CheckedRequest, Refusal> {
    if req.protocol != PROTOCOL_VERSION {
        return Err(Refusal::Protocol {
            found: req.protocol,
        });
    }
    let token = token::decode(&req.token, &settings.keys).map_err(Refusal::Token)?;

    let CheckedCsr {
        box_id,
        key_sha256,
        csr,
        alt_names,
    } = check_csr(&req.csr_pem)?;

    let ctx = CheckContext {
        serial: &box_id,
        now,
        revoked: &settings.revoked,
    };
    // Replay is the store's check (atomic with the registration), not this one's.
    check::check(&token.enrollment, &ctx, &MemoryUsedTokens::default()).map_err(Refusal::Token)?;
    Ok(CheckedRequest {
        token_id: token.enrollment.token_id,
        expires_at: token.enrollment.expires_at,
        site: token.enrollment.site.clone(),
        box_id,
        key_sha256,
        csr,
        alt_names,
    })
}

/// An error answer of the enrollment route.
#[derive(Debug)]
pub struct EnrollFailure {
    status: StatusCode,
    body: EnrollError,
}

impl EnrollFailure {
    fn new(code: EnrollErrorCode, message: impl Into<String>) -> EnrollFailure {
        let status = match code {
            EnrollErrorCode::Malformed | EnrollErrorCode::BadCsr => StatusCode::BAD_REQUEST,
            EnrollErrorCode::BadToken
            | EnrollErrorCode::Expired
            | EnrollErrorCode::WrongSerial
            | EnrollErrorCode::Revoked
            | EnrollErrorCode::NotEnabled => StatusCode::FORBIDDEN,
            EnrollErrorCode::TokenUsed | EnrollErrorCode::WrongSite => StatusCode::CONFLICT,
            EnrollErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        EnrollFailure {
            status,
            body: EnrollError {
                code,
                message: message.into(),
            },
        }
    }
}

impl IntoResponse for EnrollFailure {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<Refusal> for EnrollFailure {
    fn from(r: Refusal) -> EnrollFailure {
        EnrollFailure::new(r.code(), r.to_string())
    }
}

impl From<Error> for EnrollFailure {
    fn from(e: Error) -> EnrollFailure {
        match &e {
            Error::TokenUsed { .. } => {
                EnrollFailure::new(EnrollErrorCode::TokenUsed, e.to_string())
            }
            Error::WrongSite { .. } => {
                EnrollFailure::new(EnrollErrorCode::WrongSite, e.to_string())
            }
            Error::BoxRevoked { box_id, .. } => EnrollFailure::new(
                EnrollErrorCode::Revoked,
                format!(
                    "box {box_id:?} is revoked at HQ; it re-enrolls only with a token it has \
                     not used before"
                ),
            ),
            Error::AltName { .. } => EnrollFailure::new(
                EnrollErrorCode::BadCsr,
                format!("certificate signing request refused: {e}"),
            ),
            Error::NotFound { what: "site", key } => EnrollFailure::new(
                EnrollErrorCode::WrongSite,
                format!("the token's site {key:?} does not exist at HQ"),
            ),
            _ => {
                tracing::error!(error = %e, "enrollment failed");
                EnrollFailure::new(
                    EnrollErrorCode::Unavailable,
                    "HQ cannot enroll now; retry later",
                )
            }
        }
    }
}

/// The routes served to a client without a certificate.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route(
            ENROLL_PATH,
            post(enroll).layer(DefaultBodyLimit::max(MAX_ENROLL_BODY)),
        )
        .with_state(state)
}

/// Signs a device certificate for the key of `csr` with `alt_names` (on the blocking
/// pool: loading the CA and signing are CPU work): certificate PEM, fingerprint, CA
/// PEM.
async fn sign(
    state: &AppState,
    csr: CertificateSigningRequestParams,
    alt_names: Vec<AltName>,
    box_id: String,
    now: SystemTime,
) -> Result<(String, String, String), Error> {
    let tls_dir = state.config.tls_dir.clone();
    let (not_before, not_after) = pki::box_validity(now, state.config.box_cert_lifetime);
    tokio::task::spawn_blocking(move || {
        let ca = pki::Ca::load(&tls_dir)?;
        let (cert, fp) = ca.sign_box_csr(&csr, &box_id, &alt_names, not_before, not_after)?;
        Ok::<_, Error>((cert, fp, ca.cert_pem().to_owned()))
    })
    .await
    .map_err(|source| Error::Join {
        op: "sign device certificate",
        source,
    })?
}

async fn enroll(
    State(state): State<AppState>,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> Result<Json<EnrollResponse>, EnrollFailure> {
    let Json(req) = body.map_err(|e| {
        EnrollFailure::new(
            EnrollErrorCode::Malformed,
            format!("bad body: {}", e.body_text()),
        )
    })?;
    let Some(settings) = state.config.enrollment.as_ref() else {
        return Err(EnrollFailure::new(
            EnrollErrorCode::NotEnabled,
            "this HQ has no provisioning keys configured (provisioning_keys)",
        ));
    };
    let now = SystemTime::now();
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let checked = check_request(&req, settings, now_s).inspect_err(|r| {
        tracing::warn!(refusal = %r, "enrollment refused");
    })?;
    let (cert_pem, fingerprint, ca_pem) = sign(
        &state,
        checked.csr.clone(),
        checked.alt_names.clone(),
        checked.box_id.to_string(),
        now,
    )
    .await
    .inspect_err(|e| {
        tracing::warn!(error = %e, box_id = %checked.box_id, "enrollment refused by the signer");
    })?;
    let record = EnrollmentRecord {
        token_id: checked.token_id.to_string(),
        box_id: checked.box_id.to_string(),
        site: checked.site.to_string(),
        key_sha256: checked.key_sha256.clone(),
        cert_fingerprint: fingerprint,
        expires_at_s: i64::try_from(checked.expires_at).unwrap_or(i64::MAX),
        now_ms: now_ms(),
    };
    let rec = state.store.enroll_box(&record).await.inspect_err(|e| {
        tracing::warn!(error = %e, box_id = %record.box_id, "enrollment refused by the store");
    })?;
    tracing::info!(box_id = %rec.id, site = %rec.site, token = %record.token_id, "box enrolled");
    Ok(Json(EnrollResponse {
        protocol: PROTOCOL_VERSION,
        box_id: rec.id,
        site: rec.site,
        cert_pem,
        ca_pem,
    }))
}

/// `POST` [`crate::wire::RENEW_PATH`] over mutual TLS: the box's current (or staged) certificate
/// authenticates it ([`crate::hq::sync_api::authorize`]: unknown, revoked or
/// superseded certificates are refused first); the CSR is checked like an
/// enrollment's and its CN must be the certificate's box; HQ signs a certificate
/// for the CSR's key and stages it ([`crate::hq::store::HqStore::stage_renewal`]).
/// Any refusal stores nothing.
pub(crate) async fn renew(
    State(state): State<AppState>,
    peer: Option<Extension<PeerIdentity>>,
    body: Result<Json<RenewRequest>, JsonRejection>,
) -> Result<Json<RenewResponse>, SyncError> {
    let presented = peer.as_ref().map(|Extension(p)| p.fingerprint.clone());
    let rec = sync_api::authorize_box(&state, peer).await?;
    let presented = presented.unwrap_or_default();
    let Json(req) = body.map_err(|e| {
        SyncError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedBatch,
            format!("bad renewal body: {}", e.body_text()),
        )
    })?;
    if req.protocol != PROTOCOL_VERSION {
        return Err(SyncError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not {PROTOCOL_VERSION}",
                req.protocol
            ),
        ));
    }
    let checked = check_csr(&req.csr_pem)
        .map_err(|r| SyncError::new(StatusCode::BAD_REQUEST, ErrorCode::BadCsr, r.to_string()))?;
    if checked.box_id.as_str() != rec.id {
        return Err(SyncError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadCsr,
            format!(
                "the CSR names box {:?}, but this request's certificate is box {:?}",
                checked.box_id.as_str(),
                rec.id
            ),
        ));
    }
    let now = SystemTime::now();
    let (_, not_after) = pki::box_validity(now, state.config.box_cert_lifetime);
    let (cert_pem, fingerprint, ca_pem) =
        match sign(&state, checked.csr, checked.alt_names, rec.id.clone(), now).await {
            Err(e @ Error::AltName { .. }) => {
                tracing::warn!(error = %e, "renewal refused");
                return Err(SyncError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadCsr,
                    format!("certificate signing request refused: {e}"),
                ));
            }
            r => r?,
        };
    let renewal = RenewalRecord {
        box_id: rec.id.clone(),
        presented_fingerprint: presented,
        new_fingerprint: fingerprint,
        now_ms: now_ms(),
    };
    state
        .store
        .stage_renewal(&renewal)
        .await
        .map_err(sync_api::identity_error)?;
    tracing::info!(box_id = %rec.id, "box renewed its certificate");
    Ok(Json(RenewResponse {
        protocol: PROTOCOL_VERSION,
        cert_pem,
        ca_pem,
        not_after_ms: not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use branchline_provisioning::payload::{CaPin, Enrollment};
    use ed25519_dalek::SigningKey;

    const NOW: u64 = 1_800_000_000;

    fn prov_key() -> SigningKey {
        SigningKey::from_bytes(&[42; 32])
    }

    fn settings() -> EnrollSettings {
        EnrollSettings::new(
            TrustedKeys::new([prov_key().verifying_key()]).unwrap(),
            RevocationList::default(),
        )
    }

    fn enrollment(serials: &[&str], expires_at: u64) -> Enrollment {
        Enrollment {
            token_id: TokenId([1, 2, 3, 4, 5, 6, 7, 8]),
            site: "s1".parse().unwrap(),
            serials: serials.iter().map(|s| s.parse().unwrap()).collect(),
            hq_url: "https://127.0.0.1:8443".parse().unwrap(),
            ca_pin: CaPin::new(&[9; 32]).unwrap(),
            expires_at,
        }
    }

    fn token(serials: &[&str], expires_at: u64) -> String {
        token::encode(&enrollment(serials, expires_at), &prov_key()).unwrap()
    }

    fn csr_with(cn: &str, alg: &'static rcgen::SignatureAlgorithm) -> String {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(cn: &str) -> String {
        csr_with(cn, &rcgen::PKCS_ECDSA_P256_SHA256)
    }

    fn req(token: String, csr_pem: String) -> EnrollRequest {
        EnrollRequest {
            protocol: PROTOCOL_VERSION,
            token,
            csr_pem,
        }
    }

    fn code(r: Result<CheckedRequest, Refusal>) -> EnrollErrorCode {
        r.expect_err("accepted").code()
    }

    #[test]
    fn a_good_token_and_csr_pass_and_name_the_box_and_site() {
        let ok = check_request(
            &req(token(&["BOX-1"], NOW + 60), csr("BOX-1")),
            &settings(),
            NOW,
        )
        .unwrap();
        assert_eq!(ok.box_id.as_str(), "BOX-1");
        assert_eq!(ok.site.as_str(), "s1");
        assert_eq!(ok.key_sha256.len(), 64);
    }

    #[test]
    fn token_refusals_have_their_own_codes() {
        let s = settings();
        // Expired (now == expiry counts as expired).
        assert_eq!(
            code(check_request(
                &req(token(&["BOX-1"], NOW), csr("BOX-1")),
                &s,
                NOW
            )),
            EnrollErrorCode::Expired
        );
        // The CSR names a box the token is not for.
        assert_eq!(
            code(check_request(
                &req(token(&["BOX-1"], NOW + 60), csr("BOX-2")),
                &s,
                NOW
            )),
            EnrollErrorCode::WrongSerial
        );
        // Signed by another key.
        let other = token::encode(
            &enrollment(&["BOX-1"], NOW + 60),
            &SigningKey::from_bytes(&[7; 32]),
        )
        .unwrap();
        assert_eq!(
            code(check_request(&req(other, csr("BOX-1")), &s, NOW)),
            EnrollErrorCode::BadToken
        );
        // One byte of the body changed: the signature no longer matches.
        let good = token(&["BOX-1"], NOW + 60);
        let mut bin = token::to_binary(&good).unwrap();
        bin[10] ^= 1;
        assert_eq!(
            code(check_request(
                &req(token::to_text(&bin), csr("BOX-1")),
                &s,
                NOW
            )),
            EnrollErrorCode::BadToken
        );
        // Not a token at all.
        assert_eq!(
            code(check_request(&req("hello".into(), csr("BOX-1")), &s, NOW)),
            EnrollErrorCode::BadToken
        );
        // Revoked.
        let mut revoked = RevocationList::default();
        revoked
            .entries
            .push(branchline_provisioning::revocation::Revocation {
                token_id: TokenId([1, 2, 3, 4, 5, 6, 7, 8]),
                revoked_at: NOW - 1,
                expires_at: None,
                reason: "lost".into(),
            });
        let s2 = EnrollSettings::new(
            TrustedKeys::new([prov_key().verifying_key()]).unwrap(),
            revoked,
        );
        assert_eq!(
            code(check_request(&req(good, csr("BOX-1")), &s2, NOW)),
            EnrollErrorCode::Revoked
        );
    }

    #[test]
    fn bad_csrs_are_refused() {
        let s = settings();
        let t = || token(&["BOX-1"], NOW + 60);
        // A byte of the signature changed (40 base64 characters before the end of the
        // body lie inside the ECDSA signature's s value).
        let pem = csr("BOX-1");
        let body_end = pem.find("-----END").unwrap();
        let body: Vec<usize> = pem[..body_end]
            .char_indices()
            .filter(|(_, c)| c.is_ascii_alphanumeric() || *c == '+' || *c == '/')
            .map(|(i, _)| i)
            .collect();
        let at = body[body.len() - 40];
        let mut tampered = pem.clone();
        let swap = if &pem[at..=at] == "A" { "B" } else { "A" };
        tampered.replace_range(at..=at, swap);
        let r = check_request(&req(t(), tampered), &s, NOW);
        assert_eq!(code(r), EnrollErrorCode::BadCsr);
        // Not P-256.
        for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let r = check_request(&req(t(), csr_with("BOX-1", alg)), &s, NOW);
            assert!(
                matches!(&r, Err(Refusal::Csr { reason }) if reason.contains("P-256")),
                "{r:?}"
            );
        }
        // A certificate, not a request; garbage; a CN that is no serial.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::default()
            .self_signed(&key)
            .unwrap()
            .pem();
        for pem in [cert, "garbage".to_owned(), csr("not a serial!")] {
            assert_eq!(
                code(check_request(&req(t(), pem), &s, NOW)),
                EnrollErrorCode::BadCsr
            );
        }
        // Another protocol version.
        let mut r = req(t(), csr("BOX-1"));
        r.protocol = 99;
        assert_eq!(code(check_request(&r, &s, NOW)), EnrollErrorCode::Malformed);
    }

    /// A P-256 CSR, CN `cn`, asking for the subjectAltNames `sans`.
    fn csr_with_sans(cn: &str, sans: Vec<rcgen::SanType>) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn dns(name: &str) -> rcgen::SanType {
        rcgen::SanType::DnsName(name.try_into().unwrap())
    }

    fn ip(addr: &str) -> rcgen::SanType {
        rcgen::SanType::IpAddress(addr.parse().unwrap())
    }

    #[test]
    fn the_csr_s_lan_addresses_and_own_names_are_kept_others_refused() {
        let s = settings();
        let t = || token(&["BOX-1"], NOW + 60);
        let pem = csr_with_sans(
            "BOX-1",
            vec![
                ip("192.168.1.1"),
                ip("fe80::1"),
                dns("BOX-1"),
                dns("box-1.local"),
            ],
        );
        let ok = check_request(&req(t(), pem), &s, NOW).unwrap();
        assert_eq!(
            ok.alt_names,
            [
                AltName::Ip("192.168.1.1".parse().unwrap()),
                AltName::Ip("fe80::1".parse().unwrap()),
                AltName::Dns("box-1".into()),
                AltName::Dns("box-1.local".into()),
            ]
        );
        assert!(check_request(&req(t(), csr("BOX-1")), &s, NOW)
            .unwrap()
            .alt_names
            .is_empty());
        for (san, why) in [
            (
                ip("8.8.8.8"),
                "IP 8.8.8.8 is not a private or link-local address",
            ),
            (ip("127.0.0.1"), "IP 127.0.0.1 is not a private"),
            (
                dns("hq.example.com"),
                "DNS \"hq.example.com\" is not a name of box \"BOX-1\"",
            ),
            (dns("box-2.local"), "is not a name of box"),
            (
                rcgen::SanType::Rfc822Name("ops@example.com".try_into().unwrap()),
                "only IP addresses and DNS names",
            ),
        ] {
            let pem = csr_with_sans("BOX-1", vec![ip("10.1.1.1"), san]);
            let r = check_request(&req(t(), pem), &s, NOW);
            assert!(
                matches!(&r, Err(Refusal::Csr { reason }) if reason.contains(why)),
                "{why}: {r:?}"
            );
            assert_eq!(code(r), EnrollErrorCode::BadCsr);
        }
    }
}
