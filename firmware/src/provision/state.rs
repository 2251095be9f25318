//! What the provisioning page and `GET /api/v1/provisioning` show, read from the
//! store and the files: provisioned or not (site, HQ URL, when, from a USB bundle or
//! a QR token), enrolled or not, this box's serial and claim code, and whether a
//! token can be applied here. Never a secret: no token text, no trunk or installer
//! password (the provisioned fields are listed by name only).
//!
//! Where each fact comes from:
//! - provisioned: `provisioned_settings` (the last applied artifact's fields) joined
//!   with `provisioning_bundles` on its sha256 (when, which token id);
//! - from a token or a stick: a token applied from the web page is recorded under
//!   the sha256 of its text (see [`super::open_token`]), so the artifact is a token
//!   exactly when that sha256 is the one of the stored `enrollment_token`; no extra
//!   column (and no migration) is needed;
//! - enrollment: the `enrollment` outcome [`crate::enroll`] stores with the applied
//!   settings (enrolled as which box id, or refused with HQ's code), and whether the
//!   device certificate (`[hq] client_cert`) exists.

use std::path::Path;

use branchline_provisioning::claim::ClaimCode;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use super::{sha256_hex, Source};
use crate::enroll::EnrollmentState;

/// The provisioning state.
#[derive(Debug, Clone, Serialize)]
pub struct State {
    /// This box's serial (`[provisioning] serial`, else `site.box_serial`).
    pub serial: Option<String>,
    /// Whether tokens can be applied here (`[provisioning]` set and its keys loaded).
    pub accepts_tokens: bool,
    /// Why not, when not.
    pub accepts_tokens_problem: Option<String>,
    /// The last applied bundle or token, if any.
    pub provisioned: Option<Provisioned>,
    /// Enrollment with HQ.
    pub enrollment: Enrollment,
    /// The box's claim QR (serial and claim code), when it has a serial.
    pub claim: Option<Claim>,
    /// Why there is no claim QR, when there is none.
    pub claim_problem: Option<String>,
}

/// The last applied bundle or token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provisioned {
    /// The site.
    pub site: String,
    /// HQ's URL.
    pub hq_url: Option<String>,
    /// When it was applied, Unix seconds.
    pub applied_at_s: i64,
    /// The same, RFC 3339.
    pub applied_at: String,
    /// A USB bundle or a QR token.
    pub source: Source,
    /// The token's id (16 hex digits; not a secret: it names the token in HQ's
    /// revocation list).
    pub token_id: String,
    /// The fields stored (names only).
    pub fields: Vec<String>,
}

/// Enrollment with HQ, as far as the box knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enrollment {
    /// `not_provisioned`, `pending` (provisioned, waiting for or talking to HQ),
    /// `enrolled` or `refused`.
    pub status: &'static str,
    /// HQ's box id, when enrolled.
    pub box_id: Option<String>,
    /// When enrolled or refused, ms since the Unix epoch.
    pub at_ms: Option<i64>,
    /// HQ's refusal, when refused.
    pub refusal: Option<HqRefusal>,
    /// Whether the device certificate exists (`None`: no `[hq]` section).
    pub certificate: Option<bool>,
}

/// HQ's answer refusing the enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HqRefusal {
    /// HQ's code (`token_used`, `expired`, ...).
    pub code: String,
    /// HQ's message.
    pub message: String,
}

/// The box's claim QR.
#[derive(Debug, Clone, Serialize)]
pub struct Claim {
    /// The serial.
    pub serial: String,
    /// The claim code, `XXXX-XXXX-XXXX-XXXX`.
    pub code: String,
    /// The QR's text (`BLC1:<serial>:<code>`).
    pub qr_text: String,
    /// The QR as an SVG document (rendered by `branchline_provisioning::qr`).
    pub svg: String,
}

impl Claim {
    /// The claim QR of `serial` with `code`.
    pub fn new(
        serial: &branchline_provisioning::payload::BoxSerial,
        code: &ClaimCode,
    ) -> Result<Claim, String> {
        let qr_text = branchline_provisioning::claim::qr_text(serial, code);
        let svg = branchline_provisioning::qr::Qr::encode(&qr_text)
            .map_err(|e| format!("claim QR: {e}"))?
            .to_svg();
        Ok(Claim {
            serial: serial.to_string(),
            code: code.text(),
            qr_text,
            svg,
        })
    }
}

/// Reads the last applied artifact from the store (`None`: not provisioned, or
/// factory-reset since).
pub fn provisioned(conn: &Connection) -> rusqlite::Result<Option<Provisioned>> {
    let mut stmt = conn
        .prepare("SELECT field, value, bundle_sha256 FROM provisioned_settings ORDER BY field")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let string = |field: &str| {
        rows.iter()
            .find(|(f, _, _)| f == field)
            .and_then(|(_, v, _)| serde_json::from_str::<String>(v).ok())
    };
    // The artifact of the enrollment token's row (every row has the same one, bar an
    // `enrollment` outcome recorded for it).
    let Some(sha) = rows
        .iter()
        .find(|(f, _, _)| f == "enrollment_token")
        .or_else(|| rows.first())
        .map(|(_, _, s)| s.clone())
    else {
        return Ok(None);
    };
    let Some((token_id, site, applied_at_s)) = conn
        .query_row(
            "SELECT token_id, site, applied_at_s FROM provisioning_bundles WHERE sha256 = ?1",
            [&sha],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?)),
        )
        .optional()?
    else {
        return Ok(None);
    };
    let from_token = string("enrollment_token").is_some_and(|t| sha256_hex(t.as_bytes()) == sha);
    Ok(Some(Provisioned {
        site: string("site").unwrap_or(site),
        hq_url: string("hq_url"),
        applied_at_s,
        applied_at: branchline_provisioning::time::rfc3339(
            u64::try_from(applied_at_s).unwrap_or_default(),
        ),
        source: if from_token {
            Source::Token
        } else {
            Source::Usb
        },
        token_id,
        fields: rows
            .iter()
            .map(|(f, _, _)| f.clone())
            .filter(|f| f != "enrollment")
            .collect(),
    }))
}

/// Enrollment as the store and the certificate file say.
pub fn enrollment(
    conn: &Connection,
    db: &Path,
    provisioned: bool,
    client_cert: Option<&Path>,
) -> Result<Enrollment, String> {
    let certificate = client_cert.map(Path::exists);
    let state = crate::enroll::state(conn, db).map_err(|e| e.to_string())?;
    let e = |status| Enrollment {
        status,
        box_id: None,
        at_ms: None,
        refusal: None,
        certificate,
    };
    Ok(match state {
        Some(EnrollmentState::Enrolled { box_id, at_ms, .. }) => Enrollment {
            box_id: Some(box_id),
            at_ms: Some(at_ms),
            ..e("enrolled")
        },
        Some(EnrollmentState::Refused {
            code,
            message,
            at_ms,
        }) => Enrollment {
            at_ms: Some(at_ms),
            refusal: Some(HqRefusal { code, message }),
            ..e("refused")
        },
        None if provisioned => e("pending"),
        None => e("not_provisioned"),
    })
}
