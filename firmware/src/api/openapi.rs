//! The OpenAPI 3.0 description of `/api/v1`, written by hand (a test checks that it
//! names exactly the routes the router serves).

use serde_json::{json, Map, Value};

/// One operation: method, path, summary, the permission it checks, request body
/// schema (if any), success status and response content type.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    permission: &'static str,
    body: Option<&'static str>,
    status: &'static str,
    response: &'static str,
}

const JSON: &str = "application/json";
const CSV: &str = "text/csv";
const NONE: &str = "";
const WAV: &str = "audio/wav";

const OPS: &[Op] = &[
    op("post", "/api/v1/session", "Log in; sets the bl_session cookie and returns the CSRF token", "(none)", Some("Login"), "200", JSON),
    op("delete", "/api/v1/session", "Log out", "(session)", None, "204", NONE),
    op("get", "/api/v1/me", "The caller's identity, roles and effective permissions", "(session)", None, "200", JSON),
    op("post", "/api/v1/me/password", "Change the caller's own password", "users.edit (own)", Some("ChangePassword"), "204", NONE),
    op("get", "/api/v1/users", "List users (limit, offset)", "users.view (site)", None, "200", JSON),
    op("post", "/api/v1/users", "Create a user", "users.add (site)", Some("NewUser"), "201", JSON),
    op("get", "/api/v1/users/export", "Export users as CSV (no hashes, no installer)", "users.export (site)", None, "200", CSV),
    op("post", "/api/v1/users/import", "Import users from CSV, all or nothing; returns the initial passwords once", "users.import (site)", Some("Csv"), "200", JSON),
    op("get", "/api/v1/users/{id}", "One user", "users.view (scoped to the user)", None, "200", JSON),
    op("patch", "/api/v1/users/{id}", "Change a user (roles, groups, enabled, extension, agent_id need site scope)", "users.edit", Some("UserPatch"), "200", JSON),
    op("delete", "/api/v1/users/{id}", "Delete a user", "users.delete (scoped to the user)", None, "204", NONE),
    op("post", "/api/v1/users/{id}/password", "Reset another user's password (must be changed at next login)", "users.edit (scoped to the user)", Some("ResetPassword"), "204", NONE),
    op("get", "/api/v1/roles", "List roles", "roles.view (site)", None, "200", JSON),
    op("post", "/api/v1/roles", "Create a custom role", "roles.add (site)", Some("RoleSpec"), "201", JSON),
    op("get", "/api/v1/roles/{id}", "One role", "roles.view (site)", None, "200", JSON),
    op("put", "/api/v1/roles/{id}", "Replace a custom role", "roles.edit (site)", Some("RoleSpec"), "200", JSON),
    op("delete", "/api/v1/roles/{id}", "Delete a custom role", "roles.delete (site)", None, "204", NONE),
    op("get", "/api/v1/groups", "List groups", "groups.view (site)", None, "200", JSON),
    op("post", "/api/v1/groups", "Create a group", "groups.add (site)", Some("GroupSpec"), "201", JSON),
    op("get", "/api/v1/groups/{id}", "One group", "groups.view (group admins: group)", None, "200", JSON),
    op("put", "/api/v1/groups/{id}", "Replace a group", "groups.edit (group admins: group)", Some("GroupSpec"), "200", JSON),
    op("delete", "/api/v1/groups/{id}", "Delete a group", "groups.delete (group admins: group)", None, "204", NONE),
    op("get", "/api/v1/cdrs", "Call records the caller may see, numbers masked unless numbers.view (since, until, limit, offset)", "calls.view", None, "200", JSON),
    op("get", "/api/v1/events", "Screen pop (Server-Sent Events): ringing / answered / ended events of queue calls (call_id, agent, extension, queue, caller {number, name, masked}, contact, since_ms, at_ms; ended adds disposition and talk_ms) agent_state events, and leads events {agent, campaign, leads (each as GET /api/v1/leads/{id} shows it, numbers masked), at_ms} when the agent took or was assigned campaign leads; the caller's own agent by default, ?agent=ID (calls.view over that agent) or ?queue=NAME (queues.view, then each event per agent); numbers masked unless numbers.view; a `lagged` event {missed} when the client fell behind; keep-alive comment every 15 s", "calls.view (per agent)", None, "200", "text/event-stream"),
    op("get", "/api/v1/agents/{agent}", "An agent's live state ({agent}: me or an agent ID): agent_id, extension_mode, state, reason, extension, since_ms; 404 no such agent, 503 no call center", "agents.view (scoped to the agent's user)", None, "200", JSON),
    op("post", "/api/v1/agents/{agent}/login", "Log the caller in as agent from the desktop: the fixed extension, or (automatic) the SIP phone registered from this request's IP address; 403 another agent, 409 login mode, no or several phones at the address, already logged in, extension taken; audited as agent_login", "agents.operate (own only)", None, "200", JSON),
    op("post", "/api/v1/agents/{agent}/logout", "Log the agent out; 409 on a call or not logged in; audited as agent_logout", "agents.operate (scoped to the agent's user)", None, "200", JSON),
    op("post", "/api/v1/agents/{agent}/pause", "Pause the agent (body optional: {reason}); on a call: after its wrap-up; 400 bad reason, 409 not logged in; audited as agent_pause", "agents.operate (scoped to the agent's user)", None, "200", JSON),
    op("post", "/api/v1/agents/{agent}/unpause", "Unpause the agent (or cancel a pending pause); 409 not paused; audited as agent_unpause", "agents.operate (scoped to the agent's user)", None, "200", JSON),
    op("put", "/api/v1/agents/{agent}/extension-mode", "Set the agent's extension mode {mode: login | fixed | automatic}; 400 unknown mode or fixed without the user's extension; audited as extension_mode; the ACD takes it at once", "agents.edit (scoped to the agent's user)", None, "200", JSON),
    op("post", "/api/v1/calls", "Click-to-call: ring the caller's phone (agent login, else own extension; from: another extension's phone with group/site scope), then dial `to` as the phone would (or an E.164 `+` number through the outside line, in the site's national or international form); audited as click_to_call; 202 {call_id, from, to}; 400 bad number, 403 {error, route, permission} the dial route needs a calling permission the phone lacks, 404 unknown extension, 409 phone busy or no phone", "calls.operate (own phone; scoped to the phone's owner)", Some("ClickToCall"), "202", JSON),
    op("get", "/api/v1/reports/queues", "Queue report over [from, to): offered, answered, abandoned, overflowed (by target), other, waits, talk / wrap-up / handle time, service level (answered within sl s / (offered - abandoned within sl s)), calls per UTC hour; 400 naming a bad parameter or unknown queue", "reports.view (site)", None, "200", JSON),
    op("get", "/api/v1/reports/agents", "Agent report over [from, to): calls answered, talk time, time per state (clipped to the period), login time, pauses by reason; rows limited to the agents the caller's scope reaches; 400 naming a bad parameter or unknown agent", "reports.view (per agent)", None, "200", JSON),
    op("get", "/api/v1/audit", "Audit rows after after_id, oldest first (after_id, limit)", "audit.view (site)", None, "200", JSON),
    op("post", "/api/v1/audit/verify", "Verify the audit hash chain: {ok, rows} or {ok: false, broken_row, problem}", "audit.audit (site)", None, "200", JSON),
    op("get", "/api/v1/sync", "Sync with HQ: state, backlog depth and oldest age, cursor, epoch, last success and error, requests in flight, next attempt, WAN state per target", "sync.view (site)", None, "200", JSON),
    op("post", "/api/v1/sync/force", "Sync now (cancels a backoff); audited as force_sync; 409 when sync is not configured or not running", "sync.operate (site)", None, "202", JSON),
    op("get", "/api/v1/status", "Live status: ports (hook, call state, line reading, recent events, ring test, line test running and its last result), active calls, trunk; the dashboard's alarms (strings: port faults, trunk, WAN and sync ones only with sync.view, disk 90% full, HTTPS certificate) and disk {path, total_bytes, free_bytes, used_percent} or {error}; 409 without a running daemon", "diagnostics.view (site)", None, "200", JSON),
    op("get", "/api/v1/system", "The system page's facts: {at_ms, version, board, started_at_ms, uptime_ms, slots: {configured (false: no [update] A/B layout), backend, error, booted, floor, slots: [{slot, state: good|pending|bad|empty, tries_left, version, min_version, booted, active}], last_update: {rollout, version, slot, outcome, detail} | null, last_update_error}, cpu: {cpus, load: [1, 5, 15 min], branchd_cpu_s}, memory: {branchd_rss_bytes, total_bytes, available_bytes}, disk: {path, total_bytes, free_bytes, used_percent} | null, disk_error, temperatures: [{name, celsius}]}", "system_config.view (site)", None, "200", JSON),
    op("get", "/api/v1/charts/calls-per-hour", "Calls per hour for the calls page's chart: the CDRs started in the last 24 hours of the site's clock ([telephony] time_zone, UTC when unset) up to now (the current hour last, zeros included), answered and not answered: {timezone, from_ms, to_ms, hours: [{hour_start_ms, local_start_ms (the site's wall clock), answered, not_answered}]}; no numbers", "diagnostics.view (site)", None, "200", JSON),
    op("get", "/api/v1/charts/line", "Line voltage and loop current history per port for the ports page's charts, kept in memory since branchd started (a restart empties it): one reading per [web] chart_sample_seconds (default 60), the last 1440 per port: {at_ms, interval_ms, capacity, ports: [{port, kind, samples: [{at_ms, millivolts, microamps}]}]}; 409 without a running daemon", "diagnostics.view (site)", None, "200", JSON),
    op("get", "/api/v1/charts/call-quality", "RTP jitter and loss over time of the calls with a SIP leg, for the calls page's charts: sampled every [web] call_sample_seconds (default 5) while a call is up (at most 360 samples a call: a longer call halves its resolution_ms), the calls in progress (at most 32) then the last 10 finished, in memory only: {at_ms, interval_ms, calls: [{call_id, caller_via, callee_via, started_at_ms, ended_at_ms, resolution_ms, samples: [{at_ms, caller: {jitter_ms, loss_percent} | null, callee: ...}]}]}; no numbers; 409 without a running daemon", "diagnostics.view (site)", None, "200", JSON),
    op("get", "/api/v1/charts/sync-backlog", "The sync outbox over time for the sync page's charts: depth and oldest row's age sampled every [web] chart_sample_seconds (default 60), the last 1440, in memory only: {at_ms, interval_ms, capacity, samples: [{at_ms, depth, oldest_age_ms}], current: the outbox as read for this answer at at_ms, {at_ms, depth, oldest_age_ms} or null}; 409 without a running daemon", "sync.view (site)", None, "200", JSON),
    op("get", "/api/v1/events/status", "The live status as Server-Sent Events: one `status` event at once and one per change", "diagnostics.view (site)", None, "200", "text/event-stream"),
    op("post", "/api/v1/ports/{port}/line-test", "Line-test an idle port (FXS with the handset down, or FXO; a port out of service after a fault too): the line controller's self-test and a line reading judged against the line's expected voltage and loop current, waiting up to 4 s; {port, result: {id, at_ms, passed, checks: [{name: self-test | line voltage | loop current | fault, passed, detail}]}} (a failed test is still 200); audited as line_test; 409 when the port is busy or under test, 404 no such port", "diagnostics.operate (site)", None, "200", JSON),
    op("post", "/api/v1/ports/{port}/loopback-test", "Loopback-test an idle port: the line controller loops the port's voice path (SetLoopback), the box sends a 1004 Hz tone at -10 dBm0 between silences and judges what comes back, within 4 s; {port, result: {id, at_ms, passed, reason, checks: [{name: audio back | delay | level | signal to noise | idle noise, passed, detail}], level_tenth_dbm0, delay_ms, sinad_tenth_db, idle_noise_tenth_dbm0, frames_sent, frames_received}} (a failed test is still 200); the loopback is always turned off again; audited as loopback_test; 409 when the port has a call up, is off-hook, ringing or under another test, 404 no such port", "diagnostics.operate (site)", None, "200", JSON),
    op("post", "/api/v1/system/reboot", "Reboot the box (body optional: {force}); 202 {rebooting, calls_ended}, then branchd stops and exits with status 6, which the unit turns into a reboot; 409 while calls are in progress unless force (they are cut); audited as reboot", "system_config.operate (site)", Some("Reboot"), "202", JSON),
    op("post", "/api/v1/ports/{port}/ring-test", "Ring an idle FXS phone for 6 s; audited as ring_test; 409 when the port is busy, 404 no such port, 400 FXO port", "diagnostics.operate (site)", None, "202", JSON),
    op("get", "/api/v1/sip", "SIP: the trunk registration (state, server, expiry, per-server health and last error) and every local SIP account's registered contacts (contact, source address, expiry, User-Agent); {configured: false} without [sip]", "diagnostics.view (site)", None, "200", JSON),
    op("get", "/api/v1/calls/active", "Calls in progress: parties, numbers (masked unless numbers.view covers the call), duration, and per SIP leg the codec, RTP packets, loss, jitter and MOS estimate", "diagnostics.view (site)", None, "200", JSON),
    op("get", "/api/v1/customers/{id}/service-records", "The customer's calls (service records), newest first, with notes, the wrap-up disposition and the recording id; limit (1-100); numbers masked like the customer's", "contacts.view (on the customer)", None, "200", JSON),
    op("post", "/api/v1/calls/{call_id}/notes", "Add a note to a call, while it goes on or after; audited", "calls.operate (own: the call's service record owner)", Some("CallNote"), "201", JSON),
    op("get", "/api/v1/call-center", "The call center live: each queue's waiting callers (position, VIP, time waited, agents ringing; numbers masked per role), members logged in and free, calls each member answered; every agent's state, pause reason, extension and time in state. {\"configured\": false} without queues or agents", "queues.view (site)", None, "200", JSON),
    op("get", "/api/v1/queues", "The call center's queues: settings, members (agent ID, username, penalty), overflow rules, VIP patterns, source (hq or local)", "queues.view (site)", None, "200", JSON),
    op("put", "/api/v1/queues/{name}", "Create (201) or replace (200) a queue made on the box; the whole call center is checked before it is kept; audited; the ACD is reconfigured without a restart; 409 for HQ's queues or a number in use", "queues.edit (site)", Some("Queue"), "200", JSON),
    op("delete", "/api/v1/queues/{name}", "Delete a queue made on the box (callers already waiting stay until served); audited; 409 for HQ's queues", "queues.delete (site)", None, "204", NONE),
    op("get", "/api/v1/blacklist", "Caller screening: mode, default action and every entry (source hq or local, action, hits, last hit); patterns masked unless numbers.view (site)", "blacklist.view (site)", None, "200", JSON),
    op("post", "/api/v1/blacklist", "Add a local entry: a number, a prefix ending in *, or anonymous (kept as written; callers are matched in all their forms with the site's numbering plan: 030* also blocks +4930...); audited; 409 when listed already", "blacklist.add (site)", Some("BlacklistEntry"), "201", JSON),
    op("get", "/api/v1/blacklist/mode", "The screening mode (deny: blacklist, allow: allowlist) and default action", "blacklist.view (site)", None, "200", JSON),
    op("put", "/api/v1/blacklist/mode", "Set the screening mode and default action; audited", "blacklist.edit (site)", Some("BlacklistMode"), "200", JSON),
    op("delete", "/api/v1/blacklist/{id}", "Delete a local entry; audited; 409 for HQ's entries (delete them at HQ)", "blacklist.delete (site)", None, "204", NONE),
    op("get", "/api/v1/voicemail", "The mailboxes the caller may see with their messages (caller, received, duration, size, sha256, heard); caller numbers masked unless numbers.view (site)", "voicemail.view (scoped to the mailbox's owner and groups)", None, "200", JSON),
    op("get", "/api/v1/voicemail/{id}/audio", "A message's WAV file (mono 16-bit PCM, 8 kHz)", "voicemail.listen (scoped to the mailbox)", None, "200", WAV),
    op("delete", "/api/v1/voicemail/{id}", "Delete a message (row and file); audited; the phones' message waiting follows", "voicemail.delete (scoped to the mailbox)", None, "204", NONE),
    op("get", "/api/v1/recordings", "Call recordings the caller may see (call_id, since, until, limit, offset; default the last 7 days), newest first: the call's numbers masked like CDRs, whether the file is still there, may_listen / may_download and the audio URL", "recordings.view (scoped to the call's parties and their groups; a recording without a CDR needs site)", None, "200", JSON),
    op("get", "/api/v1/recordings/{id}/audio", "A recording's WAV file (stereo 16-bit PCM, 8 kHz: caller left). Range requests (one bytes= range) answer 206 with Content-Range, 416 past the end; download=true adds Content-Disposition: attachment; 410 when retention deleted the file. Audited as listen or download (requests from the first byte)", "recordings.listen, or recordings.download with download=true (scoped like the list)", None, "200", WAV),
    op("get", "/api/v1/customers", "Customers the caller's scope reaches, one page (name substring, number in any form, type, owner, owner_group, source, field.<name>, limit, offset); numbers and phone fields masked unless numbers.view covers the record", "contacts.view (scoped to the record's owner and groups)", None, "200", JSON),
    op("post", "/api/v1/customers", "Add a local customer {name, numbers, type, owner, owner_group, fields}; numbers are stored in the site's canonical form (E.164 where the numbering plan can tell: 030 555 0100 at a German site is +49305550100; extensions and short numbers as typed); audited; 409 when a number, in any of its forms, belongs to another customer", "contacts.add (scoped to the new record)", Some("Customer"), "201", JSON),
    op("get", "/api/v1/customers/export", "Every customer as CSV (the import format); numbers masked unless numbers.view covers the record; audited", "contacts.export (site)", None, "200", CSV),
    op("post", "/api/v1/customers/import", "Import customers from CSV (name, numbers, type, owner, owner_group, custom fields), all or nothing, problems by row; audited", "contacts.import (site)", Some("Csv"), "200", JSON),
    op("get", "/api/v1/customers/{id}", "One customer, masked like the list", "contacts.view (scoped to the record)", None, "200", JSON),
    op("put", "/api/v1/customers/{id}", "Replace a local customer; audited; 409 for HQ's contacts or a number another customer holds", "contacts.edit (the record as it is and as it will be)", Some("Customer"), "200", JSON),
    op("delete", "/api/v1/customers/{id}", "Delete a local customer; audited; 409 for HQ's contacts", "contacts.delete (scoped to the record)", None, "204", NONE),
    op("get", "/api/v1/customer-fields", "The site's custom field definitions and the cap (max_fields)", "contacts.view", None, "200", JSON),
    op("post", "/api/v1/customer-fields", "Define a custom field {name, label, type, required, default, choices}; audited; 409 at the cap of 32 or a name in use", "system_config.edit (site)", Some("CustomerField"), "201", JSON),
    op("put", "/api/v1/customer-fields/{name}", "Change a field's label, required flag, default and choices (not its name or type); audited", "system_config.edit (site)", Some("CustomerField"), "200", JSON),
    op("delete", "/api/v1/customer-fields/{name}", "Delete a custom field and every value of it; audited", "system_config.edit (site)", None, "204", NONE),
    op("get", "/api/v1/customer-types", "The customer types: keypad digit 0-9 and name", "contacts.view", None, "200", JSON),
    op("put", "/api/v1/customer-types/{digit}", "Name customer type {digit} (0-9) {name}; audited; 409 when another digit has the name", "system_config.edit (site)", Some("CustomerType"), "200", JSON),
    op("delete", "/api/v1/customer-types/{digit}", "Delete a customer type (its customers keep no type); audited", "system_config.edit (site)", None, "204", NONE),
    op("post", "/api/v1/tools/ping", "Ping a host (default: HQ's host) {host, count 1-10}: runs ping -n -c count -W 2, killed after count + 5 s; {command, exit_code, timed_out, elapsed_ms, stdout, stderr}; 400 bad host or count (nothing runs), 501 ping not installed; audited as tool_ping", "diagnostics.operate (site)", Some("ToolHost"), "200", JSON),
    op("post", "/api/v1/tools/traceroute", "Traceroute to a host (default: HQ's host) {host}: traceroute -n -q 1 -w 2 -m 20, killed after 60 s; the same answer as ping; 400 bad host, 501 traceroute not installed; audited as tool_traceroute", "diagnostics.operate (site)", Some("ToolHost"), "200", JSON),
    op("post", "/api/v1/tools/sip-options", "Send one SIP OPTIONS through the box's SIP endpoint to {uri} (default: the trunk's first server): {uri, destination, transport, outcome: answered | timeout | failed, status, reason, server, rtt_ms, error}; 400 bad URI, 409 SIP not configured; audited as tool_sip_options", "diagnostics.operate (site)", Some("ToolUri"), "200", JSON),
    op("post", "/api/v1/tools/capture", "Capture the box's SIP and RTP packets for {seconds} (1-60, at most 32 MiB) and download them as a pcap file (LINKTYPE_RAW); X-Capture-Packets and X-Capture-Truncated headers; 400 bad duration, 409 a capture is running, 503 no packet socket (CAP_NET_RAW); audited as tool_capture", "diagnostics.download (site)", Some("ToolCapture"), "200", "application/vnd.tcpdump.pcap"),
    op("get", "/api/v1/logs", "The daemon's recent log lines (kept in memory, 256 KiB), newest ?limit= (1-2000, default 200) at ?level= (trace, debug, info, warn, error; default info) or above, colour codes removed, every configured secret scrubbed; {\"kept\": false} when this process keeps none", "diagnostics.view and system_config.view (site)", None, "200", JSON),
    op("get", "/api/v1/sip/trace", "The SIP messages the box received (past its flood guard) and sent, the last 200 kept in memory: those matching ?filter= (a Call-ID, or part of a number in the request URI, From or To), newest ?limit= (1-200, default 200), oldest first: {filter, messages: [{seq, at_ms, direction: in | out, transport, peer, first_line, call_id, text}]}; digest response, nonce and cnonce redacted, numbers not masked; 400 bad filter or limit", "diagnostics.download (site)", None, "200", JSON),
    op("get", "/api/v1/events/sip-trace", "The SIP trace live (Server-Sent Events): a `message` event (as in GET /api/v1/sip/trace) for each kept message matching ?filter=, then one per new one; a `lagged` event {missed} when the client fell behind; keep-alive comment every 15 s", "diagnostics.download (site)", None, "200", "text/event-stream"),
    op("get", "/api/v1/provisioning", "The provisioning state: serial, accepts_tokens (and why not), provisioned {site, hq_url, applied_at, source: usb | token, token_id, fields (names only)} or null, enrollment {status: not_provisioned | pending | enrolled | refused, box_id, at_ms, refusal, certificate}, the box's claim QR {serial, code, qr_text, svg}; never a token text or password", "provisioning.view (site)", None, "200", JSON),
    op("post", "/api/v1/provisioning/token", "Apply a QR enrollment token {token} (the BL1: text, or a link to /provisioning/token?t= carrying it): signature with the box's trusted keys, expiry, serial, revocation and replay checked, then the enrollment settings written and the token marked used in one transaction with the audit row (apply_token); branchd then restarts with the settings once no call is up and enrolls with HQ. {status, site, token_id, fields, next}; 400 invalid (not a token, tampered, unknown key), 422 expired / wrong_serial / revoked, 409 replayed or not_configured (the error's code field says which); a refusal changes nothing and is audited", "provisioning.operate (site)", Some("ProvisioningToken"), "200", JSON),
    op("post", "/api/v1/provisioning/photo", "Apply the token in a photo of its QR code: multipart/form-data with field photo (PNG or JPEG, at most 8 MiB), decoded on the box (rqrr), then applied as POST /api/v1/provisioning/token; 400 not an image, no QR code or no token in it, 413 too large, and the token's own errors", "provisioning.operate (site)", Some("ProvisioningPhoto"), "200", JSON),
    op("get", "/api/v1/tools/bundle", "The diagnostics bundle (tar.gz): the config with every secret redacted, recent logs, store stats (schema version, sizes, row counts), versions, live/SIP/sync and WAN status; audited as tool_bundle", "diagnostics.download and system_config.view (site)", None, "200", "application/gzip"),
    op("get", "/api/v1/lead-lists", "Lead lists with their lead counts and the campaign using each", "campaigns.view (site)", None, "200", JSON),
    op("post", "/api/v1/lead-lists", "Make an empty lead list {name}; audited; 409 name in use", "campaigns.add (site)", Some("LeadList"), "201", JSON),
    op("get", "/api/v1/lead-lists/{id}", "One lead list", "campaigns.view (site)", None, "200", JSON),
    op("delete", "/api/v1/lead-lists/{id}", "Delete a lead list and its leads; audited; 409 while a campaign uses it", "campaigns.delete (site)", None, "204", NONE),
    op("post", "/api/v1/lead-lists/{id}/import", "Import leads from CSV (numbers required, `;`-separated; name; customer id; any other column goes into the lead's data), all or nothing, problems by row (a number twice in the file or already in the list is one); audited", "campaigns.import (site)", Some("Csv"), "200", JSON),
    op("get", "/api/v1/lead-lists/{id}/leads", "One page of the list's leads (assigned user id, limit, offset): state, attempts, due time, result; numbers masked unless numbers.view covers the lead", "campaigns.view (site)", None, "200", JSON),
    op("get", "/api/v1/leads/{id}", "One lead with its attempts (number, agent, call id of the CDR, outcome, disposition, notes); numbers masked unless numbers.view covers the lead", "campaigns.view (own when assigned to the caller, else site)", None, "200", JSON),
    op("get", "/api/v1/campaigns", "The campaigns the caller may see (site, or those of the caller's groups with own scope)", "campaigns.view", None, "200", JSON),
    op("post", "/api/v1/campaigns", "Make a campaign (draft) {name, list_id, group_id, mode: preview | progressive, hours_start, hours_end (HH:MM, on the site's clocks: [telephony] time_zone, DST included), weekdays, max_attempts, busy_retry_s, no_answer_retry_s, failed_retry_s, ring_timeout_s, caller_id}; audited; 400 naming each bad field; 409 name or list in use", "campaigns.add (site)", Some("Campaign"), "201", JSON),
    op("get", "/api/v1/campaigns/{id}", "One campaign", "campaigns.view (own for members of its group, else site)", None, "200", JSON),
    op("put", "/api/v1/campaigns/{id}", "Replace a draft or paused campaign's settings; audited; 409 while running", "campaigns.edit (site)", Some("Campaign"), "200", JSON),
    op("delete", "/api/v1/campaigns/{id}", "Delete a campaign and its attempts (the lead list stays); audited; 409 while running", "campaigns.delete (site)", None, "204", NONE),
    op("post", "/api/v1/campaigns/{id}/start", "Start (or resume) a draft or paused campaign; audited; 409 from another state", "campaigns.operate (site)", None, "200", JSON),
    op("post", "/api/v1/campaigns/{id}/pause", "Pause a running campaign; audited; 409 from another state", "campaigns.operate (site)", None, "200", JSON),
    op("post", "/api/v1/campaigns/{id}/close", "Close a campaign (done); audited; 409 when done already", "campaigns.operate (site)", None, "200", JSON),
    op("post", "/api/v1/campaigns/{id}/assign", "Assign leads {leads: [id], user_id} to a member of the campaign's group (user_id null unassigns); all or nothing; audited", "campaigns.operate (site)", Some("LeadAssignment"), "200", JSON),
    op("post", "/api/v1/campaigns/{id}/next", "An agent of the campaign's group takes their next leads {count} (default and most: the site's next_leads): their pending assigned leads, then due unassigned ones, which become theirs; 409 campaign not running or caller not in its group; audited", "campaigns.operate (own)", Some("NextLeads"), "200", JSON),
    op("get", "/api/v1/campaigns/{id}/progress", "A campaign's progress: leads pending, dialling, done by result; attempts by outcome", "campaigns.view (like the campaign)", None, "200", JSON),
    op("post", "/api/v1/campaigns/{id}/leads/{lead}/dial", "Preview dial: open an attempt of the lead (campaign running, inside its calling hours, caller in its group, lead theirs or unassigned, due, not being dialled, no other attempt of theirs open, number not on the blacklist in deny mode: a lead whose numbers are all blocked is finished, 409), then ring the caller's phone and dial the number with the outside-line prefix; 202 {attempt, call_id, from, lead}; the attempt is undone when the phone cannot be rung; audited as lead_dial and click_to_dial", "campaigns.operate (own) and calls.operate (own phone)", None, "202", JSON),
    op("put", "/api/v1/campaign-attempts/{id}", "Record an attempt's wrap-up {disposition 0-9, notes}, during or after the call; 200 {attempt, outcome, disposition, notes}. The outcome (answered | busy | no_answer | failed) is read from the call (a preview attempt's from its CDR) and the lead is finished or due again per the retry rules then; sending an outcome is a 409; audited as lead_result", "campaigns.operate (scoped to the attempt's agent)", Some("AttemptResult"), "200", JSON),
    op("post", "/api/v1/customers/{id}/dial", "Click-to-dial a customer: ring the caller's phone, then dial the customer's number {number} (default: the first) with the outside-line prefix (a `+` number in the site's national or international form); 400 a `+` number that is not E.164; 409 no number, on the blacklist (deny mode), no outside line, phone busy; audited as click_to_dial", "contacts.view (on the customer) and calls.operate (own phone)", Some("Dial"), "202", JSON),
    op("get", "/api/v1/campaign-settings", "The site's campaign settings {next_leads}", "campaigns.view (own)", None, "200", JSON),
    op("put", "/api/v1/campaign-settings", "Set the site's next_leads (1-100); audited", "system_config.edit (site)", Some("CampaignSettings"), "200", JSON),
    op("get", "/api/v1/openapi.json", "This document", "(none)", None, "200", JSON),
];

#[allow(clippy::too_many_arguments)]
const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    permission: &'static str,
    body: Option<&'static str>,
    status: &'static str,
    response: &'static str,
) -> Op {
    Op {
        method,
        path,
        summary,
        permission,
        body,
        status,
        response,
    }
}

fn parameters(op: &Op) -> Vec<Value> {
    let mut out = Vec::new();
    if op.path.contains("{id}") {
        out.push(json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }));
    }
    if op.path.contains("{lead}") {
        out.push(json!({ "name": "lead", "in": "path", "required": true, "schema": { "type": "integer" } }));
    }
    let query: &[&str] = match (op.method, op.path) {
        ("get", "/api/v1/users" | "/api/v1/roles" | "/api/v1/groups") => &["limit", "offset"],
        ("get", "/api/v1/cdrs") => &["since", "until", "limit", "offset"],
        ("get", "/api/v1/audit") => &["after_id", "limit"],
        ("get", "/api/v1/lead-lists/{id}/leads") => &["assigned", "limit", "offset"],
        ("get", "/api/v1/recordings") => &["since", "until", "limit", "offset"],
        _ => &[],
    };
    out.extend(query.iter().map(
        |q| json!({ "name": q, "in": "query", "required": false, "schema": { "type": "integer" } }),
    ));
    match (op.method, op.path) {
        ("get", "/api/v1/recordings") => out.push(
            json!({ "name": "call_id", "in": "query", "required": false, "schema": { "type": "string" } }),
        ),
        ("get", "/api/v1/recordings/{id}/audio") => {
            out.push(json!({ "name": "download", "in": "query", "required": false, "schema": { "type": "boolean" } }));
            out.push(json!({ "name": "Range", "in": "header", "required": false, "schema": { "type": "string" },
                             "description": "one range: bytes=first-last, bytes=first- or bytes=-suffix" }));
        }
        _ => {}
    }
    // The reports: a required period, an optional filter (and threshold).
    let report: &[(&str, bool, &str)] = match (op.method, op.path) {
        ("get", "/api/v1/reports/queues") => &[
            ("from", true, "integer"),
            ("to", true, "integer"),
            ("queue", false, "string"),
            ("sl", false, "integer"),
        ],
        ("get", "/api/v1/reports/agents") => &[
            ("from", true, "integer"),
            ("to", true, "integer"),
            ("agent", false, "string"),
        ],
        _ => &[],
    };
    out.extend(report.iter().map(|(q, required, kind)| {
        json!({ "name": q, "in": "query", "required": required, "schema": { "type": kind } })
    }));
    out
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPS {
        let mut operation = json!({
            "summary": op.summary,
            "description": format!("Permission: {}.", op.permission),
            "parameters": parameters(op),
            "responses": {
                op.status: if op.response.is_empty() {
                    json!({ "description": "done" })
                } else if op.response == CSV {
                    json!({ "description": "ok", "content": { CSV: { "schema": { "type": "string" } } } })
                } else if op.response == WAV {
                    json!({ "description": "ok", "content": { WAV: { "schema": { "type": "string", "format": "binary" } } } })
                } else {
                    json!({ "description": "ok", "content": { JSON: { "schema": { "type": "object" } } } })
                },
                "400": { "$ref": "#/components/responses/Error" },
                "401": { "$ref": "#/components/responses/Error" },
                "403": { "$ref": "#/components/responses/Error" },
                "404": { "$ref": "#/components/responses/Error" },
            },
        });
        if op.path == "/api/v1/session" && op.method == "post" {
            operation["security"] = json!([]);
            operation["responses"]["423"] = json!({ "$ref": "#/components/responses/Error" });
            operation["responses"]["429"] = json!({ "$ref": "#/components/responses/Error" });
        }
        if op.path == "/api/v1/openapi.json" {
            operation["security"] = json!([]);
        }
        if op.path == "/api/v1/sync" {
            operation["responses"]["200"]["content"][JSON]["schema"] =
                json!({ "$ref": "#/components/schemas/SyncStatus" });
        }
        if (op.path.starts_with("/api/v1/blacklist")
            || op.path.starts_with("/api/v1/customer")
            || op.path.starts_with("/api/v1/campaign")
            || op.path.starts_with("/api/v1/lead-lists"))
            && op.method != "get"
        {
            operation["responses"]["409"] = json!({ "$ref": "#/components/responses/Error" });
        }
        if op.path.starts_with("/api/v1/tools/") {
            for code in ["409", "501", "503"] {
                operation["responses"][code] = json!({ "$ref": "#/components/responses/Error" });
            }
        }
        if op.path.starts_with("/api/v1/provisioning/") {
            for code in ["409", "413", "422"] {
                operation["responses"][code] = json!({ "$ref": "#/components/responses/Error" });
            }
        }
        if op.path == "/api/v1/recordings/{id}/audio" {
            operation["responses"]["206"] = json!({ "description": "the range asked for",
                "content": { WAV: { "schema": { "type": "string", "format": "binary" } } } });
            for code in ["410", "416"] {
                operation["responses"][code] = json!({ "$ref": "#/components/responses/Error" });
            }
        }
        if op.path == "/api/v1/sync/force" || op.path == "/api/v1/system/reboot" {
            operation["responses"]["409"] = json!({ "$ref": "#/components/responses/Error" });
        }
        if let Some(schema) = op.body {
            let content = if schema == "Csv" {
                json!({ CSV: { "schema": { "type": "string" } } })
            } else if schema == "ProvisioningPhoto" {
                json!({ "multipart/form-data": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } })
            } else {
                json!({ JSON: { "schema": { "$ref": format!("#/components/schemas/{schema}") } } })
            };
            // The tools' host and URI default to HQ and the trunk, and "next" defaults to
            // the site's next_leads, a customer dial to the first number, a reboot to
            // not forced: their body may be empty.
            let required = !matches!(
                schema,
                "ToolHost" | "ToolUri" | "NextLeads" | "Dial" | "Reboot"
            );
            operation["requestBody"] = json!({ "required": required, "content": content });
        }
        let entry = paths
            .entry(op.path)
            .or_insert_with(|| Value::Object(Map::new()));
        entry[op.method] = operation;
    }
    let string = json!({ "type": "string" });
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Branchline local API",
            "version": "1",
            "description": "Local accounts, roles, groups, masked call records, the audit log \
                and the sync status of a Branchline gateway. Log in with POST /api/v1/session; send the \
                bl_session cookie with every request and the X-CSRF-Token header with every \
                POST, PUT, PATCH and DELETE. Errors are {\"error\": ..., \"problems\": [...]}.",
        },
        "paths": paths,
        "security": [{ "session": [] }],
        "components": {
            "securitySchemes": {
                "session": { "type": "apiKey", "in": "cookie", "name": super::SESSION_COOKIE },
            },
            "responses": {
                "Error": {
                    "description": "error",
                    "content": { JSON: { "schema": { "$ref": "#/components/schemas/Error" } } },
                },
            },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": {
                    "error": string,
                    "problems": { "type": "array", "items": { "type": "object" } },
                }},
                "Login": { "type": "object", "required": ["username", "password"], "properties": {
                    "username": string, "password": string,
                }},
                "Reboot": { "type": "object", "additionalProperties": false, "properties": {
                    "force": { "type": "boolean", "description": "Reboot even with calls in progress (they are cut); default false" },
                }},
                "ChangePassword": { "type": "object", "required": ["old_password", "new_password"], "properties": {
                    "old_password": string, "new_password": string,
                }},
                "ResetPassword": { "type": "object", "required": ["new_password"], "properties": {
                    "new_password": string,
                }},
                "NewUser": { "type": "object", "required": ["username", "password"], "properties": {
                    "username": string, "display_name": string, "password": string,
                    "extension": string, "agent_id": string, "pin": string,
                    "enabled": { "type": "boolean" }, "must_change_password": { "type": "boolean" },
                    "roles": strings, "groups": strings,
                }},
                "UserPatch": { "type": "object", "properties": {
                    "display_name": string, "extension": string, "agent_id": string,
                    "recording": { "type": "string", "enum": ["always", "never", "on_demand"] },
                    "enabled": { "type": "boolean" }, "roles": strings, "groups": strings,
                }},
                "RoleSpec": { "type": "object", "required": ["name", "description", "permissions"], "properties": {
                    "name": string, "description": string,
                    "permissions": { "type": "array", "items": { "type": "object", "properties": {
                        "resource": string, "action": string, "scope": string,
                    }}},
                }},
                "SyncStatus": sync_status_schema(),
                "BlacklistEntry": { "type": "object", "required": ["pattern"], "properties": {
                    "pattern": string, "reason": string,
                    "action": { "type": "string", "enum": ["allow", "busy", "congestion", "reject"] },
                }},
                "ClickToCall": { "type": "object", "required": ["to"], "properties": {
                    "to": string, "from": string,
                }},
                "Queue": queue_schema(),
                "CallNote": note_schema(),
                "BlacklistMode": { "type": "object", "required": ["mode"], "properties": {
                    "mode": { "type": "string", "enum": ["deny", "allow"] },
                    "default_action": { "type": "string", "enum": ["busy", "congestion", "reject"] },
                }},
                "Customer": { "type": "object", "required": ["name"], "properties": {
                    "name": string, "numbers": strings,
                    "type": { "type": "integer", "minimum": 0, "maximum": 9, "nullable": true },
                    "owner": string, "owner_group": string,
                    "fields": { "type": "object", "description": "custom field values by name: a string, an integer, or a list of strings for a multi_choice field" },
                }},
                "CustomerField": { "type": "object", "required": ["name", "type"], "properties": {
                    "name": string, "label": string,
                    "type": { "type": "string", "enum": ["text", "integer", "phone", "date", "time", "datetime", "single_choice", "multi_choice"] },
                    "required": { "type": "boolean" }, "default": {}, "choices": strings,
                }},
                "CustomerType": { "type": "object", "required": ["name"], "properties": { "name": string } },

                "GroupSpec": { "type": "object", "required": ["name", "description", "members"], "properties": {
                    "name": string, "description": string,
                    "members": { "type": "array", "items": { "type": "object", "properties": {
                        "user_id": { "type": "integer" }, "is_group_admin": { "type": "boolean" },
                    }}},
                }},
            },
        },
    });
    for name in ["ToolHost", "ToolUri", "ToolCapture"] {
        doc["components"]["schemas"][name] = tool_schema(name);
    }
    doc["components"]["schemas"]["ProvisioningToken"] = json!({
    "type": "object", "required": ["token"], "additionalProperties": false, "properties": {
        "token": { "type": "string", "maxLength": 4096, "description": "BL1: token text, or a link carrying it percent-encoded in t=" },
    }});
    doc["components"]["schemas"]["ProvisioningPhoto"] = json!({
    "type": "object", "required": ["photo"], "properties": {
        "photo": { "type": "string", "format": "binary", "description": "PNG or JPEG, at most 8 MiB" },
    }});
    if let (Some(schemas), Value::Object(campaign)) = (
        doc["components"]["schemas"].as_object_mut(),
        campaign_schemas(),
    ) {
        schemas.extend(campaign);
    }
    doc
}

/// The request bodies of the campaign routes (a separate `json!` keeps the document's
/// macro under the recursion limit).
fn campaign_schemas() -> Value {
    let string = json!({ "type": "string" });
    json!({
                "LeadList": { "type": "object", "required": ["name"], "properties": { "name": string } },
                "Campaign": { "type": "object", "required": ["name", "list_id", "group_id", "mode", "hours_start", "hours_end", "weekdays", "max_attempts", "busy_retry_s", "no_answer_retry_s", "failed_retry_s", "ring_timeout_s"], "properties": {
                    "name": string,
                    "list_id": { "type": "integer" }, "group_id": { "type": "integer" },
                    "mode": { "type": "string", "enum": ["preview", "progressive"] },
                    "hours_start": { "type": "string", "description": "HH:MM on the site's clocks ([telephony] time_zone, daylight saving time followed); responses carry the zone as time_zone" },
                    "hours_end": { "type": "string", "description": "HH:MM after hours_start (24:00 allowed); no window across midnight" },
                    "weekdays": { "type": "array", "items": { "type": "string", "enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] } },
                    "max_attempts": { "type": "integer", "minimum": 1, "maximum": 20 },
                    "busy_retry_s": { "type": "integer", "minimum": 60, "maximum": 604800 },
                    "no_answer_retry_s": { "type": "integer", "minimum": 60, "maximum": 604800 },
                    "failed_retry_s": { "type": "integer", "minimum": 60, "maximum": 604800 },
                    "ring_timeout_s": { "type": "integer", "minimum": 5, "maximum": 120 },
                    "caller_id": string,
                }},
                "LeadAssignment": { "type": "object", "required": ["leads"], "properties": {
                    "leads": { "type": "array", "items": { "type": "integer" } },
                    "user_id": { "type": "integer", "nullable": true },
                }},
                "NextLeads": { "type": "object", "properties": { "count": { "type": "integer", "minimum": 1 } } },
                "AttemptResult": { "type": "object", "properties": {
                    "outcome": { "type": "string", "enum": ["answered", "busy", "no_answer", "failed"], "description": "refused (409): the outcome is read from the call" },
                    "disposition": { "type": "integer", "minimum": 0, "maximum": 9 },
                    "notes": string,
                }},
                "Dial": { "type": "object", "properties": { "number": string } },
                "CampaignSettings": { "type": "object", "required": ["next_leads"], "properties": { "next_leads": { "type": "integer", "minimum": 1, "maximum": 100 } } },
    })
}

/// The schema of `GET /api/v1/sync` ([`crate::sync::status::SyncStatusReport`]).
fn sync_status_schema() -> Value {
    let string = json!({ "type": "string" });
    let int = json!({ "type": "integer" });
    let nullable_int = json!({ "type": "integer", "nullable": true });
    json!({ "type": "object", "required": ["state", "source", "epoch", "cursor", "backlog"], "properties": {
        "state": { "type": "string", "enum": ["not configured", "stopped", "running", "unknown"] },
        "source": { "type": "string", "enum": ["daemon", "store"] },
        "at_ms": int,
        "hq": { "type": "object", "nullable": true, "properties": { "url": string, "box_id": string } },
        "setup_error": { "type": "string", "nullable": true },
        "epoch": string,
        "cursor": int,
        "acked_seq": int,
        "backlog": { "type": "object", "properties": {
            "depth": int,
            "oldest_created_at_ms": nullable_int,
            "oldest_age_ms": nullable_int,
            "last_seq": int,
        }},
        "last_success_ms": nullable_int,
        "last_up_ok_ms": nullable_int,
        "last_down_ok_ms": nullable_int,
        "last_error": { "type": "object", "nullable": true, "properties": {
            "message": string, "at_ms": int,
        }},
        "file_policy": { "type": "object", "nullable": true },
        "in_flight": { "type": "object", "nullable": true, "properties": {
            "upload": { "type": "boolean" }, "feed": { "type": "boolean" },
        }},
        "next_attempt_ms": nullable_int,
        "live": { "type": "object", "nullable": true },
        "wan": { "type": "object", "nullable": true },
        "certificate": { "type": "object", "nullable": true, "properties": {
            "not_before_ms": int,
            "not_after_ms": int,
            "renew_at_ms": int,
            "last_renewal": { "type": "object", "nullable": true, "properties": {
                "at_ms": int,
                "result": { "type": "string", "enum": ["renewed", "failed", "revoked"] },
                "error": { "type": "string", "nullable": true },
            }},
            "next_attempt_ms": nullable_int,
        }},
    }})
}

/// The body of `PUT /api/v1/queues/{name}` (its own function: the document's `json!`
/// would pass the macro recursion limit).
fn queue_schema() -> Value {
    json!({ "type": "object", "required": ["number", "strategy"], "properties": {
                    "number": { "type": "string", "pattern": "^[0-9]{2,6}$" },
                    "strategy": { "type": "string", "enum": ["ring_all", "round_robin", "longest_idle", "fewest_calls", "skill_based"] },
                    "ring_timeout_ms": { "type": "integer", "minimum": 1 },
                    "wrap_up_ms": { "type": "integer", "minimum": 0 },
                    "max_wait_ms": { "type": "integer", "minimum": 1 },
                    "max_len": { "type": "integer", "minimum": 1 },
                    "skill_fallback_ms": { "type": "integer", "minimum": 1 },
                    "announce_every_ms": { "type": "integer", "minimum": 1 },
                    "music_on_hold": { "type": "string", "enum": ["silence", "tone", "prompt"] },
                    "moh_prompt": { "type": "string" },
                    "survey_prompt": { "type": "string" },
                    "recording": { "type": "string", "enum": ["always", "never", "on_demand"] },
                    "members": { "type": "array", "items": { "type": "object", "required": ["agent_id"], "properties": {
                        "agent_id": { "type": "string" }, "penalty": { "type": "integer", "minimum": 0, "maximum": 100 } } } },
                    "overflow": { "type": "object", "additionalProperties": { "type": "object", "required": ["kind"], "properties": {
                        "kind": { "type": "string", "enum": ["busy", "queue", "number", "voicemail"] }, "target": { "type": "string" } } } },
                    "vip": { "type": "array", "items": { "type": "string" } } } })
}

/// The body of `POST /api/v1/calls/{call_id}/notes`.
fn note_schema() -> Value {
    json!({ "type": "object", "required": ["text"], "properties": {
        "text": { "type": "string", "minLength": 1, "maxLength": 4000 } } })
}

/// The request bodies of `/api/v1/tools/...` (apart: the document's `json!` is at the
/// macro recursion limit).
fn tool_schema(name: &str) -> Value {
    match name {
        "ToolHost" => json!({ "type": "object", "additionalProperties": false, "properties": {
            "host": { "type": "string", "description": "a host name or IP literal; default HQ's host" },
            "count": { "type": "integer", "minimum": 1, "maximum": 10, "description": "ping only; default 4" },
        }}),
        "ToolUri" => json!({ "type": "object", "additionalProperties": false, "properties": {
            "uri": { "type": "string", "description": "sip:[user@]host[:port][;transport=udp|tcp]; default the trunk" },
        }}),
        _ => {
            json!({ "type": "object", "required": ["seconds"], "additionalProperties": false, "properties": {
                "seconds": { "type": "integer", "minimum": 1, "maximum": 60 },
            }})
        }
    }
}
