//! `/api/v1/provisioning`: the provisioning state, and QR tokens applied from text or
//! a photo; the functions the provisioning page shares with these routes.
//!
//! | route | permission | answer |
//! | --- | --- | --- |
//! | `GET /api/v1/provisioning` | `provisioning.view` | [`State`]: serial, provisioned (site, HQ URL, when, `usb` or `token`), enrollment, claim QR (code, text, SVG) |
//! | `POST /api/v1/provisioning/token` `{"token"}` | `provisioning.operate` | [`Applied`]; the token or a link holding it |
//! | `POST /api/v1/provisioning/photo` (multipart, field `photo`) | `provisioning.operate` | [`Applied`]; a PNG or JPEG of at most 8 MiB, QR decoded on the box |
//!
//! Applying checks what a USB bundle's token is checked for (signature with the box's
//! trusted keys, expiry, serial, revocation, replay) and writes the enrollment
//! settings, marks the token used and appends the audit row (`apply_token`, resource
//! `provisioning`, target `token:<id>`) in ONE store transaction
//! ([`crate::provision::apply_opened`]); then `branchd` restarts with the settings
//! once no call is up, and enrolls with HQ. A refusal is audited (`failed`, with the
//! reason) and changes nothing else. The token text is never logged, audited or
//! shown back.
//!
//! Errors (JSON `{"error", "code", "problems"}`): 400 `invalid` (not a token,
//! tampered, unknown key, no QR in the photo, not an image), 422 `expired`,
//! `wrong_serial`, `revoked`, 409 `replayed` (used here before) or `not_configured`
//! (no `[provisioning]`), 413 photo too large.

use axum::extract::{Multipart, State as AxumState};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ApiError, ApiState, Authed};
use crate::audit::{self, AuditEntry, AuditResult};
use crate::error::Error;
use crate::provision::local::{LocalProvisioning, PhotoError, MAX_TOKEN_TEXT};
use crate::provision::state::{self, Claim, State};
use crate::provision::{self, ApplyError, Outcome, Reason, Refused};
use crate::rbac::{Action, Resource, Target};

/// The daemon's provisioning handle, or 409 when this API is not served by one.
pub(crate) fn local(state: &ApiState) -> Result<&LocalProvisioning, ApiError> {
    state
        .status()
        .and_then(|s| s.provisioning())
        .ok_or_else(|| {
            coded(
                StatusCode::CONFLICT,
                "not_configured",
                "provisioning is not available: this API is not served by a running daemon",
            )
        })
}

fn coded(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
    let message = message.into();
    ApiError {
        status,
        body: json!({ "error": message, "code": code, "problems": [] }),
        retry_after_s: None,
    }
}

/// The API error of a refusal.
pub(crate) fn refusal_error(field: &str, r: &Refused) -> ApiError {
    let (status, code) = match r.reason {
        Reason::Invalid => (StatusCode::BAD_REQUEST, "invalid"),
        Reason::Expired => (StatusCode::UNPROCESSABLE_ENTITY, "expired"),
        Reason::WrongSerial => (StatusCode::UNPROCESSABLE_ENTITY, "wrong_serial"),
        Reason::Revoked => (StatusCode::UNPROCESSABLE_ENTITY, "revoked"),
        Reason::Replayed => (StatusCode::CONFLICT, "replayed"),
    };
    ApiError {
        status,
        body: json!({
            "error": r.message,
            "code": code,
            "problems": [{ "field": field, "message": r.message }],
        }),
        retry_after_s: None,
    }
}

fn invalid(field: &str, message: String) -> ApiError {
    refusal_error(
        field,
        &Refused {
            reason: Reason::Invalid,
            message,
        },
    )
}

/// The state for `who` (already allowed `provisioning.view`).
pub(crate) fn read_state(state: &ApiState) -> Result<State, ApiError> {
    let local = state.status().and_then(|s| s.provisioning());
    let reader = state.reader()?;
    let conn = reader.connection();
    let db = reader.path().to_owned();
    let store = |e: rusqlite::Error| {
        ApiError::from(Error::Sqlite {
            path: db.clone(),
            op: "read provisioning state",
            source: e,
        })
    };
    let provisioned = state::provisioned(conn).map_err(store)?;
    let enrollment = state::enrollment(
        conn,
        &db,
        provisioned.is_some(),
        local.and_then(LocalProvisioning::client_cert),
    )
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let (claim, claim_problem) = match local {
        None => (None, Some("not served by a running daemon".to_owned())),
        Some(l) => match (l.serial(), l.claim()) {
            (Some(serial), Ok(code)) => match Claim::new(serial, code) {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(e)),
            },
            (_, Err(e)) => (None, Some(e.to_owned())),
            (None, Ok(_)) => (None, Some("this box has no serial".to_owned())),
        },
    };
    let accepts = local.map_or(Err("not served by a running daemon"), |l| {
        l.verifier().map(|_| ())
    });
    Ok(State {
        serial: local.and_then(|l| l.serial()).map(ToString::to_string),
        accepts_tokens: accepts.is_ok(),
        accepts_tokens_problem: accepts.err().map(str::to_owned),
        provisioned,
        enrollment,
        claim,
        claim_problem,
    })
}

/// What a token says, for the page's confirm step (verified and checked, nothing
/// written).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Inspection {
    /// The token text (trimmed), for the confirm form.
    #[serde(skip)]
    pub(crate) text: String,
    /// Token id.
    pub(crate) token_id: String,
    /// Site.
    pub(crate) site: String,
    /// HQ's URL.
    pub(crate) hq_url: String,
    /// Expiry, RFC 3339.
    pub(crate) expires_at: String,
    /// Serials it allows.
    pub(crate) serials: Vec<String>,
}

/// Takes the token out of `input` (text or link), or says why not.
fn token_in(input: &str) -> Result<String, ApiError> {
    if input.len() > MAX_TOKEN_TEXT {
        return Err(invalid(
            "token",
            format!(
                "{} characters: a token is at most {MAX_TOKEN_TEXT}",
                input.len()
            ),
        ));
    }
    provision::local::token_text(input).ok_or_else(|| {
        invalid(
            "token",
            format!(
                "not a Branchline token: it must start with {:?} (or be a link to this page carrying one)",
                branchline_provisioning::token::PREFIX
            ),
        )
    })
}

/// Verifies and checks the token in `input` without applying it.
pub(crate) fn inspect(state: &ApiState, input: &str) -> Result<Inspection, ApiError> {
    let local = local(state)?;
    let verifier = local
        .verifier()
        .map_err(|e| coded(StatusCode::CONFLICT, "not_configured", e))?;
    let text = token_in(input)?;
    let opened = provision::open_token(&text, verifier).map_err(|r| refusal_error("token", &r))?;
    let reader = state.reader()?;
    match provision::precheck(reader.connection(), &opened, verifier, now_s(state)) {
        Ok(None) => {}
        Ok(Some(_)) => return Err(already_applied(&opened)),
        Err(ApplyError::Refused(r)) => return Err(refusal_error("token", &r)),
        Err(ApplyError::Store(e)) => {
            return Err(Error::Sqlite {
                path: reader.path().to_owned(),
                op: "check provisioning token",
                source: e,
            }
            .into())
        }
    }
    let e = &opened.token.enrollment;
    Ok(Inspection {
        text: opened.token.text.clone(),
        token_id: e.token_id.to_string(),
        site: e.site.to_string(),
        hq_url: e.hq_url.to_string(),
        expires_at: branchline_provisioning::time::rfc3339(e.expires_at),
        serials: e.serials.iter().map(ToString::to_string).collect(),
    })
}

fn already_applied(opened: &provision::Opened) -> ApiError {
    coded(
        StatusCode::CONFLICT,
        "replayed",
        format!(
            "token {} was already applied on this box",
            opened.token.enrollment.token_id
        ),
    )
}

fn now_s(state: &ApiState) -> u64 {
    u64::try_from(state.now() / 1000).unwrap_or_default()
}

/// A token applied.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Applied {
    /// `applied`.
    pub(crate) status: &'static str,
    /// The site.
    pub(crate) site: String,
    /// The token's id.
    pub(crate) token_id: String,
    /// Fields written.
    pub(crate) fields: Vec<&'static str>,
    /// What happens next.
    pub(crate) next: &'static str,
}

/// What `branchd` does after a token is applied.
pub(crate) const NEXT: &str =
    "branchd restarts with the provisioned settings once no call is up, then enrolls with HQ";

/// Verifies the token in `input` and applies it (see the module doc); `via` (`page`:
/// the provisioning page's confirm step, `api`, `photo`) goes into the audit row.
pub(crate) async fn apply(
    state: &ApiState,
    who: &Authed,
    input: &str,
    via: &'static str,
) -> Result<Applied, ApiError> {
    let local = local(state)?.clone();
    let now_ms = state.now();
    let refused = |target: String, field: &str, r: Refused| {
        let entry = AuditEntry {
            actor: who.actor(),
            action: "apply_token".to_owned(),
            resource: Resource::Provisioning.as_str().to_owned(),
            target,
            result: AuditResult::Failed,
            detail: json!({ "via": via, "reason": r.reason, "error": r.message }),
        };
        (entry, refusal_error(field, &r))
    };
    let verifier = match local.verifier() {
        Ok(v) => v,
        Err(e) => return Err(coded(StatusCode::CONFLICT, "not_configured", e)),
    };
    let opened = match token_in(input).and_then(|text| {
        provision::open_token(&text, verifier).map_err(|r| refusal_error("token", &r))
    }) {
        Ok(o) => o,
        Err(e) => {
            let r = Refused {
                reason: Reason::Invalid,
                message: e.message().to_owned(),
            };
            let (entry, _) = refused("token".to_owned(), "token", r);
            if let Err(a) = state.accounts().audit(entry, now_ms).await {
                tracing::warn!(error = %a, "refused token not audited");
            }
            return Err(e);
        }
    };
    let target = format!("token:{}", opened.token.enrollment.token_id);
    let actor = who.actor();
    let job_local = local.clone();
    let job_target = target.clone();
    let now = now_s(state);
    let result = state
        .accounts()
        .writer()
        .transact("apply provisioning token", move |tx, path| {
            let verifier = job_local.verifier().map_err(|e| Error::Invalid {
                entity: "provisioning token",
                key: String::new(),
                problems: vec![crate::error::FieldProblem {
                    field: "token".into(),
                    message: e.to_owned(),
                }],
            })?;
            let (result, detail, outcome) =
                match provision::apply_opened(tx, &opened, verifier, now) {
                    Ok(Outcome::Applied { site, fields }) => (
                        AuditResult::Ok,
                        json!({ "via": via, "site": site, "fields": fields }),
                        Ok((site, fields)),
                    ),
                    Ok(_) => {
                        let r = Refused {
                            reason: Reason::Replayed,
                            message: format!(
                                "token {} was already applied on this box",
                                opened.token.enrollment.token_id
                            ),
                        };
                        (
                            AuditResult::Failed,
                            json!({ "via": via, "reason": r.reason, "error": r.message }),
                            Err(r),
                        )
                    }
                    Err(ApplyError::Refused(r)) => (
                        AuditResult::Failed,
                        json!({ "via": via, "reason": r.reason, "error": r.message }),
                        Err(r),
                    ),
                    Err(ApplyError::Store(source)) => {
                        return Err(Error::Sqlite {
                            path: path.to_owned(),
                            op: "apply provisioning token",
                            source,
                        })
                    }
                };
            audit::append(
                tx,
                path,
                &AuditEntry {
                    actor,
                    action: "apply_token".to_owned(),
                    resource: Resource::Provisioning.as_str().to_owned(),
                    target: job_target,
                    result,
                    detail,
                },
                now_ms,
            )?;
            Ok((outcome, opened.token.enrollment.token_id.to_string()))
        })
        .await;
    match result {
        Ok((Ok((site, fields)), token_id)) => {
            tracing::info!(site, token_id, via, user = %who.subject().username, "provisioning token applied");
            local.notify_applied(&site);
            Ok(Applied {
                status: "applied",
                site,
                token_id,
                fields,
                next: NEXT,
            })
        }
        Ok((Err(r), token_id)) => {
            tracing::warn!(token_id, via, error = %r, "provisioning token refused; nothing applied");
            Err(refusal_error("token", &r))
        }
        Err(e) => {
            let (entry, _) = refused(
                target,
                "token",
                Refused {
                    reason: Reason::Invalid,
                    message: e.to_string(),
                },
            );
            if let Err(a) = state.accounts().audit(entry, now_ms).await {
                tracing::warn!(error = %a, "failed token apply not audited");
            }
            Err(e.into())
        }
    }
}

/// The token in a photo (`field` names the form field in errors).
pub(crate) async fn photo_token(state: &ApiState, bytes: Vec<u8>) -> Result<String, ApiError> {
    let local = local(state)?;
    local.decode_photo(bytes).await.map_err(|e| match e {
        PhotoError::Failed(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        e => invalid("photo", e.to_string()),
    })
}

/// The fields of a photo upload: `csrf` (the page's forms) and `photo` (bounded by the
/// route's body limit).
#[derive(Debug, Default)]
pub(crate) struct PhotoForm {
    /// The `csrf` field, if any.
    pub(crate) csrf: Option<String>,
    /// The photo's bytes, or why there are none.
    pub(crate) photo: Option<Vec<u8>>,
}

/// Reads a multipart photo upload; a body over the limit is a 413.
pub(crate) async fn read_photo_form(mut form: Multipart) -> Result<PhotoForm, ApiError> {
    let mut out = PhotoForm::default();
    let too_big_or_bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            coded(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the photo is larger than {} MiB",
                    provision::local::MAX_PHOTO_BYTES / (1024 * 1024)
                ),
            )
        } else {
            invalid("photo", format!("not a readable upload: {}", e.body_text()))
        }
    };
    while let Some(field) = form.next_field().await.map_err(too_big_or_bad)? {
        match field.name() {
            // As bytes, not `Field::text`: that decodes by the part's charset with
            // encoding_rs, whose tables for every legacy encoding cost the box's
            // binary ~0.2 MB (BENCHMARKS.md, ARM builds) for a token that is ASCII.
            Some("csrf") => {
                let bytes = field.bytes().await.map_err(too_big_or_bad)?;
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    invalid("csrf", "the form's token is not UTF-8 text".to_owned())
                })?;
                out.csrf = Some(text);
            }
            Some("photo") => {
                let bytes = field.bytes().await.map_err(too_big_or_bad)?;
                if !bytes.is_empty() {
                    out.photo = Some(bytes.to_vec());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Largest body of the photo routes: the photo and the form's overhead.
pub(crate) const PHOTO_BODY_LIMIT: usize = provision::local::MAX_PHOTO_BYTES + 64 * 1024;

async fn require(
    state: &ApiState,
    who: &Authed,
    action: Action,
    what: &str,
) -> Result<(), ApiError> {
    let reader = state.reader()?;
    state
        .require(
            &reader,
            who,
            Resource::Provisioning,
            action,
            &Target::Site,
            what,
        )
        .await?;
    Ok(())
}

/// `GET /api/v1/provisioning`.
pub(super) async fn get_state(
    AxumState(state): AxumState<ApiState>,
    who: Authed,
) -> Result<Json<State>, ApiError> {
    require(&state, &who, Action::View, "provisioning").await?;
    Ok(Json(read_state(&state)?))
}

/// `POST /api/v1/provisioning/token` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenBody {
    token: String,
}

/// `POST /api/v1/provisioning/token`.
pub(super) async fn post_token(
    AxumState(state): AxumState<ApiState>,
    who: Authed,
    body: Result<Json<TokenBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Applied>, ApiError> {
    require(&state, &who, Action::Operate, "provisioning/token").await?;
    let Json(body) = body.map_err(|e| invalid("token", e.body_text()))?;
    Ok(Json(apply(&state, &who, &body.token, "api").await?))
}

/// `POST /api/v1/provisioning/photo`.
pub(super) async fn post_photo(
    AxumState(state): AxumState<ApiState>,
    who: Authed,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Json<Applied>, ApiError> {
    require(&state, &who, Action::Operate, "provisioning/photo").await?;
    let form = form.map_err(|e| invalid("photo", e.body_text()))?;
    let photo = read_photo_form(form).await?.photo.ok_or_else(|| {
        invalid(
            "photo",
            "no photo in the upload (field \"photo\")".to_owned(),
        )
    })?;
    let token = photo_token(&state, photo).await?;
    Ok(Json(apply(&state, &who, &token, "photo").await?))
}
