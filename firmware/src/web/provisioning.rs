//! The provisioning page (`/provisioning`): the state (provisioned or not, from a USB
//! stick or a QR token, enrolled or not), this box's serial and claim QR, and a QR
//! token applied three ways:
//!
//! - pasted into the form (`POST /provisioning/token`),
//! - the link a phone's camera app opens from a QR code
//!   (`GET /provisioning/token?t=<percent-encoded token>`; a GET never applies),
//! - a photo of the QR code (`POST /provisioning/photo`, multipart, PNG or JPEG of at
//!   most 8 MiB, decoded on the box).
//!
//! Each of the three shows a confirm page with what the verified token says (site, HQ,
//! expiry), already checked against expiry, serial, revocation and replay; its
//! "Apply" button posts the token to `POST /provisioning/apply`, which applies it
//! through the API's function (one store transaction with the audit row, then the
//! daemon restarts once no call is up). The page needs `provisioning.view`; the forms,
//! the link and the confirm step `provisioning.operate`, and the POSTs the session's
//! CSRF token (a hidden field, also in the multipart form). A bad token or photo
//! answers its 4xx with the page and the reason; nothing is applied.

use std::net::IpAddr;

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;

use super::pages::{date_time, layout, page};
use super::{may, page_user, ClientIp, WebState};
use crate::api::provisioning::{self as prov, Applied, Inspection};
use crate::api::{ApiError, Authed};
use crate::provision::state::State as ProvState;
use crate::provision::Source;
use crate::rbac::{Action, Resource, Target};

const PAGE: &str = "/provisioning";

/// What the page shows above the state.
enum Banner {
    /// A token verified and checked: confirm to apply it.
    Confirm(Inspection),
    /// Applied.
    Applied(Applied),
    /// Refused (the status is the response's).
    Refused(String),
}

fn view_of(state: &WebState, who: &Authed) -> (bool, Result<ProvState, String>) {
    let may_apply = may(
        state,
        who,
        Resource::Provisioning,
        Action::Operate,
        &Target::Site,
    );
    let st = prov::read_state(&state.api).map_err(|e| e.message().to_owned());
    (may_apply, st)
}

fn render(state: &WebState, who: &Authed, status: StatusCode, banner: Option<Banner>) -> Response {
    let (may_apply, st) = view_of(state, who);
    page(
        status,
        layout(
            "Provisioning",
            Some(who),
            PAGE,
            body(who, may_apply, &st, banner.as_ref()),
        ),
    )
}

/// The inline SVG of the claim QR, without its XML declaration (invalid inside HTML).
fn svg_markup(svg: &str) -> Markup {
    let svg = svg.find("<svg").map_or(svg, |at| &svg[at..]);
    // Rendered by the qrcode crate from our own text: elements and numbers only.
    PreEscaped(svg.to_owned())
}

fn body(
    who: &Authed,
    may_apply: bool,
    st: &Result<ProvState, String>,
    banner: Option<&Banner>,
) -> Markup {
    html! {
        h1 { "Provisioning" }
        @match banner {
            Some(Banner::Confirm(i)) => {
                section.card.wide #confirm {
                    h2 { "Apply this token?" }
                    dl {
                        dt { "Site" } dd { (i.site) }
                        dt { "HQ" } dd { code { (i.hq_url) } }
                        dt { "Expires" } dd { (i.expires_at) }
                        dt { "For boxes" } dd { (i.serials.join(", ")) }
                        dt { "Token id" } dd { code { (i.token_id) } }
                    }
                    p.muted { "The signature, expiry, serial, revocation and first use were checked. Applying replaces the provisioned settings; the box then restarts (once no call is up) and enrolls with HQ. You will have to log in again." }
                    form.inline method="post" action="/provisioning/apply" data-busy="Applying…" {
                        input type="hidden" name="csrf" value=(who.csrf_token());
                        input type="hidden" name="token" value=(i.text);
                        button type="submit" { "Apply the token" }
                        " "
                        a.button href=(PAGE) { "Cancel" }
                    }
                }
            }
            Some(Banner::Applied(a)) => {
                section.card.wide #applied {
                    p.notice.ok role="status" {
                        "Token " code { (a.token_id) } " applied for site " strong { (a.site) } ". "
                        "The box restarts with these settings once no call is up, then enrolls with HQ; reload this page in a few seconds (you will have to log in again)."
                    }
                }
            }
            Some(Banner::Refused(message)) => {
                section.card.wide #refused {
                    p.bad role="alert" { "Nothing was applied: " (message) }
                }
            }
            None => {}
        }
        @match st {
            Err(e) => { p.bad { "The provisioning state cannot be read: " (e) } }
            Ok(st) => { (state_cards(who, may_apply, st)) }
        }
    }
}

fn state_cards(who: &Authed, may_apply: bool, st: &ProvState) -> Markup {
    html! {
        div.cards {
            section.card #state {
                h2 { "State" }
                dl {
                    dt { "Serial" } dd #serial { (st.serial.as_deref().unwrap_or("not set")) }
                    @match &st.provisioned {
                        None => { dt { "Provisioned" } dd { span.pill.warn #provisioned { "not provisioned" } } }
                        Some(p) => {
                            dt { "Provisioned" }
                            dd {
                                span.pill.ok #provisioned { "provisioned" }
                                " from "
                                (match p.source { Source::Usb => "a USB stick", Source::Token => "a QR token" })
                            }
                            dt { "Site" } dd #site { (p.site) }
                            dt { "HQ" } dd { code { (p.hq_url.as_deref().unwrap_or("-")) } }
                            dt { "When" } dd { (p.applied_at) }
                            dt { "Token id" } dd { code { (p.token_id) } }
                        }
                    }
                    dt { "Enrollment" }
                    dd #enrollment {
                        @match st.enrollment.status {
                            "enrolled" => {
                                span.pill.ok { "enrolled" }
                                @if let Some(id) = &st.enrollment.box_id { " as " code { (id) } }
                                @if let Some(at) = st.enrollment.at_ms { " · " (date_time(at)) " UTC" }
                            }
                            "refused" => {
                                span.pill.bad { "refused by HQ" }
                                @if let Some(r) = &st.enrollment.refusal { " " code { (r.code) } ": " (r.message) }
                            }
                            "pending" if st.enrollment.certificate.is_none() => {
                                span.pill.warn { "not enrolled" }
                                " enrollment needs an [hq] section in branchd.toml"
                            }
                            "pending" => { span.pill.busy { "waiting to enroll with HQ" } }
                            _ => { span.pill.warn { "not enrolled" } }
                        }
                    }
                    dt { "Device certificate" }
                    dd {
                        @match st.enrollment.certificate {
                            Some(true) => { "present" }
                            Some(false) => { "none yet" }
                            None => { span.muted { "no [hq] section in branchd.toml" } }
                        }
                    }
                }
            }
            section.card #claim {
                h2 { "This box's claim QR" }
                @match &st.claim {
                    Some(c) => {
                        p.muted { "HQ scans this to claim the box for a site (serial and claim code)." }
                        div.qr { (svg_markup(&c.svg)) }
                        dl {
                            dt { "Serial" } dd { code { (c.serial) } }
                            dt { "Claim code" } dd { code #claim-code { (c.code) } }
                        }
                    }
                    None => { p.bad { "No claim QR: " (st.claim_problem.as_deref().unwrap_or("unknown")) } }
                }
            }
            section.card #apply {
                h2 { "Apply a QR token" }
                @if !st.accepts_tokens {
                    p.bad { "Tokens cannot be applied here: " (st.accepts_tokens_problem.as_deref().unwrap_or("unknown")) }
                } @else if !may_apply {
                    p.muted { "This needs the permission " code { "provisioning.operate" } "." }
                } @else {
                    form.stack method="post" action="/provisioning/token" {
                        input type="hidden" name="csrf" value=(who.csrf_token());
                        label for="token" { "Token text (BL1:…) or link" }
                        textarea #token name="token" rows="4" required spellcheck="false" autocomplete="off" {}
                        button type="submit" { "Check the token" }
                    }
                    form.stack method="post" action="/provisioning/photo" enctype="multipart/form-data" data-busy="Reading the QR code…" {
                        input type="hidden" name="csrf" value=(who.csrf_token());
                        label for="photo" { "Or a photo of the QR code (PNG or JPEG, at most 8 MiB)" }
                        input #photo type="file" name="photo" accept="image/png,image/jpeg" capture="environment" required;
                        button type="submit" { "Read the photo" }
                    }
                    p.muted { "A phone's camera can also open the token's link to this page directly." }
                }
            }
        }
        p.muted #tool-busy role="status" {}
    }
}

/// The page with `e` as the refusal, at `e`'s status.
fn refused(state: &WebState, who: &Authed, e: &ApiError) -> Response {
    let message = e
        .problems()
        .first()
        .cloned()
        .unwrap_or_else(|| e.message().to_owned());
    render(state, who, e.status(), Some(Banner::Refused(message)))
}

/// `GET /provisioning`.
pub(super) async fn provisioning_page(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    match page_user(
        &state,
        &headers,
        ip,
        None,
        PAGE,
        (Resource::Provisioning, Action::View),
    )
    .await
    {
        Ok(who) => render(&state, &who, StatusCode::OK, None),
        Err(r) => r,
    }
}

async fn operator(
    state: &WebState,
    headers: &HeaderMap,
    ip: IpAddr,
    csrf: Option<&str>,
    path: &str,
) -> Result<Authed, Response> {
    page_user(
        state,
        headers,
        ip,
        csrf,
        path,
        (Resource::Provisioning, Action::Operate),
    )
    .await
}

fn confirm(state: &WebState, who: &Authed, input: &str) -> Response {
    match prov::inspect(&state.api, input) {
        Ok(i) => render(state, who, StatusCode::OK, Some(Banner::Confirm(i))),
        Err(e) => refused(state, who, &e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

/// `POST /provisioning/token`: the pasted token's confirm page.
pub(super) async fn token_form(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    match operator(&state, &headers, ip, Some(&form.csrf), PAGE).await {
        Ok(who) => confirm(&state, &who, &form.token),
        Err(r) => r,
    }
}

/// `GET /provisioning/token?t=...`: the link's confirm page (never applies).
pub(super) async fn token_link(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    // The query's `t` is read percent-decoded but with `+` kept (a base45
    // character), not with form decoding.
    let path = uri
        .path_and_query()
        .map_or(PAGE.to_owned(), |p| p.as_str().to_owned());
    let who = match operator(&state, &headers, ip, None, &path).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if uri.query().is_none() {
        return Redirect::to(PAGE).into_response();
    }
    confirm(&state, &who, &path)
}

/// `POST /provisioning/photo`: the photo's confirm page.
pub(super) async fn photo_form(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    // The session and permission first, so nobody else gets a photo read and decoded;
    // the CSRF token is a field of the upload: read the form (bounded), then check it.
    if let Err(r) = operator(&state, &headers, ip, None, PAGE).await {
        return r;
    }
    let form = match form {
        Ok(f) => prov::read_photo_form(f).await,
        Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, e.body_text())),
    };
    let csrf = form
        .as_ref()
        .ok()
        .and_then(|f| f.csrf.clone())
        .unwrap_or_default();
    let who = match operator(&state, &headers, ip, Some(&csrf), PAGE).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let photo = match form {
        Ok(f) => f.photo,
        Err(e) => return refused(&state, &who, &e),
    };
    let Some(photo) = photo else {
        return render(
            &state,
            &who,
            StatusCode::BAD_REQUEST,
            Some(Banner::Refused("no photo was uploaded".to_owned())),
        );
    };
    match prov::photo_token(&state.api, photo).await {
        Ok(token) => confirm(&state, &who, &token),
        Err(e) => refused(&state, &who, &e),
    }
}

/// `POST /provisioning/apply`: applies the confirmed token.
pub(super) async fn apply_form(
    State(state): State<WebState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let who = match operator(&state, &headers, ip, Some(&form.csrf), PAGE).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    match prov::apply(&state.api, &who, &form.token, "page").await {
        Ok(a) => render(&state, &who, StatusCode::OK, Some(Banner::Applied(a))),
        Err(e) => refused(&state, &who, &e),
    }
}

#[cfg(test)]
mod tests;
