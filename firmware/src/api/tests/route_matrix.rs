//! The route matrix of `/api/v1` (issue 8): every route [`build`] serves, asked by
//! nobody and by a user of each built-in role, against an expectation WRITTEN OUT
//! here from the documented policy (`firmware/roles/builtin.toml` and the permission
//! each route names in the OpenAPI document), not computed with the server's
//! [`Authorizer`]: a route that lets a role through that the policy refuses, or
//! refuses one it allows, fails. A route served but missing from [`ROWS`] fails too.
//!
//! - **Allowed** means not 401/403 and never 5xx (400, 404, 409 are answers the
//!   handler gave after the check).
//! - **Denied** means 403 with a JSON reason naming the permission, exactly one new
//!   audit row `denied` by that user, and nothing else in the store changed.
//! - **Nobody** (no session) gets 401, except the login and the OpenAPI document.
//! - **Refusal first**: on a box that no main loop runs, nobody still gets 401 and
//!   each denied role 403, never a 503 about what the box runs.
//! - **CSRF**: every POST/PUT/PATCH/DELETE but the login, by the admin without the
//!   token and with a wrong one: 403 and the store unchanged, row for row.
//!
//! Every row runs on a fresh copy of one fixture box (users of each role, a team,
//! a customer, a campaign with an attempt, a recording, a voicemail...), and a
//! state-changing row gives each allowed role a copy of its own, so no row's
//! outcome depends on another's. Nothing reaches the box: the port tests ask for
//! port 9, which the four-port test board does not have (404); the test main loop
//! (`live_status`) has a call up, so a reboot without `force` is refused (409); the
//! tools get input they refuse before running anything (count 0, a bad host or URI,
//! 0 seconds); click-to-call is only recorded.

use std::path::Path;

use crate::store;

use super::*;

/// The built-in roles and the fixture user holding each.
const ROLES: [(&str, &str); 7] = [
    (ADMIN, "ada"),
    (SUP, "sue"),
    (AGENT, "olga"),
    (QI, "quinn"),
    (FIN, "fay"),
    (TECH, "tess"),
    (INST, "installer"),
];
const ADMIN: &str = "admin";
const SUP: &str = "supervisor";
const AGENT: &str = "agent";
const QI: &str = "quality_inspector";
const FIN: &str = "finance";
const TECH: &str = "technician";
const INST: &str = "installer";
/// Every role: routes that only need a session.
const ALL: &[&str] = &[ADMIN, SUP, AGENT, QI, FIN, TECH, INST];

/// Tables a denial may write to: the audit row, its chain head and its outbox row.
const AUDIT_TABLES: &[&str] = &["audit_log", "audit_head", "outbox", "sqlite_sequence"];

/// Who may call a route.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// Anyone, without a session (login, the OpenAPI document).
    Public,
    /// These roles; everyone else gets 403 naming `needs` (or one of `a|b` when the
    /// route checks two permissions or refuses in words).
    Roles(&'static [&'static str], &'static str),
}

/// A request body.
#[derive(Debug, Clone, Copy)]
enum Payload {
    None,
    Json(&'static str),
    Csv(&'static str),
    /// A multipart upload with a `photo` field that is no photo.
    Photo,
}

/// One route of the matrix: the route as `build` names it, the request that
/// exercises it (placeholders `{olga}`, `{team}`, ... filled from the fixture), and
/// who may call it.
struct Row {
    method: Method,
    path: &'static str,
    uri: &'static str,
    payload: Payload,
    who: Who,
}

const fn row(
    method: Method,
    path: &'static str,
    uri: &'static str,
    payload: Payload,
    who: Who,
) -> Row {
    Row {
        method,
        path,
        uri,
        payload,
        who,
    }
}

const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PUT: Method = Method::PUT;
const PATCH: Method = Method::PATCH;
const DELETE: Method = Method::DELETE;
use Payload::{Csv, Json, Photo};
const NO: Payload = Payload::None;
use Who::{Public, Roles};

const CAMPAIGN: &str = r#"{"name": "Spring", "list_id": {list}, "group_id": {team}, "mode": "preview",
    "hours_start": "00:00", "hours_end": "24:00",
    "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "max_attempts": 3,
    "busy_retry_s": 300, "no_answer_retry_s": 900, "failed_retry_s": 120, "ring_timeout_s": 30}"#;

/// The expectation, route by route, from `firmware/roles/builtin.toml`:
///
/// | role | grants (scope) |
/// | --- | --- |
/// | admin | everything (all) |
/// | supervisor | users view (group), edit (own); groups view (group); calls view, listen, download, operate (group); recordings view, listen, download (group); reports view, export (group); queues view, operate (site); agents view, operate (group); voicemail view (group); contacts view, edit (group); blacklist view (site); numbers view (group); campaigns all but export (site) |
/// | agent | users view, edit (own); calls view, operate (own); agents view, operate (own); voicemail view, listen, delete (own); contacts view, edit (own); campaigns view, operate (own) |
/// | quality_inspector | users view, edit (own); recordings view, listen (site); calls view (site); reports view (site) |
/// | finance | users view, edit (own); reports view, export (site); calls view, export (site) |
/// | technician | users view, edit (own); diagnostics view, operate, download (site); system_config view, operate (site); sync view, operate (site) |
/// | installer | provisioning view, add, edit, operate (site); diagnostics view (site) |
///
/// The fixture's records: `{olga}` is the agent's user (in the supervisor's team),
/// agent 100 is hers, customer 1, call c1, recording 1 and voicemail `{voicemail}`
/// are hers, campaign 1 runs for the team over lead list 1 and her lead 1.
const ROWS: &[Row] = &[
    // Sessions and the caller's own account.
    row(POST, "/api/v1/session", "/api/v1/session", Json(r#"{"username": "ada", "password": "a-Good-passphrase-42"}"#), Public),
    row(DELETE, "/api/v1/session", "/api/v1/session", NO, Roles(ALL, "")),
    row(GET, "/api/v1/me", "/api/v1/me", NO, Roles(ALL, "")),
    // "Every role except installer may view and edit its own user."
    row(POST, "/api/v1/me/password", "/api/v1/me/password",
        Json(r#"{"old_password": "a-Good-passphrase-42", "new_password": "new-Good-pass-99"}"#),
        Roles(&[ADMIN, SUP, AGENT, QI, FIN, TECH], "users.edit")),
    // Users: the list follows the caller's scope (own, group, site).
    row(GET, "/api/v1/users", "/api/v1/users", NO, Roles(&[ADMIN, SUP, AGENT, QI, FIN, TECH], "users.view")),
    row(POST, "/api/v1/users", "/api/v1/users",
        Json(r#"{"username": "newbie", "password": "a-Good-passphrase-42", "roles": ["agent"]}"#),
        Roles(&[ADMIN], "users.add")),
    row(GET, "/api/v1/users/export", "/api/v1/users/export", NO, Roles(&[ADMIN], "users.export")),
    row(POST, "/api/v1/users/import", "/api/v1/users/import",
        Csv("username,display_name,extension,agent_id,enabled,roles,groups\nkim,Kim,,,true,agent,\n"),
        Roles(&[ADMIN], "users.import")),
    row(GET, "/api/v1/users/{id}", "/api/v1/users/{olga}", NO, Roles(&[ADMIN, SUP, AGENT], "users.view")),
    row(PATCH, "/api/v1/users/{id}", "/api/v1/users/{olga}", Json(r#"{"display_name": "Olga B."}"#),
        Roles(&[ADMIN, AGENT], "users.edit")),
    row(DELETE, "/api/v1/users/{id}", "/api/v1/users/{olga}", NO, Roles(&[ADMIN], "users.delete")),
    row(POST, "/api/v1/users/{id}/password", "/api/v1/users/{olga}/password",
        Json(r#"{"new_password": "another-Good-pass-77"}"#), Roles(&[ADMIN, AGENT], "users.edit")),
    // Roles and groups: lists need site scope.
    row(GET, "/api/v1/roles", "/api/v1/roles", NO, Roles(&[ADMIN], "roles.view")),
    row(POST, "/api/v1/roles", "/api/v1/roles",
        Json(r#"{"name": "day_desk", "description": "Day desk", "permissions": []}"#),
        Roles(&[ADMIN], "roles.add")),
    row(GET, "/api/v1/roles/{id}", "/api/v1/roles/{role}", NO, Roles(&[ADMIN], "roles.view")),
    row(PUT, "/api/v1/roles/{id}", "/api/v1/roles/{role}",
        Json(r#"{"name": "night_desk", "description": "Night desk v2", "permissions": []}"#),
        Roles(&[ADMIN], "roles.edit")),
    row(DELETE, "/api/v1/roles/{id}", "/api/v1/roles/{role}", NO, Roles(&[ADMIN], "roles.delete")),
    row(GET, "/api/v1/groups", "/api/v1/groups", NO, Roles(&[ADMIN], "groups.view")),
    row(POST, "/api/v1/groups", "/api/v1/groups", Json(r#"{"name": "night", "description": "", "members": []}"#),
        Roles(&[ADMIN], "groups.add")),
    row(GET, "/api/v1/groups/{id}", "/api/v1/groups/{team}", NO, Roles(&[ADMIN, SUP], "groups.view")),
    row(PUT, "/api/v1/groups/{id}", "/api/v1/groups/{team}",
        Json(r#"{"name": "team", "description": "the floor", "members": []}"#), Roles(&[ADMIN], "groups.edit")),
    row(DELETE, "/api/v1/groups/{id}", "/api/v1/groups/{team}", NO, Roles(&[ADMIN], "groups.delete")),
    // Calls and agents.
    row(GET, "/api/v1/cdrs", "/api/v1/cdrs?since=0", NO, Roles(&[ADMIN, SUP, AGENT, QI, FIN], "calls.view")),
    row(GET, "/api/v1/events", "/api/v1/events?agent=100", NO, Roles(&[ADMIN, SUP, AGENT, QI, FIN], "calls.view")),
    row(GET, "/api/v1/agents/{agent}", "/api/v1/agents/100", NO, Roles(&[ADMIN, SUP, AGENT], "agents.view")),
    // Only the agent themselves logs in from the desktop ("own only").
    row(POST, "/api/v1/agents/{agent}/login", "/api/v1/agents/100/login", NO,
        Roles(&[AGENT], "agents.operate|log in only themselves")),
    row(POST, "/api/v1/agents/{agent}/logout", "/api/v1/agents/100/logout", NO, Roles(&[ADMIN, SUP, AGENT], "agents.operate")),
    row(POST, "/api/v1/agents/{agent}/pause", "/api/v1/agents/100/pause", NO, Roles(&[ADMIN, SUP, AGENT], "agents.operate")),
    row(POST, "/api/v1/agents/{agent}/unpause", "/api/v1/agents/100/unpause", NO, Roles(&[ADMIN, SUP, AGENT], "agents.operate")),
    row(PUT, "/api/v1/agents/{agent}/extension-mode", "/api/v1/agents/100/extension-mode", Json(r#"{"mode": "login"}"#),
        Roles(&[ADMIN], "agents.edit")),
    row(POST, "/api/v1/calls", "/api/v1/calls", Json(r#"{"to": "+4930555777"}"#), Roles(&[ADMIN, SUP, AGENT], "calls.operate")),
    row(GET, "/api/v1/calls/active", "/api/v1/calls/active", NO, Roles(&[ADMIN, TECH, INST], "diagnostics.view")),
    row(POST, "/api/v1/calls/{call_id}/notes", "/api/v1/calls/c1/notes", Json(r#"{"text": "called back"}"#),
        Roles(&[ADMIN, SUP, AGENT], "calls.operate")),
    // Reports: the queue report needs site scope, the agent report follows the scope.
    row(GET, "/api/v1/reports/queues", "/api/v1/reports/queues?from=0&to=86400000", NO,
        Roles(&[ADMIN, QI, FIN], "reports.view")),
    row(GET, "/api/v1/reports/agents", "/api/v1/reports/agents?from=0&to=86400000", NO,
        Roles(&[ADMIN, SUP, QI, FIN], "reports.view")),
    // Audit and sync.
    row(GET, "/api/v1/audit", "/api/v1/audit", NO, Roles(&[ADMIN], "audit.view")),
    row(POST, "/api/v1/audit/verify", "/api/v1/audit/verify", NO, Roles(&[ADMIN], "audit.audit")),
    row(GET, "/api/v1/sync", "/api/v1/sync", NO, Roles(&[ADMIN, TECH], "sync.view")),
    row(POST, "/api/v1/sync/force", "/api/v1/sync/force", NO, Roles(&[ADMIN, TECH], "sync.operate")),
    // Diagnostics: the live status, its charts and the port tests.
    row(GET, "/api/v1/status", "/api/v1/status", NO, Roles(&[ADMIN, TECH, INST], "diagnostics.view")),
    row(GET, "/api/v1/events/status", "/api/v1/events/status", NO, Roles(&[ADMIN, TECH, INST], "diagnostics.view")),
    row(GET, "/api/v1/charts/calls-per-hour", "/api/v1/charts/calls-per-hour", NO,
        Roles(&[ADMIN, TECH, INST], "diagnostics.view")),
    row(GET, "/api/v1/charts/line", "/api/v1/charts/line", NO, Roles(&[ADMIN, TECH, INST], "diagnostics.view")),
    row(GET, "/api/v1/charts/call-quality", "/api/v1/charts/call-quality", NO,
        Roles(&[ADMIN, TECH, INST], "diagnostics.view")),
    row(GET, "/api/v1/charts/sync-backlog", "/api/v1/charts/sync-backlog", NO, Roles(&[ADMIN, TECH], "sync.view")),
    row(POST, "/api/v1/ports/{port}/ring-test", "/api/v1/ports/9/ring-test", NO, Roles(&[ADMIN, TECH], "diagnostics.operate")),
    row(POST, "/api/v1/ports/{port}/line-test", "/api/v1/ports/9/line-test", NO, Roles(&[ADMIN, TECH], "diagnostics.operate")),
    row(POST, "/api/v1/ports/{port}/loopback-test", "/api/v1/ports/9/loopback-test", NO,
        Roles(&[ADMIN, TECH], "diagnostics.operate")),
    row(POST, "/api/v1/system/reboot", "/api/v1/system/reboot", Json("{}"), Roles(&[ADMIN, TECH], "system_config.operate")),
    row(GET, "/api/v1/sip", "/api/v1/sip", NO, Roles(&[ADMIN, TECH, INST], "diagnostics.view")),
    // The system page's JSON: the same permission as the page.
    row(GET, "/api/v1/system", "/api/v1/system", NO, Roles(&[ADMIN, TECH], "system_config.view")),
    // Queues and the call center.
    row(GET, "/api/v1/queues", "/api/v1/queues", NO, Roles(&[ADMIN, SUP], "queues.view")),
    row(GET, "/api/v1/call-center", "/api/v1/call-center", NO, Roles(&[ADMIN, SUP], "queues.view")),
    row(PUT, "/api/v1/queues/{name}", "/api/v1/queues/support",
        Json(r#"{"number": "7002", "strategy": "ring_all", "members": [{"agent_id": "100"}]}"#),
        Roles(&[ADMIN], "queues.edit")),
    row(DELETE, "/api/v1/queues/{name}", "/api/v1/queues/sales", NO, Roles(&[ADMIN], "queues.delete")),
    // Blacklist.
    row(GET, "/api/v1/blacklist", "/api/v1/blacklist", NO, Roles(&[ADMIN, SUP], "blacklist.view")),
    row(POST, "/api/v1/blacklist", "/api/v1/blacklist", Json(r#"{"pattern": "5550002", "reason": "spam"}"#),
        Roles(&[ADMIN], "blacklist.add")),
    row(GET, "/api/v1/blacklist/mode", "/api/v1/blacklist/mode", NO, Roles(&[ADMIN, SUP], "blacklist.view")),
    row(PUT, "/api/v1/blacklist/mode", "/api/v1/blacklist/mode",
        Json(r#"{"mode": "allow", "default_action": "congestion"}"#), Roles(&[ADMIN], "blacklist.edit")),
    row(DELETE, "/api/v1/blacklist/{id}", "/api/v1/blacklist/{blacklist}", NO, Roles(&[ADMIN], "blacklist.delete")),
    // Voicemail: the supervisor may see their team's messages, not play or delete them.
    row(GET, "/api/v1/voicemail", "/api/v1/voicemail", NO, Roles(&[ADMIN, SUP, AGENT], "voicemail.view")),
    row(GET, "/api/v1/voicemail/{id}/audio", "/api/v1/voicemail/{voicemail}/audio", NO,
        Roles(&[ADMIN, AGENT], "voicemail.listen")),
    row(DELETE, "/api/v1/voicemail/{id}", "/api/v1/voicemail/{voicemail}", NO, Roles(&[ADMIN, AGENT], "voicemail.delete")),
    // Recordings: the agent has none, the technician none.
    row(GET, "/api/v1/recordings", "/api/v1/recordings", NO, Roles(&[ADMIN, SUP, QI], "recordings.view")),
    row(GET, "/api/v1/recordings/{id}/audio", "/api/v1/recordings/1/audio", NO, Roles(&[ADMIN, SUP, QI], "recordings.listen")),
    // Customers: adding, deleting, import and export need a role that grants them.
    row(GET, "/api/v1/customers", "/api/v1/customers", NO, Roles(&[ADMIN, SUP, AGENT], "contacts.view")),
    row(POST, "/api/v1/customers", "/api/v1/customers", Json(r#"{"name": "Newco", "numbers": ["5550123"], "owner": "olga"}"#),
        Roles(&[ADMIN], "contacts.add")),
    row(GET, "/api/v1/customers/export", "/api/v1/customers/export", NO, Roles(&[ADMIN], "contacts.export")),
    row(POST, "/api/v1/customers/import", "/api/v1/customers/import", Csv("name,numbers\nImported,5550100\n"),
        Roles(&[ADMIN], "contacts.import")),
    row(GET, "/api/v1/customers/{id}", "/api/v1/customers/1", NO, Roles(&[ADMIN, SUP, AGENT], "contacts.view")),
    row(PUT, "/api/v1/customers/{id}", "/api/v1/customers/1",
        Json(r#"{"name": "Walk Customer Ltd", "numbers": ["13812345678"], "owner": "olga"}"#),
        Roles(&[ADMIN, SUP, AGENT], "contacts.edit")),
    row(DELETE, "/api/v1/customers/{id}", "/api/v1/customers/1", NO, Roles(&[ADMIN], "contacts.delete")),
    row(GET, "/api/v1/customers/{id}/service-records", "/api/v1/customers/1/service-records", NO,
        Roles(&[ADMIN, SUP, AGENT], "contacts.view")),
    row(POST, "/api/v1/customers/{id}/dial", "/api/v1/customers/1/dial", Json("{}"),
        Roles(&[ADMIN, SUP, AGENT], "contacts.view|calls.operate")),
    // The customer schema is the box's configuration.
    row(GET, "/api/v1/customer-fields", "/api/v1/customer-fields", NO, Roles(&[ADMIN, SUP, AGENT], "contacts.view")),
    row(POST, "/api/v1/customer-fields", "/api/v1/customer-fields", Json(r#"{"name": "age", "type": "integer"}"#),
        Roles(&[ADMIN], "system_config.edit")),
    row(PUT, "/api/v1/customer-fields/{name}", "/api/v1/customer-fields/region",
        Json(r#"{"name": "region", "type": "text", "label": "Region"}"#), Roles(&[ADMIN], "system_config.edit")),
    row(DELETE, "/api/v1/customer-fields/{name}", "/api/v1/customer-fields/region", NO, Roles(&[ADMIN], "system_config.edit")),
    row(GET, "/api/v1/customer-types", "/api/v1/customer-types", NO, Roles(&[ADMIN, SUP, AGENT], "contacts.view")),
    row(PUT, "/api/v1/customer-types/{digit}", "/api/v1/customer-types/2", Json(r#"{"name": "client"}"#),
        Roles(&[ADMIN], "system_config.edit")),
    row(DELETE, "/api/v1/customer-types/{digit}", "/api/v1/customer-types/1", NO, Roles(&[ADMIN], "system_config.edit")),
    // Campaigns: set up by supervisors (site), worked by the team's agents (own).
    row(GET, "/api/v1/lead-lists", "/api/v1/lead-lists", NO, Roles(&[ADMIN, SUP], "campaigns.view")),
    row(POST, "/api/v1/lead-lists", "/api/v1/lead-lists", Json(r#"{"name": "Autumn"}"#), Roles(&[ADMIN, SUP], "campaigns.add")),
    row(GET, "/api/v1/lead-lists/{id}", "/api/v1/lead-lists/{list}", NO, Roles(&[ADMIN, SUP], "campaigns.view")),
    row(DELETE, "/api/v1/lead-lists/{id}", "/api/v1/lead-lists/{list}", NO, Roles(&[ADMIN, SUP], "campaigns.delete")),
    row(POST, "/api/v1/lead-lists/{id}/import", "/api/v1/lead-lists/{list}/import", Csv("name,numbers\nDora,7770009\n"),
        Roles(&[ADMIN, SUP], "campaigns.import")),
    row(GET, "/api/v1/lead-lists/{id}/leads", "/api/v1/lead-lists/{list}/leads", NO, Roles(&[ADMIN, SUP], "campaigns.view")),
    row(GET, "/api/v1/leads/{id}", "/api/v1/leads/{lead}", NO, Roles(&[ADMIN, SUP, AGENT], "campaigns.view")),
    row(GET, "/api/v1/campaigns", "/api/v1/campaigns", NO, Roles(&[ADMIN, SUP, AGENT], "campaigns.view")),
    row(POST, "/api/v1/campaigns", "/api/v1/campaigns", Json(CAMPAIGN), Roles(&[ADMIN, SUP], "campaigns.add")),
    row(GET, "/api/v1/campaigns/{id}", "/api/v1/campaigns/{campaign}", NO, Roles(&[ADMIN, SUP, AGENT], "campaigns.view")),
    row(PUT, "/api/v1/campaigns/{id}", "/api/v1/campaigns/{campaign}", Json(CAMPAIGN), Roles(&[ADMIN, SUP], "campaigns.edit")),
    row(DELETE, "/api/v1/campaigns/{id}", "/api/v1/campaigns/{campaign}", NO, Roles(&[ADMIN, SUP], "campaigns.delete")),
    row(POST, "/api/v1/campaigns/{id}/start", "/api/v1/campaigns/{campaign}/start", Json("{}"),
        Roles(&[ADMIN, SUP], "campaigns.operate")),
    row(POST, "/api/v1/campaigns/{id}/pause", "/api/v1/campaigns/{campaign}/pause", Json("{}"),
        Roles(&[ADMIN, SUP], "campaigns.operate")),
    row(POST, "/api/v1/campaigns/{id}/close", "/api/v1/campaigns/{campaign}/close", Json("{}"),
        Roles(&[ADMIN, SUP], "campaigns.operate")),
    row(POST, "/api/v1/campaigns/{id}/assign", "/api/v1/campaigns/{campaign}/assign",
        Json(r#"{"leads": [{lead}], "user_id": {olga}}"#), Roles(&[ADMIN, SUP], "campaigns.operate")),
    row(POST, "/api/v1/campaigns/{id}/next", "/api/v1/campaigns/{campaign}/next", Json("{}"),
        Roles(&[ADMIN, SUP, AGENT], "campaigns.operate")),
    row(GET, "/api/v1/campaigns/{id}/progress", "/api/v1/campaigns/{campaign}/progress", NO,
        Roles(&[ADMIN, SUP, AGENT], "campaigns.view")),
    row(POST, "/api/v1/campaigns/{id}/leads/{lead}/dial", "/api/v1/campaigns/{campaign}/leads/{lead}/dial", Json("{}"),
        Roles(&[ADMIN, SUP, AGENT], "campaigns.operate")),
    row(PUT, "/api/v1/campaign-attempts/{id}", "/api/v1/campaign-attempts/{attempt}", Json(r#"{"disposition": 2}"#),
        Roles(&[ADMIN, SUP, AGENT], "campaigns.operate")),
    row(GET, "/api/v1/campaign-settings", "/api/v1/campaign-settings", NO, Roles(&[ADMIN, SUP, AGENT], "campaigns.view")),
    row(PUT, "/api/v1/campaign-settings", "/api/v1/campaign-settings", Json(r#"{"next_leads": 5}"#),
        Roles(&[ADMIN], "system_config.edit")),
    // Tools: diagnostics.operate, the capture and the SIP trace diagnostics.download.
    row(POST, "/api/v1/tools/ping", "/api/v1/tools/ping", Json(r#"{"host": "127.0.0.1", "count": 0}"#),
        Roles(&[ADMIN, TECH], "diagnostics.operate")),
    row(POST, "/api/v1/tools/traceroute", "/api/v1/tools/traceroute", Json(r#"{"host": "-bad"}"#),
        Roles(&[ADMIN, TECH], "diagnostics.operate")),
    row(POST, "/api/v1/tools/sip-options", "/api/v1/tools/sip-options", Json(r#"{"uri": "not a uri"}"#), Roles(&[ADMIN, TECH], "diagnostics.operate")),
    row(POST, "/api/v1/tools/capture", "/api/v1/tools/capture", Json(r#"{"seconds": 0}"#),
        Roles(&[ADMIN, TECH], "diagnostics.download")),
    row(GET, "/api/v1/tools/bundle", "/api/v1/tools/bundle", NO, Roles(&[ADMIN, TECH], "diagnostics.download")),
    // The logs need diagnostics.view and system_config.view: the installer has only the first.
    row(GET, "/api/v1/logs", "/api/v1/logs", NO, Roles(&[ADMIN, TECH], "diagnostics.view|system_config.view")),
    row(GET, "/api/v1/sip/trace", "/api/v1/sip/trace", NO, Roles(&[ADMIN, TECH], "diagnostics.download")),
    row(GET, "/api/v1/events/sip-trace", "/api/v1/events/sip-trace", NO, Roles(&[ADMIN, TECH], "diagnostics.download")),
    // Provisioning: the installer and the admin.
    row(GET, "/api/v1/provisioning", "/api/v1/provisioning", NO, Roles(&[ADMIN, INST], "provisioning.view")),
    row(POST, "/api/v1/provisioning/token", "/api/v1/provisioning/token", Json(r#"{"token": "not-a-token"}"#),
        Roles(&[ADMIN, INST], "provisioning.operate")),
    row(POST, "/api/v1/provisioning/photo", "/api/v1/provisioning/photo", Photo, Roles(&[ADMIN, INST], "provisioning.operate")),
    row(GET, "/api/v1/openapi.json", "/api/v1/openapi.json", NO, Public),
];

/// The ids of the fixture's records, for the rows' placeholders.
#[derive(Debug, Clone)]
struct Ids(Vec<(&'static str, i64)>);

impl Ids {
    fn fill(&self, template: &str) -> String {
        let mut s = template.to_owned();
        for (name, id) in &self.0 {
            s = s.replace(&format!("{{{name}}}"), &id.to_string());
        }
        s
    }
}

/// The fixture box, built once and copied for every row.
struct Fixture {
    env: Env,
    ids: Ids,
}

/// A box over the store in `dir` (made or reopened), as `branchd` serves it: the
/// test main loop, the clock at `T0 + 1 h`.
fn open(dir: tempfile::TempDir, installer: bool) -> Env {
    let status = matrix_status(&dir);
    open_with(dir, installer, Some(status))
}

/// [`open`] with the main loop's `status` (`None`: no main loop runs, so nothing
/// that needs it, the agents' events, the tools, the charts, the SIP endpoint...).
fn open_with(
    dir: tempfile::TempDir,
    installer: bool,
    status: Option<crate::web::status::StatusHandle>,
) -> Env {
    let path = dir.path().join("branchline.db");
    let mut store = Store::open(&path).expect("open");
    if installer {
        let hash = crate::accounts::password::hash_secret(PASSWORD, FAST).expect("hash");
        crate::accounts::bootstrap_installer(&mut store, Some(&hash), dir.path(), FAST, T0)
            .expect("installer");
    }
    let (writer, _thread) = store.spawn_writer();
    let settings = AuthSettings {
        hash: FAST,
        ..AuthSettings::default()
    };
    let accounts = Accounts::new(writer, path, settings);
    let clock = Arc::new(AtomicI64::new(T0 + 3_600_000));
    let c = Arc::clone(&clock);
    let state = ApiState::with_status(
        accounts.clone(),
        MaskPattern::default(),
        Arc::new(move || c.load(Ordering::SeqCst)),
        SyncHandle::not_configured(),
        status,
    );
    Env {
        _dir: dir,
        accounts,
        state,
        clock,
    }
}

/// The test main loop's status ([`live_status`]) with the agents' event feed and
/// the tools (no OPTIONS probe is ever answered: the matrix sends none that runs).
fn matrix_status(dir: &tempfile::TempDir) -> crate::web::status::StatusHandle {
    let hub = crate::screen_pop::EventHub::default();
    let (probes, _) = tokio::sync::mpsc::unbounded_channel();
    let settings = crate::tools::ToolsSettings {
        hq_host: None,
        trunk_uri: None,
        sip_ports: Vec::new(),
        rtp_ports: None,
        config_file: None,
        secrets: Vec::new(),
        db_path: Some(dir.path().join("branchline.db")),
        board_model: "sim".into(),
    };
    live_status()
        .with_events(hub.feed())
        .with_tools(crate::tools::Tools::new(settings, probes, None))
}

fn created(r: &Reply, what: &str) -> i64 {
    assert!(r.status.is_success(), "{what}: {} {}", r.status, r.text);
    r.json()["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: {}", r.text))
}

impl Fixture {
    async fn build() -> Fixture {
        let env = open(tempfile::tempdir().expect("tempdir"), true);
        let writer = env.accounts.writer().clone();
        let ext = |n: &str, port| ExtensionRow {
            number: n.to_owned(),
            name: format!("ext {n}"),
            port: Some(port),
            call_waiting: true,
        };
        writer
            .replace_board(
                vec![(1, "fxs"), (2, "fxs"), (3, "fxs"), (4, "fxs")],
                vec![ext("101", 1), ext("102", 2), ext("103", 3), ext("104", 4)],
            )
            .await
            .expect("board");
        env.user("ada", &[ADMIN], None).await;
        let sue = env.user("sue", &[SUP], Some("104")).await;
        let olga = env
            .accounts
            .create_user(
                &Actor::system(),
                NewUser {
                    username: "olga".to_owned(),
                    password: PASSWORD.to_owned(),
                    agent_id: Some("100".to_owned()),
                    pin: Some("4821".to_owned()),
                    extension: Some("101".to_owned()),
                    enabled: true,
                    roles: vec![AGENT.to_owned()],
                    ..NewUser::default()
                },
                T0,
            )
            .await
            .expect("olga");
        env.user("quinn", &[QI], None).await;
        env.user("fay", &[FIN], None).await;
        env.user("tess", &[TECH], None).await;
        writer
            .insert_cdr(cdr("c1", CUSTOMER_IN, "101", Direction::Inbound))
            .await
            .expect("cdr");
        let ac = env.login("ada").await;
        let w = |method, uri: &'static str, body: Value| {
            let (env, ac) = (&env, &ac);
            async move { env.write(method, uri, ac, body).await }
        };
        let team = w(
            POST,
            "/api/v1/groups",
            json!({ "name": "team", "description": "",
                    "members": [{ "user_id": sue.id, "is_group_admin": true },
                                { "user_id": olga.id, "is_group_admin": false }] }),
        )
        .await;
        let team = created(&team, "group");
        let role = w(
            POST,
            "/api/v1/roles",
            json!({ "name": "night_desk", "description": "Night desk",
                    "permissions": [{ "resource": "calls", "action": "view", "scope": "site" }] }),
        )
        .await;
        let role = created(&role, "role");
        for (method, uri, body) in [
            (
                PUT,
                "/api/v1/customer-types/1",
                json!({ "name": "prospect" }),
            ),
            (
                POST,
                "/api/v1/customer-fields",
                json!({ "name": "region", "type": "text" }),
            ),
            (
                PUT,
                "/api/v1/queues/sales",
                json!({ "number": "7001", "strategy": "round_robin",
                        "members": [{ "agent_id": "100" }] }),
            ),
        ] {
            let r = w(method, uri, body).await;
            assert!(r.status.is_success(), "{uri}: {}", r.text);
        }
        let customer = w(
            POST,
            "/api/v1/customers",
            json!({ "name": "Walk Customer", "numbers": [CUSTOMER_IN], "owner": "olga" }),
        )
        .await;
        assert_eq!(created(&customer, "customer"), 1);
        let blacklist = w(
            POST,
            "/api/v1/blacklist",
            json!({ "pattern": "5550001", "reason": "spam" }),
        )
        .await;
        let blacklist = created(&blacklist, "blacklist");
        let list = created(
            &w(POST, "/api/v1/lead-lists", json!({ "name": "Spring" })).await,
            "lead list",
        );
        let r = env
            .send(
                POST,
                &format!("/api/v1/lead-lists/{list}/import"),
                Some(&ac),
                true,
                Some(("text/csv", "name,numbers\nAnn,7770001\n".to_owned())),
                "127.0.0.1",
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let campaign_body = CAMPAIGN
            .replace("{list}", &list.to_string())
            .replace("{team}", &team.to_string());
        let campaign = env
            .write(
                POST,
                "/api/v1/campaigns",
                &ac,
                serde_json::from_str(&campaign_body).expect("campaign json"),
            )
            .await;
        let campaign = created(&campaign, "campaign");
        let r = env
            .write(
                POST,
                &format!("/api/v1/campaigns/{campaign}/start"),
                &ac,
                json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        // Olga takes her next lead (Ann, lead `{lead}`) and dials it: attempt `{attempt}`.
        let oc = env.login("olga").await;
        let r = env
            .write(
                POST,
                &format!("/api/v1/campaigns/{campaign}/next"),
                &oc,
                json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let lead: i64 = {
            let reader = env.accounts.reader().expect("reader");
            reader
                .connection()
                .query_row(
                    "SELECT id FROM leads WHERE name = 'Ann' AND assigned_user_id = ?1",
                    [olga.id.0],
                    |r| r.get(0),
                )
                .expect("Ann is olga's")
        };
        let r = env
            .write(
                POST,
                &format!("/api/v1/campaigns/{campaign}/leads/{lead}/dial"),
                &oc,
                json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let attempt = r.json()["attempt"].as_i64().expect("attempt");
        voicemail::walk_message(&env, olga.id.0);
        let voicemail: i64 = {
            let reader = env.accounts.reader().expect("reader");
            reader
                .connection()
                .query_row("SELECT max(id) FROM voicemail_messages", [], |r| r.get(0))
                .expect("voicemail")
        };
        assert_eq!(recordings::add_recording(&env, "c1", 5).0, 1);
        let ids = Ids(vec![
            ("olga", olga.id.0),
            ("team", team),
            ("role", role),
            ("blacklist", blacklist),
            ("list", list),
            ("lead", lead),
            ("campaign", campaign),
            ("attempt", attempt),
            ("voicemail", voicemail),
        ]);
        Fixture { env, ids }
    }

    /// A fresh box: a copy of the fixture's data directory, the store copied by
    /// SQLite itself (`VACUUM INTO`, consistent while the fixture's writer runs).
    fn fresh(&self) -> Env {
        let dir = self.fresh_dir();
        open(dir, false)
    }

    /// A fresh box ([`Fixture::fresh`]) that no main loop runs ([`open_with`]).
    fn fresh_without_main_loop(&self) -> Env {
        open_with(self.fresh_dir(), false, None)
    }

    /// A copy of the fixture's data directory.
    fn fresh_dir(&self) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(self.env._dir.path(), dir.path());
        let from = rusqlite::Connection::open(self.env._dir.path().join("branchline.db"))
            .expect("open the fixture");
        let to = dir.path().join("branchline.db");
        from.execute("VACUUM INTO ?1", [to.to_str().expect("utf-8 path")])
            .expect("copy the store");
        dir
    }
}

/// Copies the files under `from` but the store's (copied by SQLite).
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("branchline.db")
        {
            continue;
        }
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// What a request got: status, the error message of a JSON error, the body.
struct Got {
    status: StatusCode,
    text: String,
}

impl Env {
    /// `row`'s request as `client` (with its CSRF token when `csrf`), reading the body
    /// unless it is an event stream (which never ends).
    async fn ask(&self, row: &Row, ids: &Ids, client: Option<&Client>, csrf: Option<&str>) -> Got {
        let uri = ids.fill(row.uri);
        let mut req = Request::builder().method(row.method.clone()).uri(&uri);
        if let Some(c) = client {
            req = req.header(header::COOKIE, &c.cookie);
        }
        if let Some(token) = csrf {
            req = req.header(CSRF_HEADER, token);
        }
        let body = match row.payload {
            Payload::None => Body::empty(),
            Payload::Json(text) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(ids.fill(text))
            }
            Payload::Csv(text) => {
                req = req.header(header::CONTENT_TYPE, "text/csv");
                Body::from(text)
            }
            Payload::Photo => {
                req = req.header(
                    header::CONTENT_TYPE,
                    "multipart/form-data; boundary=matrixboundary",
                );
                Body::from(
                    "--matrixboundary\r\nContent-Disposition: form-data; name=\"photo\"; \
                     filename=\"qr.jpg\"\r\nContent-Type: image/jpeg\r\n\r\nnot a photo\r\n\
                     --matrixboundary--\r\n",
                )
            }
        };
        let mut req = req.body(body).expect("request");
        let addr: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        req.extensions_mut().insert(ConnectInfo(addr));
        // A generous bound only turns a hang into a failure naming the route.
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            router(self.state.clone()).oneshot(req),
        )
        .await;
        let Ok(resp) = answer else {
            return Got {
                status: StatusCode::REQUEST_TIMEOUT,
                text: format!("no answer to {uri} in 30 s"),
            };
        };
        let resp = resp.expect("infallible");
        let status = resp.status();
        let stream = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let text = if stream {
            String::new()
        } else {
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Got { status, text }
    }

    fn db(&self) -> std::path::PathBuf {
        self._dir.path().join("branchline.db")
    }

    fn denials_of(&self, username: &str) -> usize {
        let reader = self.accounts.reader().expect("reader");
        audit::list(&reader, 0, 10_000)
            .expect("audit")
            .iter()
            .filter(|r| r.actor == username && r.result == "denied")
            .count()
    }
}

fn changes_state(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Every route served has its row, and every row a route.
#[tokio::test]
async fn every_served_route_has_a_row_in_the_matrix() {
    let env = env().await;
    let (_, served) = build(env.state.clone());
    let rows: Vec<(Method, &str)> = ROWS.iter().map(|r| (r.method.clone(), r.path)).collect();
    let missing: Vec<_> = served.iter().filter(|s| !rows.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "routes served without an expectation in ROWS: {missing:?}"
    );
    let stale: Vec<_> = rows.iter().filter(|r| !served.contains(r)).collect();
    assert!(stale.is_empty(), "rows for routes not served: {stale:?}");
    let mut seen = rows.clone();
    seen.sort_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
    seen.dedup();
    assert_eq!(seen.len(), rows.len(), "a route has two rows");
}

/// Each route, by nobody and by each role, gets what [`ROWS`] says.
/// The role matrix runs in this many tests, each over every `SHARDS`-th row: each
/// row logs in every role (argon2id), which under qemu-user (CI's aarch64 run, where
/// one test is killed after 6 minutes) would make one test over all rows too slow.
const SHARDS: usize = 8;

/// One `#[tokio::test]` per shard of a sharded matrix test `$run(shard)`.
macro_rules! shards {
    ($run:ident: $($name:ident = $shard:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            $run($shard).await;
        }
    )*};
}

shards! { every_route_answers_each_role_as_the_policy_says:
    every_route_answers_each_role_as_the_policy_says_shard_0 = 0;
    every_route_answers_each_role_as_the_policy_says_shard_1 = 1;
    every_route_answers_each_role_as_the_policy_says_shard_2 = 2;
    every_route_answers_each_role_as_the_policy_says_shard_3 = 3;
    every_route_answers_each_role_as_the_policy_says_shard_4 = 4;
    every_route_answers_each_role_as_the_policy_says_shard_5 = 5;
    every_route_answers_each_role_as_the_policy_says_shard_6 = 6;
    every_route_answers_each_role_as_the_policy_says_shard_7 = 7;
}

/// The rows of shard `shard` (every `SHARDS`-th row from it) answer each role as the
/// policy says.
async fn every_route_answers_each_role_as_the_policy_says(shard: usize) {
    let fixture = Fixture::build().await;
    let ids = &fixture.ids;
    let mut failures = Vec::new();
    for row in ROWS.iter().skip(shard).step_by(SHARDS) {
        let what = format!("{} {}", row.method, row.path);
        // Nobody: the shared box.
        let env = fixture.fresh();
        let got = env.ask(row, ids, None, None).await;
        match row.who {
            Public => {
                if got.status.is_server_error() || got.status == StatusCode::UNAUTHORIZED {
                    failures.push(format!("{what} by nobody: {} {}", got.status, got.text));
                }
                continue;
            }
            Roles(..) => {
                if got.status != StatusCode::UNAUTHORIZED || !got.text.contains("not logged in") {
                    failures.push(format!(
                        "{what} by nobody: want 401, got {} {}",
                        got.status, got.text
                    ));
                }
            }
        }
        let Roles(allowed, needs) = row.who else {
            unreachable!()
        };
        // The denied roles, on one box: each refusal is audited and changes nothing else.
        for (role, user) in ROLES.iter().filter(|(r, _)| !allowed.contains(r)) {
            let c = env.login(user).await;
            let before = store::dump_tables(&env.db(), AUDIT_TABLES);
            let denials = env.denials_of(user);
            let got = env.ask(row, ids, Some(&c), Some(&c.csrf)).await;
            let reason = serde_json::from_str::<Value>(&got.text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned));
            if got.status != StatusCode::FORBIDDEN
                || !reason
                    .as_deref()
                    .is_some_and(|r| needs.split('|').any(|n| r.contains(n)))
            {
                failures.push(format!(
                    "{what} by {role}: want 403 naming {needs}, got {} {}",
                    got.status, got.text
                ));
                continue;
            }
            if env.denials_of(user) != denials + 1 {
                failures.push(format!("{what} by {role}: the denial is not audited once"));
            }
            if store::dump_tables(&env.db(), AUDIT_TABLES) != before {
                failures.push(format!(
                    "{what} by {role}: a denied request changed the store"
                ));
            }
        }
        // The allowed roles: a state-changing route on a box of their own.
        for (role, user) in ROLES.iter().filter(|(r, _)| allowed.contains(r)) {
            let own;
            let env = if changes_state(&row.method) {
                own = fixture.fresh();
                &own
            } else {
                &env
            };
            let c = env.login(user).await;
            let got = env.ask(row, ids, Some(&c), Some(&c.csrf)).await;
            if matches!(got.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
                || got.status.is_server_error()
            {
                failures.push(format!(
                    "{what} by {role}: want it allowed, got {} {}",
                    got.status, got.text
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the matrix failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The authorization check comes first, whatever the server's state: on a box that
/// no main loop runs (no agents' events, tools, charts or SIP endpoint: what a route
/// needs of it answers 503 to a caller it allows), every route still answers nobody
/// 401 and each role it refuses 403 naming the permission, never the 503 (which
/// would tell a caller with no right to ask what the box runs). In
/// [`REFUSE_SHARDS`] tests, every `REFUSE_SHARDS`-th row each, so that one test stays
/// well inside CI's per-test limit under qemu-user.
async fn every_route_refuses_before_it_looks_at_the_server_state(shard: usize) {
    let fixture = Fixture::build().await;
    let ids = &fixture.ids;
    let env = fixture.fresh_without_main_loop();
    let mut sessions = Vec::new();
    for (role, user) in ROLES {
        sessions.push((role, env.login(user).await));
    }
    let mut failures = Vec::new();
    let mut refusals = 0;
    for row in ROWS.iter().skip(shard).step_by(REFUSE_SHARDS) {
        let Roles(allowed, needs) = row.who else {
            continue;
        };
        let what = format!("{} {}", row.method, row.path);
        let got = env.ask(row, ids, None, None).await;
        if got.status != StatusCode::UNAUTHORIZED || !got.text.contains("not logged in") {
            failures.push(format!(
                "{what} by nobody: want 401, got {} {}",
                got.status, got.text
            ));
        }
        for (role, c) in sessions.iter().filter(|(r, _)| !allowed.contains(r)) {
            refusals += 1;
            let got = env.ask(row, ids, Some(c), Some(&c.csrf)).await;
            let reason = serde_json::from_str::<Value>(&got.text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned));
            if got.status != StatusCode::FORBIDDEN
                || !reason
                    .as_deref()
                    .is_some_and(|r| needs.split('|').any(|n| r.contains(n)))
            {
                failures.push(format!(
                    "{what} by {role}: want 403 naming {needs}, got {} {}",
                    got.status, got.text
                ));
            }
        }
    }
    // About 300 refusals over the whole matrix, spread over the shards.
    assert!(
        refusals >= 300 / REFUSE_SHARDS - 20,
        "only {refusals} refusals asked in shard {shard}"
    );
    assert!(
        failures.is_empty(),
        "{} routes answered before refusing:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Shards of [`every_route_refuses_before_it_looks_at_the_server_state`].
const REFUSE_SHARDS: usize = 4;

shards! { every_route_refuses_before_it_looks_at_the_server_state:
    every_route_refuses_before_it_looks_at_the_server_state_shard_0 = 0;
    every_route_refuses_before_it_looks_at_the_server_state_shard_1 = 1;
    every_route_refuses_before_it_looks_at_the_server_state_shard_2 = 2;
    every_route_refuses_before_it_looks_at_the_server_state_shard_3 = 3;
}

/// Every state-changing route but the login refuses the admin without the CSRF
/// token and with a wrong one, and the store is unchanged, row for row.
#[tokio::test]
async fn every_state_changing_route_needs_the_csrf_token_and_changes_nothing_without() {
    let fixture = Fixture::build().await;
    let ids = &fixture.ids;
    let env = fixture.fresh();
    let c = env.login("ada").await;
    let wrong = "0".repeat(c.csrf.len());
    let mut failures = Vec::new();
    let mut checked = 0;
    for row in ROWS.iter().filter(|r| changes_state(&r.method)) {
        if matches!(row.who, Public) {
            continue;
        }
        checked += 1;
        for (how, token) in [("no token", None), ("a wrong token", Some(wrong.as_str()))] {
            let before = store::dump_tables(&env.db(), &[]);
            let got = env.ask(row, ids, Some(&c), token).await;
            if got.status != StatusCode::FORBIDDEN
                || !got.text.contains("missing or wrong CSRF token")
            {
                failures.push(format!(
                    "{} {} with {how}: want 403, got {} {}",
                    row.method, row.path, got.status, got.text
                ));
            }
            if store::dump_tables(&env.db(), &[]) != before {
                failures.push(format!(
                    "{} {} with {how} changed the store",
                    row.method, row.path
                ));
            }
        }
    }
    // The session is still good: the refusals did not end it.
    assert_eq!(env.get("/api/v1/me", &c).await.status, StatusCode::OK);
    assert!(checked >= 60, "only {checked} state-changing routes");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
