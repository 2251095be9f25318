//! `GET /api/v1/events` (the agents' screen-pop stream, Server-Sent Events) and
//! `POST /api/v1/calls` (click-to-call).
//!
//! **Events** are about queue calls and direct calls to the phone an agent is logged
//! in on (`queue` null), and agents' state changes. Without parameters the caller must be an agent (`users.agent_id`) and
//! gets the events about themselves (`calls.view` on their own record). `?agent=ID`
//! follows another agent: `calls.view` on that agent's record (owned by the agent's
//! user, with the user's groups: a supervisor reaches the agents of the groups they
//! administer, an admin every agent; an agent ID no user holds needs `site`).
//! `?queue=NAME` follows a queue's calls: `queues.view` (site) to subscribe, then each
//! event is checked like `?agent=` for the agent it is about and left out when the
//! caller may not see that agent's calls (as `reports/agents` filters its rows).
//! Agent-state events come with `agent` subscriptions, not queue ones, and so do
//! `leads` events: campaign leads the agent took or was assigned (preview mode), each
//! lead as `GET /api/v1/leads/{id}` shows it to the subscriber (left out when they may
//! not view it; numbers masked unless `numbers.view` covers it).
//!
//! Each event is checked again when it is sent, with the user and roles as they are
//! then (a disabled user's stream ends; a role that lost the grant stops receiving),
//! and its caller number is masked by the rules of `/api/v1/cdrs` (unmasked for an
//! extension, or with `numbers.view` over the agent's record). `contact` is the caller's customer record (name,
//! type, owner, and its last three service records with their notes and dispositions,
//! `history`; [`contact_for`]) when the subscriber may view it, else null.
//! `transferred_from` (null unless the call was transferred to this agent) names the
//! call it continues (`call_id`), who transferred it (`by`, masked like the caller) and,
//! when `contact` is shown, that call's `notes`: the customer's context goes with a
//! transferred call to the new agent's desktop. The stream sends
//! a keep-alive comment every [`KEEP_ALIVE`] and ends when the session does (logout,
//! expiry); an open stream counts as activity for the session's idle timeout. A
//! stream that falls more than [`crate::screen_pop::EVENT_BUFFER`] events behind gets
//! a `lagged` event with the number it missed, and goes on. 503 when the daemon's
//! event feed is not running, only after the caller passed the check (a caller who
//! may not follow the agent or queue gets the 403 whatever runs).
//!
//! **Click-to-call.** `{"to": "<digits>", "from"?: "<extension>"}`: `calls.operate` on
//! the record of the phone's owner (`own` for the caller's own phone: the extension
//! they are logged in on as an agent, else their user's extension; another extension
//! needs `group` or `site` over its owner). `to` is what the phone would dial, or an
//! E.164 number (`+` and up to 15 digits), dialled through the outside line in the
//! site's national or international form (`crate::call::e164_dialable`; 409 without
//! an outside-line prefix). Answers 202 `{call_id, from, to}`; 400 for
//! a bad field (named), 403, 404 for an unknown extension, 409 when the phone is busy
//! or the caller has no phone, 503 (after the 403 check) when the daemon is not
//! running. Audited (`click_to_call`, ok or
//! failed with the reason).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use rusqlite::OptionalExtension;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, ApiState, Authed};
use crate::acd::{AgentId, QueueName};
use crate::audit;
use crate::call::{AgentCallKind, ClickToCallError};
use crate::mask::NumberDirectory;
use crate::rbac::{Action, GroupId, Resource, Target, UserId};
use crate::screen_pop::{ClickError, ClickPhone, ClickRequest, DeskEvent};
use crate::store::StoreReader;

/// How often an idle stream sends a keep-alive comment (and checks its session).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

type Owners = BTreeMap<String, (UserId, Vec<GroupId>)>;

/// What a stream follows.
#[derive(Debug, Clone)]
enum Follow {
    Agent(AgentId),
    Queue(QueueName),
}

impl Follow {
    fn wants(&self, e: &DeskEvent) -> bool {
        match self {
            Follow::Agent(a) => e.agent() == a,
            Follow::Queue(q) => e.queue() == Some(q.as_str()),
        }
    }
}

/// The record of agent `id` for the authorizer: owned by its user, with the user's
/// groups; nobody's when no user holds the ID.
fn agent_target(owners: &Owners, id: &str) -> Target {
    match owners.get(id) {
        Some((user, groups)) => Target::Owned {
            owner: Some(*user),
            groups: groups.clone(),
        },
        None => Target::Owned {
            owner: None,
            groups: Vec::new(),
        },
    }
}

fn owners(reader: &StoreReader) -> Result<Owners, ApiError> {
    crate::reports::agent_owners(reader.connection(), reader.path()).map_err(|e| {
        tracing::error!(error = %e, "agent owners not read");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })
}

/// A user's agent ID and extension.
pub(super) fn user_phone(
    reader: &StoreReader,
    user: UserId,
) -> Result<(Option<String>, Option<String>), ApiError> {
    reader
        .connection()
        .query_row(
            "SELECT agent_id, extension FROM users WHERE id = ?1",
            [user.0],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            tracing::error!(error = %e, "user's agent ID not read");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        })
}

fn queue_exists(reader: &StoreReader, name: &QueueName) -> Result<bool, ApiError> {
    reader
        .connection()
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM queues WHERE name = ?1)",
            [name.as_str()],
            |r| r.get(0),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "queues not read");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        })
}

/// The caller's customer record for `number` (`customers::lookup_by_number`: the
/// box's own customer first, then HQ's shared directory), when `subject` may view it:
/// `contacts.view` over the customer's owner and the owner's groups (an unowned
/// record, such as HQ's shared directory, needs `site` scope). `None`: no record, or
/// one the subscriber may not see (the caller-ID name is in `caller.name` anyway).
/// The record carries no numbers, so nothing in it needs masking.
fn contact_for(
    reader: &StoreReader,
    authz: &crate::rbac::Authorizer,
    subject: &crate::rbac::Subject,
    number: &str,
) -> Option<Value> {
    if number.is_empty() {
        return None;
    }
    let m = crate::customers::lookup_by_number(reader.connection(), number)?;
    let mut groups: Vec<GroupId> = match m.owner_user_id {
        Some(u) => reader
            .connection()
            .prepare_cached("SELECT group_id FROM group_members WHERE user_id = ?1")
            .and_then(|mut s| {
                s.query_map([u.0], |r| r.get(0).map(GroupId))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| tracing::warn!(error = %e, "customer owner's groups not read"))
            .ok()?,
        None => Vec::new(),
    };
    if let Some(g) = m.owner_group_id {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let target = Target::Owned {
        owner: m.owner_user_id,
        groups,
    };
    if !authz
        .authorize(subject, Resource::Contacts, Action::View, &target)
        .is_allowed()
    {
        return None;
    }
    // The customer's last calls, so the agent sees the history as the phone rings.
    let history: Vec<Value> = crate::customers::service::for_customer(
        reader.connection(),
        reader.path(),
        m.id,
        SCREEN_POP_HISTORY,
    )
    .map_err(|e| tracing::warn!(error = %e, "service records not read for the screen pop"))
    .unwrap_or_default()
    .into_iter()
    .map(|r| {
        json!({
            "call_id": r.call_id,
            "started_at_ms": r.started_at_ms,
            "direction": r.direction,
            "agent_id": r.agent_id,
            "user": r.user,
            "talk_ms": r.talk_ms,
            "outcome": r.outcome,
            "disposition": r.disposition,
            "notes": r.notes,
        })
    })
    .collect();
    Some(json!({
        "id": m.id,
        "name": m.name,
        "type": m.type_digit,
        "type_name": m.type_name,
        "owner": m.owner,
        "owner_group": m.owner_group,
        "history": history,
    }))
}

/// How many of the customer's last service records a screen pop carries.
const SCREEN_POP_HISTORY: usize = 3;

/// `GET /api/v1/events`: see the module docs.
pub(super) async fn events(
    State(state): State<ApiState>,
    who: Authed,
    q: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(p) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    if let Some(bad) = p.keys().find(|k| !["agent", "queue"].contains(&k.as_str())) {
        return Err(ApiError::invalid(
            bad,
            "unknown parameter; this route takes agent or queue",
        ));
    }
    if p.contains_key("agent") && p.contains_key("queue") {
        return Err(ApiError::invalid("queue", "give agent or queue, not both"));
    }
    let follow = {
        let reader = state.reader()?;
        let (follow, resource, target, name) = match (p.get("agent"), p.get("queue")) {
            (Some(a), _) => {
                let id: AgentId = a.parse().map_err(|e: crate::error::InvalidValue| {
                    ApiError::invalid("agent", e.to_string())
                })?;
                let owners = owners(&reader)?;
                if !owners.contains_key(id.as_str()) {
                    return Err(ApiError::invalid(
                        "agent",
                        format!("no user has agent ID {id}"),
                    ));
                }
                let target = agent_target(&owners, id.as_str());
                let name = format!("agent {id}");
                (Follow::Agent(id), Resource::Calls, target, name)
            }
            (None, Some(qn)) => {
                let name: QueueName = qn.parse().map_err(|e: crate::error::InvalidValue| {
                    ApiError::invalid("queue", e.to_string())
                })?;
                if !queue_exists(&reader, &name)? {
                    return Err(ApiError::invalid("queue", format!("no queue {name}")));
                }
                let label = format!("queue {name}");
                (Follow::Queue(name), Resource::Queues, Target::Site, label)
            }
            (None, None) => {
                let (agent, _) = user_phone(&reader, who.subject().user_id)?;
                let Some(agent) = agent else {
                    return Err(ApiError::invalid(
                        "agent",
                        "you have no agent ID: give agent or queue to follow",
                    ));
                };
                let id: AgentId = agent.parse().map_err(|e: crate::error::InvalidValue| {
                    ApiError::invalid("agent", e.to_string())
                })?;
                let name = format!("agent {id}");
                (Follow::Agent(id), Resource::Calls, who.own_target(), name)
            }
        };
        state
            .require(&reader, &who, resource, Action::View, &target, &name)
            .await?;
        follow
    };
    // Only now: a caller who may not follow this gets the 403, whatever runs.
    let feed = state.status().and_then(|s| s.events()).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon's events are not running",
        )
    })?;
    let rx = feed.subscribe();
    let ctx = Arc::new(StreamCtx { state, who, follow });
    // Each turn waits for the next event the subject may see, or a keep-alive; `None`
    // (session over, user gone, daemon stopping) ends the stream.
    let events = stream::unfold((rx, ctx), |(mut rx, ctx)| async move {
        loop {
            let next = tokio::time::timeout(KEEP_ALIVE, rx.recv()).await;
            let alive = ctx.session_alive();
            let event = match next {
                _ if !alive => None,
                Err(_) => Some(Event::default().comment("keep-alive")),
                Ok(Err(RecvError::Closed)) => None,
                Ok(Err(RecvError::Lagged(missed))) => Some(
                    Event::default()
                        .event("lagged")
                        .data(json!({ "type": "lagged", "missed": missed }).to_string()),
                ),
                Ok(Ok(e)) => {
                    if !ctx.follow.wants(&e) {
                        continue;
                    }
                    match ctx.render(&e) {
                        Ok(Some(v)) => Some(Event::default().event(e.name()).data(v.to_string())),
                        Ok(None) => continue,
                        // The user is gone or disabled: the stream ends.
                        Err(()) => None,
                    }
                }
            };
            return event.map(|ev| (Ok(ev), (rx, ctx)));
        }
    });
    Ok(Sse::new(events))
}

/// What a stream needs to check and render events.
struct StreamCtx {
    state: ApiState,
    who: Authed,
    follow: Follow,
}

impl StreamCtx {
    fn session_alive(&self) -> bool {
        let now = self.state.now();
        super::lock(&self.state.inner.sessions)
            .touch(&self.who.token, now)
            .is_some()
    }

    /// The JSON of `e` for this stream's user as they are now: `Ok(None)` when they may
    /// not see it, `Err` when the stream must end (user gone, disabled, store error).
    fn render(&self, e: &DeskEvent) -> Result<Option<Value>, ()> {
        let reader = self.state.reader().map_err(|_| ())?;
        let subject =
            crate::accounts::load_subject(&reader, self.who.subject().user_id, self.state.now())
                .map_err(|_| ())?;
        if !subject.enabled || subject.locked {
            return Err(());
        }
        let authz = self.state.authorizer(&reader).map_err(|_| ())?;
        let owners = owners(&reader).map_err(|_| ())?;
        let target = agent_target(&owners, e.agent().as_str());
        if !authz
            .authorize(&subject, Resource::Calls, Action::View, &target)
            .is_allowed()
        {
            return Ok(None);
        }
        Ok(Some(match e {
            DeskEvent::AgentState {
                agent,
                state,
                extension,
                call_id,
                at_ms,
            } => json!({
                "type": "agent_state",
                "agent": agent.as_str(),
                "state": state,
                "extension": extension,
                "call_id": call_id,
                "at_ms": at_ms,
            }),
            DeskEvent::Leads {
                agent,
                campaign,
                leads,
                at_ms,
            } => {
                // Each lead as `/api/v1/leads/{id}` shows it to this user; leads they
                // may not view (or gone since) are left out.
                let leads: Vec<Value> = leads
                    .iter()
                    .filter_map(|&id| {
                        super::campaigns::lead_for_stream(
                            &self.state,
                            &reader,
                            &authz,
                            &subject,
                            id,
                        )
                    })
                    .collect();
                json!({
                    "type": "leads",
                    "agent": agent.as_str(),
                    "campaign": campaign,
                    "leads": leads,
                    "at_ms": at_ms,
                })
            }
            DeskEvent::Call(c) => {
                // Masked like a CDR of the agent's: unmasked for an extension, or with
                // `numbers.view` over the agent's record.
                let dir = NumberDirectory::load(&reader).map_err(|_| ())?;
                let unmask = authz
                    .authorize(&subject, Resource::Numbers, Action::View, &target)
                    .is_allowed();
                let n = &c.caller_number;
                let masked = !(n.is_empty() || unmask || dir.is_extension(n));
                let number = if masked {
                    self.state.mask_pattern().mask(n)
                } else {
                    n.clone()
                };
                let contact = contact_for(&reader, &authz, &subject, &c.caller_number);
                // A transferred call: the call it continues, who transferred it and,
                // to whoever may see the customer, that call's notes.
                let transferred_from = c.transferred_from.as_ref().map(|hop| {
                    let by = &hop.transferred_by;
                    let by = if by.is_empty() || unmask || dir.is_extension(by) {
                        by.clone()
                    } else {
                        self.state.mask_pattern().mask(by)
                    };
                    let notes = if contact.is_some() {
                        crate::customers::service::notes_of_call(
                            reader.connection(),
                            reader.path(),
                            &hop.call_id,
                        )
                        .map_err(|e| tracing::warn!(error = %e, "notes of the transferred call not read"))
                        .unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    json!({ "call_id": hop.call_id, "by": by, "notes": notes })
                });
                let mut v = json!({
                    "type": e.name(),
                    "call_id": c.call_id,
                    "agent": c.agent.as_str(),
                    "extension": c.extension,
                    "queue": c.queue,
                    "caller": {
                        "number": number,
                        "name": c.caller_name,
                        "masked": masked,
                    },
                    "contact": contact,
                    "transferred_from": transferred_from,
                    "since_ms": c.since_ms,
                    "at_ms": c.at_ms,
                });
                if let AgentCallKind::Ended { end, talk_ms } = c.kind {
                    v["disposition"] = json!(end.as_str());
                    v["talk_ms"] = json!(talk_ms);
                }
                v
            }
        }))
    }
}

/// The body of `POST /api/v1/calls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClickBody {
    to: Option<String>,
    from: Option<String>,
}

/// `POST /api/v1/calls`: see the module docs.
pub(super) async fn click_to_call(
    State(state): State<ApiState>,
    who: Authed,
    body: Result<Json<ClickBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::invalid("body", e.body_text()))?;
    let to = body
        .to
        .ok_or_else(|| ApiError::invalid("to", "required: the number to call, digits"))?;
    // `+` and digits: an E.164 outside number, dialled through the outside line in
    // the site's national or international form (call::e164_dialable).
    let outside = to.starts_with('+');
    let digits = to.strip_prefix('+').unwrap_or(&to);
    let max = if outside {
        crate::call::MAX_E164_DIGITS
    } else {
        24
    };
    if digits.is_empty() || digits.len() > max || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid(
            "to",
            "1 to 24 digits 0-9, as the phone would dial it, or + and 1 to 15 digits \
             (an E.164 number, dialled through the outside line)",
        ));
    }
    if let Some(f) = &body.from {
        if f.is_empty() || f.len() > 10 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::invalid("from", "an extension number (digits)"));
        }
    }
    let (phone, audit_target) = {
        let reader = state.reader()?;
        let (agent, extension) = user_phone(&reader, who.subject().user_id)?;
        let (phone, target, label) = match body.from {
            Some(from) if Some(&from) != extension.as_ref() => {
                // The owner of the phone (nobody's phone needs `site`); whether the
                // extension exists (FXS or SIP) is call control's answer (404).
                let dir = NumberDirectory::load(&reader)?;
                let target = dir
                    .call_targets(&from, "")
                    .into_iter()
                    .next()
                    .unwrap_or(Target::Site);
                let label = format!("extension {from}");
                (ClickPhone::Extension(from), target, label)
            }
            _ => {
                let agent = agent.and_then(|a| a.parse::<AgentId>().ok());
                let label = match &extension {
                    Some(e) => format!("extension {e}"),
                    None => "own phone".to_owned(),
                };
                (
                    ClickPhone::Own { agent, extension },
                    who.own_target(),
                    label,
                )
            }
        };
        state
            .require(
                &reader,
                &who,
                Resource::Calls,
                Action::Operate,
                &target,
                &label,
            )
            .await?;
        (phone, label)
    };
    // Only now: a caller who may not place the call gets the 403, whatever runs.
    let status = state.status().cloned().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the daemon is not running")
    })?;
    let outcome = status
        .click_to_call(ClickRequest {
            phone,
            to: to.clone(),
            outside,
        })
        .await;
    let (result, detail) = match &outcome {
        Ok(s) => (
            audit::AuditResult::Ok,
            json!({ "call_id": s.call_id, "from": s.from, "to": to }),
        ),
        Err(e) => (
            audit::AuditResult::Failed,
            json!({ "to": to, "reason": e.to_string() }),
        ),
    };
    state
        .accounts()
        .audit(
            audit::AuditEntry {
                actor: who.actor(),
                action: "click_to_call".to_owned(),
                resource: Resource::Calls.as_str().to_owned(),
                target: audit_target,
                result,
                detail,
            },
            state.now(),
        )
        .await?;
    match outcome {
        Ok(s) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "call_id": s.call_id, "from": s.from, "to": to })),
        )
            .into_response()),
        Err(e) => Err(click_error(e)),
    }
}

/// The API's answer to a refused click-to-call (400 bad number, 403 the dial route
/// needs a calling permission the phone lacks, with `route` and `permission` in the
/// body, 404 unknown extension, 409 busy / no phone / no outside line, 503 stopping).
pub(super) fn click_error(e: ClickError) -> ApiError {
    let message = e.to_string();
    match e {
        ClickError::Call(ClickToCallError::NotPermitted { refused, .. }) => ApiError {
            status: StatusCode::FORBIDDEN,
            body: json!({
                "error": message,
                "route": refused.route,
                "permission": refused.permission,
            }),
            retry_after_s: None,
        },
        ClickError::Call(ClickToCallError::BadNumber { .. }) => ApiError::invalid("to", message),
        ClickError::Call(ClickToCallError::UnknownExtension(_)) => {
            ApiError::new(StatusCode::NOT_FOUND, message)
        }
        ClickError::Call(ClickToCallError::Busy(_) | ClickToCallError::NoOutsideLine(_))
        | ClickError::NoPhone => ApiError::new(StatusCode::CONFLICT, message),
        ClickError::Stopping => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message),
    }
}
