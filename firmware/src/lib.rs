//! `branchd`, the Branchline gateway daemon, as a library (the binary only parses
//! arguments, loads the config and calls [`daemon::run`]).
//!
//! # Modules
//!
//! - [`config`]: `branchd.toml`, raw serde structs validated into [`config::Config`].
//! - [`store`]: the SQLite store (WAL, migrations, one writer thread) with CDRs and the outbox.
//! - [`cdr`]: call detail records as produced by call control and kept by the store.
//! - [`tones`]: per-country tones and ring cadences (ITU-T E.180) and caller-ID modes.
//! - [`blacklist`]: caller screening (blacklist / allowlist of outside callers): the
//!   sans-IO matcher call control asks, and its store.
//! - [`customers`]: customer records (the box's small CRM and HQ's contact directory):
//!   sans-IO validation of custom fields against the site's schema, the store, CSV
//!   import/export, and the lookup by calling number for call control.
//! - [`numbers`]: the one canonical form of a telephone number (E.164 where the site's
//!   numbering plan can tell) every number comparison goes through, and the plan the
//!   stored numbers follow (re-normalised at start when it changes).
//! - [`campaign`]: outbound campaigns: lead lists (CSV import), campaigns, attempts
//!   and results in the store, and the sans-IO dialer (calling hours, retries,
//!   pacing, blacklist before every dial); preview dialling through the API, and the
//!   daemon's progressive dialer (`campaign::driver`), whose calls call control
//!   connects to the reserved agent when the lead answers.
//! - [`call`]: call control, a sans-IO state machine over board events and timers.
//! - [`acd`]: the call center's queues and agents (ACD), a sans-IO core call control
//!   will drive; its config from the store, the agent feature-code parser.
//! - [`media_engine`]: the media task between analog ports' frames and SIP legs' RTP
//!   (jitter buffer, transcoding, RFC 4733, leg-to-leg relay).
//! - [`prompts`]: voice prompts (WAV files in the data directory's `prompts/`) and the
//!   player the media engine pulls music on hold and announcements from.
//! - [`sip_endpoint`]: the SIP endpoint task: transports, guard, registrar for local
//!   phones, trunk registration, and the SIP side of B2BUA call legs (SDP, RTP via the
//!   media engine), between the `branchline-sip` cores and call control.
//! - [`daemon`]: the tokio edge: board driver task, store writer, shutdown.
//! - [`health`]: the post-boot health check: facts from the daemon's start (store,
//!   line controller, web and SIP listeners, main loop), a pure verdict, and the commit
//!   of an update's trial boot to its A/B slot (`[update]`, via `branchline-image`).
//! - [`sd_notify`]: systemd's notify protocol (`READY=1`, `WATCHDOG=1` from the main
//!   loop, `STOPPING=1`), written over a unix datagram socket.
//! - [`rbac`]: resources, actions, scopes, roles (built-ins as data) and the one
//!   authorization function, [`rbac::Authorizer::authorize`].
//! - [`accounts`]: users, groups, custom roles, login with lockout, argon2id passwords
//!   and PINs, CSV import/export, the installer account; every write audited.
//! - [`provision`]: USB provisioning: inotify on the stick mount points, bundles
//!   verified with `branchline-provisioning` and applied all-or-nothing in one SQLite
//!   transaction, the result file written back to the stick, progress on the LED;
//!   QR tokens from the web page (paste, link, photo decoded on the box) through the
//!   same checks and writes; the provisioning state and the box's claim code.
//! - [`factory_reset`]: the reset button's press-duration detector (10 s), the wipe
//!   (store, keys, recordings; firmware slots kept) and the daemon's data-dir lock.
//! - [`recorder`]: call recording: crash-safe stereo WAV files written off the
//!   real-time path, repaired at start-up, indexed for sync, disk guard and retention.
//! - [`voicemail`]: mailboxes and messages in the store, the crash-safe mono WAV writer
//!   of messages being left and its start-up recovery (call control's side of
//!   voicemail is `call::voicemail`).
//! - [`enroll`]: enrollment with HQ: the device key (0600), the CSR with the
//!   provisioned one-time token, HQ's CA checked against the token's pin, the
//!   certificate stored atomically, then mutual TLS; retries with backoff, a refusal
//!   kept in the provisioning state; a new bundle on an enrolled (or revoked) box
//!   re-enrolls it with a new key.
//! - [`renew`]: renewal of the device certificate before it expires, over mutual
//!   TLS with a new key, stored atomically (staged files, recovered at start), the
//!   identity switched in every client; `revoked` shown and retried only rarely.
//! - [`audit`]: the append-only, hash-chained audit log and its verifier.
//! - [`mask`]: masking of customers' phone numbers; the one path CDRs leave the box by.
//! - [`api`]: the local accounts HTTP API under `/api/v1` (axum): sessions, CSRF,
//!   users/roles/groups CRUD, CSV import/export, masked CDRs, audit, sync status and
//!   force, OpenAPI.
//! - [`reports`]: call-center reports over a period (per queue: offered, answered,
//!   abandoned, waits, handle time, service level; per agent: calls, talk time, time
//!   per state, pauses, login time), computed in SQL from CDRs and the agent state log.
//! - [`site_time`]: the site's time zone (`[telephony] time_zone`, IANA name or POSIX
//!   rule, DST included), kept in the store for campaign calling hours.
//! - [`screen_pop`]: the agents' desktop events (bounded broadcast from the main loop
//!   to `/api/v1/events`) and click-to-call requests to the main loop.
//! - [`sync`]: the box's side of sync with HQ: applying the change feed, the agent
//!   task (outbox up, feed down, over HTTPS with mutual TLS), the WAN monitor task,
//!   the sync status.
//! - [`tools`]: the technician's tools (ping / traceroute to HQ, SIP OPTIONS probe,
//!   packet capture as pcap, the diagnostics bundle) behind `/api/v1/tools` and `/tools`.
//! - [`web`]: the local web diagnostics page (server-rendered HTML, one CSS and one JS
//!   file, SSE live updates) and the live status the main loop publishes for it.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod acd;
pub mod api;
pub mod audit;
pub mod blacklist;
pub mod call;
pub mod campaign;
pub mod cdr;
pub mod config;
pub mod customers;
pub mod daemon;
pub mod enroll;
pub mod error;
pub mod factory_reset;
pub mod health;
pub mod mask;
pub mod media_engine;
pub mod numbers;
pub mod prompts;
pub mod provision;
pub mod rbac;
pub mod recorder;
pub mod renew;
pub mod reports;
pub mod screen_pop;
pub mod sd_notify;
pub mod sip_endpoint;
pub mod site_time;
pub mod store;
pub mod sync;
pub mod tones;
pub mod tools;
pub mod updater;
pub mod voicemail;
pub mod web;
