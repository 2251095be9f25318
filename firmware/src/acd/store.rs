//! The ACD's tables (migration 0007): loading the validated [`AcdConfig`] from them and
//! appending to the agent state history.
//!
//! Agents are the enabled users with an agent ID (`users.agent_id`), with their
//! `agent_skills` and extension mode (`users.extension_mode`, migration 0018; `fixed`
//! means the user's own `extension`, so a fixed agent without one is a bad row). Queue members refer to users; a member whose user has no agent ID
//! is a bad row (an error naming the queue and user), a member whose user is disabled
//! is left out (disabling a user must not stop the call center). Every value is
//! validated with the same newtypes as the rest of the ACD; the first bad value fails
//! the whole load with [`StoreError::BadRow`] (table, row key, column, what is wrong)
//! and nothing is returned, so call control keeps running with the configuration it
//! had.
//!
//! Every state change is appended to `agent_state_log` and, in the same transaction,
//! to the outbox as a [`RecordKind::AgentState`] record ([`AgentStateRecord`], keyed by
//! the agent ID), so HQ gets each change exactly once.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use branchline_sync::wire::{AgentStateName, AgentStateRecord, DispositionRecord, RecordKind};
use rusqlite::{params, Connection, OptionalExtension};

use crate::config::{ExtensionNumber, RecordingPolicy};
use crate::error::InvalidValue;

use super::config::{
    AcdConfig, AgentConfig, AgentId, ExtensionMode, Member, MusicOnHold, OverflowTarget,
    QueueConfig, QueueName, Skill, SkillLevel, Strategy, TargetNumber, VipPattern,
};
use super::error::StoreError;
use super::{AgentState, CallId};

fn sql<'a>(path: &'a Path, op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::Sqlite {
        path: path.to_owned(),
        op,
        source,
    }
}

struct RowCtx<'a> {
    path: &'a Path,
    table: &'static str,
    key: String,
}

impl RowCtx<'_> {
    fn bad(&self, column: &'static str, message: impl Into<String>) -> StoreError {
        StoreError::BadRow {
            path: self.path.to_owned(),
            table: self.table,
            key: self.key.clone(),
            column,
            message: message.into(),
        }
    }

    fn parse<T: FromStr<Err = InvalidValue>>(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<T, StoreError> {
        value
            .parse()
            .map_err(|e: InvalidValue| self.bad(column, e.to_string()))
    }

    fn millis(&self, column: &'static str, ms: i64) -> Result<Duration, StoreError> {
        u64::try_from(ms)
            .map(Duration::from_millis)
            .map_err(|_| self.bad(column, format!("{ms} is negative")))
    }
}

fn recording_policy(ctx: &RowCtx<'_>, value: &str) -> Result<RecordingPolicy, StoreError> {
    RecordingPolicy::parse(value).ok_or_else(|| {
        ctx.bad(
            "recording",
            format!("{value:?} is not a policy ({})", RecordingPolicy::NAMES),
        )
    })
}

/// Loads and validates the ACD configuration. See the module docs.
pub fn load_config(conn: &Connection, path: &Path) -> Result<AcdConfig, StoreError> {
    // Agents and their skills.
    let mut agents: BTreeMap<i64, AgentConfig> = BTreeMap::new();
    let mut stmt = conn
        .prepare(
            "SELECT id, agent_id, recording, extension_mode, extension FROM users
              WHERE agent_id IS NOT NULL AND enabled = 1 ORDER BY id",
        )
        .map_err(sql(path, "read agents"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .map_err(sql(path, "read agents"))?;
    for row in rows {
        let (user_id, agent_id, recording, mode, extension) =
            row.map_err(sql(path, "read agents"))?;
        let ctx = RowCtx {
            path,
            table: "users",
            key: user_id.to_string(),
        };
        let id: AgentId = ctx.parse("agent_id", &agent_id)?;
        let recording = recording_policy(&ctx, &recording)?;
        let mode = ExtensionMode::parse(&mode, extension.as_deref())
            .map_err(|e| ctx.bad("extension_mode", e))?;
        agents.insert(
            user_id,
            AgentConfig {
                id,
                skills: BTreeMap::new(),
                recording,
                mode,
            },
        );
    }
    let mut stmt = conn
        .prepare("SELECT user_id, skill, level FROM agent_skills ORDER BY user_id, skill")
        .map_err(sql(path, "read agent skills"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(sql(path, "read agent skills"))?;
    for row in rows {
        let (user_id, skill, level) = row.map_err(sql(path, "read agent skills"))?;
        let Some(agent) = agents.get_mut(&user_id) else {
            continue; // not an (enabled) agent: the skill is kept for when it is
        };
        let ctx = RowCtx {
            path,
            table: "agent_skills",
            key: format!("{user_id}/{skill}"),
        };
        let name: Skill = ctx.parse("skill", &skill)?;
        let level = SkillLevel::try_from(level).map_err(|e| ctx.bad("level", e.to_string()))?;
        agent.skills.insert(name, level);
    }

    // Queues.
    let mut queues: Vec<(i64, QueueConfig)> = Vec::new();
    let mut stmt = conn
        .prepare(
            "SELECT id, name, number, strategy, ring_timeout_ms, wrap_up_ms, max_wait_ms,
                    max_len, skill_fallback_ms, announce_every_ms, music_on_hold, moh_prompt,
                    survey_prompt, recording
             FROM queues ORDER BY id",
        )
        .map_err(sql(path, "read queues"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                [
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                    r.get::<_, Option<i64>>(9)?,
                ],
                r.get::<_, String>(10)?,
                r.get::<_, Option<String>>(11)?,
                r.get::<_, Option<String>>(12)?,
                r.get::<_, String>(13)?,
            ))
        })
        .map_err(sql(path, "read queues"))?;
    for row in rows {
        let (id, name, number, strategy, ring_ms, wrap_ms, opt, moh, prompt, survey, recording) =
            row.map_err(sql(path, "read queues"))?;
        let ctx = RowCtx {
            path,
            table: "queues",
            key: format!("{id} ({name})"),
        };
        let name: QueueName = ctx.parse("name", &name)?;
        let number: ExtensionNumber = ctx.parse("number", &number)?;
        let strategy: Strategy = ctx.parse("strategy", &strategy)?;
        let mut q = QueueConfig::new(name, number, strategy);
        q.ring_timeout = ctx.millis("ring_timeout_ms", ring_ms)?;
        q.wrap_up = ctx.millis("wrap_up_ms", wrap_ms)?;
        let [max_wait, max_len, fallback, announce] = opt;
        q.max_wait = max_wait.map(|v| ctx.millis("max_wait_ms", v)).transpose()?;
        q.max_len = max_len
            .map(|v| usize::try_from(v).map_err(|_| ctx.bad("max_len", format!("{v} is negative"))))
            .transpose()?;
        q.skill_fallback = fallback
            .map(|v| ctx.millis("skill_fallback_ms", v))
            .transpose()?;
        q.announce_every = announce
            .map(|v| ctx.millis("announce_every_ms", v))
            .transpose()?;
        q.music_on_hold = match (moh.as_str(), prompt) {
            ("silence", None) => MusicOnHold::Silence,
            ("tone", None) => MusicOnHold::Tone,
            ("prompt", Some(p)) if !p.is_empty() => MusicOnHold::Prompt(p),
            (other, _) => {
                return Err(ctx.bad(
                    "music_on_hold",
                    format!(
                        "{other:?} with this moh_prompt is not silence, tone or prompt with a name"
                    ),
                ))
            }
        };
        q.survey = survey;
        q.recording = recording_policy(&ctx, &recording)?;
        queues.push((id, q));
    }
    let index: BTreeMap<i64, usize> = queues
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let queue_pos = |id: i64| index.get(&id).copied();

    let mut stmt = conn
        .prepare(
            "SELECT queue_id, event, kind, target FROM queue_overflow ORDER BY queue_id, event",
        )
        .map_err(sql(path, "read queue overflow"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(sql(path, "read queue overflow"))?;
    let mut overflow = Vec::new();
    for row in rows {
        overflow.push(row.map_err(sql(path, "read queue overflow"))?);
    }
    for (queue_id, event, kind, target) in overflow {
        let Some(i) = queue_pos(queue_id) else {
            continue; // the foreign key keeps this from happening
        };
        let ctx = RowCtx {
            path,
            table: "queue_overflow",
            key: format!("{queue_id}/{event}"),
        };
        let target = match kind.as_str() {
            "voicemail" => OverflowTarget::Voicemail(ctx.parse("target", &target)?),
            "queue" => OverflowTarget::Queue(ctx.parse("target", &target)?),
            "number" => OverflowTarget::Number(ctx.parse::<TargetNumber>("target", &target)?),
            "busy" => OverflowTarget::Busy,
            other => return Err(ctx.bad("kind", format!("unknown kind {other:?}"))),
        };
        let q = &mut queues[i].1;
        match event.as_str() {
            "full" => q.on_full = target,
            "max_wait" => q.on_max_wait = target,
            "no_agents" => q.on_no_agents = Some(target),
            other => return Err(ctx.bad("event", format!("unknown event {other:?}"))),
        }
    }

    let mut stmt = conn
        .prepare("SELECT queue_id, pattern FROM queue_vip ORDER BY queue_id, pattern")
        .map_err(sql(path, "read queue VIPs"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .map_err(sql(path, "read queue VIPs"))?;
    let mut vips = Vec::new();
    for row in rows {
        vips.push(row.map_err(sql(path, "read queue VIPs"))?);
    }
    // VIP callers are recognised in every form of their number (crate::numbers).
    let plan =
        crate::numbers::store::site_plan(conn).map_err(sql(path, "read the numbering plan"))?;
    for (queue_id, pattern) in vips {
        let Some(i) = queue_pos(queue_id) else {
            continue;
        };
        let ctx = RowCtx {
            path,
            table: "queue_vip",
            key: format!("{queue_id}/{pattern}"),
        };
        let p: VipPattern = ctx.parse("pattern", &pattern)?;
        queues[i].1.vip.push(match &plan {
            Some(plan) => p.with_plan(plan),
            None => p,
        });
    }

    let mut stmt = conn
        .prepare(
            "SELECT m.queue_id, m.user_id, m.penalty, u.agent_id, u.enabled
             FROM queue_members m JOIN users u ON u.id = m.user_id
             ORDER BY m.queue_id, m.position, m.user_id",
        )
        .map_err(sql(path, "read queue members"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .map_err(sql(path, "read queue members"))?;
    let mut members = Vec::new();
    for row in rows {
        members.push(row.map_err(sql(path, "read queue members"))?);
    }
    for (queue_id, user_id, penalty, agent_id, enabled) in members {
        let Some(i) = queue_pos(queue_id) else {
            continue;
        };
        let ctx = RowCtx {
            path,
            table: "queue_members",
            key: format!("{queue_id}/{user_id}"),
        };
        if agent_id.is_none() {
            return Err(ctx.bad("user_id", format!("user {user_id} has no agent ID")));
        }
        if enabled == 0 {
            continue;
        }
        let Some(agent) = agents.get(&user_id) else {
            continue;
        };
        let penalty = u32::try_from(penalty)
            .map_err(|_| ctx.bad("penalty", format!("{penalty} is negative")))?;
        queues[i].1.members.push(Member {
            agent: agent.id.clone(),
            penalty,
        });
    }

    AcdConfig::new(
        queues.into_iter().map(|(_, q)| q).collect(),
        agents.into_values().collect(),
    )
    .map_err(|source| StoreError::Inconsistent {
        path: path.to_owned(),
        source,
    })
}

/// Appends one agent state change to `agent_state_log` and the outbox (`at_ms`: wall
/// clock, ms since the Unix epoch, as call control maps the action's `Instant`;
/// `call_id`: the call's CDR id while ringing or on a call). Run it inside a
/// transaction: the two rows are written together or not at all.
pub fn append_state_log(
    conn: &Connection,
    path: &Path,
    agent: &AgentId,
    state: &AgentState,
    extension: Option<&str>,
    call_id: Option<&str>,
    at_ms: i64,
) -> Result<(), StoreError> {
    let (reason, call) = match state {
        AgentState::Paused(r) => (r.as_ref().map(|r| r.as_str()), None),
        AgentState::Ringing(CallId(c)) | AgentState::OnCall(CallId(c)) => {
            (None, i64::try_from(*c).ok())
        }
        _ => (None, None),
    };
    conn.execute(
        "INSERT INTO agent_state_log (agent_id, state, reason, extension, call_id, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![agent.as_str(), state.name(), reason, extension, call, at_ms],
    )
    .map_err(sql(path, "append agent state"))?;
    let record = AgentStateRecord {
        agent_id: agent.as_str().to_owned(),
        state: wire_state(state),
        reason: reason.map(str::to_owned),
        extension: extension.map(str::to_owned),
        call_id: call.and(call_id).map(str::to_owned),
        at_ms,
    };
    let payload = serde_json::to_string(&record).map_err(|e| StoreError::BadRow {
        path: path.to_owned(),
        table: "outbox",
        key: agent.as_str().to_owned(),
        column: "payload",
        message: e.to_string(),
    })?;
    conn.execute(
        "INSERT INTO outbox (kind, record_key, payload, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
        params![
            RecordKind::AgentState.as_str(),
            agent.as_str(),
            payload,
            at_ms
        ],
    )
    .map_err(sql(path, "queue agent state for HQ"))?;
    Ok(())
}

/// The wire name of a state.
fn wire_state(state: &AgentState) -> AgentStateName {
    match state {
        AgentState::LoggedOut => AgentStateName::LoggedOut,
        AgentState::Available => AgentStateName::Available,
        AgentState::Ringing(_) => AgentStateName::Ringing,
        AgentState::OnCall(_) => AgentStateName::OnCall,
        AgentState::WrapUp => AgentStateName::WrapUp,
        AgentState::Paused(_) => AgentStateName::Paused,
    }
}

/// Whether `pin` is the PIN of agent `agent` (an enabled user with that agent ID and a
/// PIN set), checked against `users.pin_hash` (argon2id: slow on purpose, so never on
/// the board loop). False for an unknown or disabled agent or one without a PIN.
pub fn check_agent_pin(
    conn: &Connection,
    path: &Path,
    agent: &AgentId,
    pin: &super::codes::Pin,
) -> Result<bool, StoreError> {
    let hash: Option<Option<String>> = conn
        .query_row(
            "SELECT pin_hash FROM users WHERE agent_id = ?1 AND enabled = 1",
            params![agent.as_str()],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(sql(path, "read agent PIN"))?;
    let Some(Some(hash)) = hash else {
        return Ok(false);
    };
    crate::accounts::password::verify_secret(pin.expose(), &hash).map_err(|e| StoreError::BadRow {
        path: path.to_owned(),
        table: "users",
        key: agent.as_str().to_owned(),
        column: "pin_hash",
        message: e.to_string(),
    })
}

/// What [`record_disposition`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDisposition {
    /// The customer type of the digit.
    pub type_name: String,
    /// The customer whose type was set (the caller's), if one has the call's caller
    /// number.
    pub customer_id: Option<i64>,
}

/// Stores the disposition `digit` agent `agent` keyed for call `call_id` from
/// `caller`, in the caller's transaction: the `cdr_dispositions` row (replacing an
/// earlier one of the call), the caller's customer record set to that type, and a
/// [`RecordKind::Disposition`] outbox row for HQ. `Ok(None)`, with nothing changed,
/// when no customer type has that digit.
pub fn record_disposition(
    conn: &Connection,
    path: &Path,
    agent: &AgentId,
    call_id: &str,
    caller: &str,
    digit: u8,
    at_ms: i64,
) -> Result<Option<StoredDisposition>, StoreError> {
    let type_name: Option<String> = conn
        .query_row(
            "SELECT name FROM customer_types WHERE digit = ?1",
            [digit],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql(path, "read the customer type"))?;
    let Some(type_name) = type_name else {
        return Ok(None);
    };
    // The caller's customer as caller ID names it (local records first).
    let plan = crate::numbers::store::site_plan(conn)
        .map_err(sql(path, "read the site's numbering plan"))?;
    let customer: Option<(i64, Option<String>)> =
        match crate::numbers::canonical(plan.as_ref(), caller) {
            Err(_) => None,
            Ok(number) => conn
                .query_row(
                    "SELECT c.id, c.hq_id FROM customer_numbers n
                       JOIN customers c ON c.id = n.customer_id
                      WHERE n.number = ?1
                      ORDER BY c.source = 'hq', c.id
                      LIMIT 1",
                    [&number],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sql(path, "find the caller's customer"))?,
        };
    if let Some((id, _)) = &customer {
        conn.execute(
            "UPDATE customers SET type_digit = ?1, updated_at_ms = ?2 WHERE id = ?3",
            params![digit, at_ms, id],
        )
        .map_err(sql(path, "set the customer's type"))?;
    }
    if let Some((id, None)) = &customer {
        // A local customer's new type goes to HQ with it (HQ's contacts are HQ's).
        crate::customers::store::schema(conn, path)
            .and_then(|stored| {
                crate::customers::store::queue_local(conn, path, &stored.schema, *id, at_ms)
            })
            .map_err(|e| StoreError::BadRow {
                path: path.to_owned(),
                table: "customers",
                key: id.to_string(),
                column: "type_digit",
                message: format!("queueing the customer for HQ: {e}"),
            })?;
    }
    let customer_id = customer.as_ref().map(|(id, _)| *id);
    conn.execute(
        "INSERT INTO cdr_dispositions (call_id, agent_id, digit, type_name, customer_id, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (call_id) DO UPDATE SET agent_id = excluded.agent_id,
             digit = excluded.digit, type_name = excluded.type_name,
             customer_id = excluded.customer_id, at_ms = excluded.at_ms",
        params![
            call_id,
            agent.as_str(),
            digit,
            type_name,
            customer_id,
            at_ms
        ],
    )
    .map_err(sql(path, "store the disposition"))?;
    let record = DispositionRecord {
        call_id: call_id.to_owned(),
        agent_id: agent.as_str().to_owned(),
        digit,
        type_name: type_name.clone(),
        customer_hq_id: customer.and_then(|(_, hq)| hq),
        at_ms,
    };
    let payload = serde_json::to_string(&record).map_err(|e| StoreError::BadRow {
        path: path.to_owned(),
        table: "outbox",
        key: call_id.to_owned(),
        column: "payload",
        message: e.to_string(),
    })?;
    conn.execute(
        "INSERT INTO outbox (kind, record_key, payload, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
        params![RecordKind::Disposition.as_str(), call_id, payload, at_ms],
    )
    .map_err(sql(path, "queue the disposition for HQ"))?;
    Ok(Some(StoredDisposition {
        type_name,
        customer_id,
    }))
}

/// HQ's queue `q` (wire [`branchline_sync::wire::Queue`], keyed by number) as the
/// call center's rows, in the caller's transaction: the `queues` row (HQ's revision;
/// strategy, max wait), its members (HQ's agent usernames: users unknown on the box or
/// without an agent ID are skipped and returned, so a page is not refused for a user
/// HQ sends later), and the max-wait overflow to `q.overflow`. What HQ's entity does not
/// carry (ring timeout, wrap-up, music, announcements, survey) keeps the box's values.
/// The row's name is the display name made a queue name (`a-z 0-9 - _`, at most 32:
/// "Sales EU" is `sales-eu`), or `queue-<number>`; a name another queue holds gets
/// `-<number>` added. Refused (nothing written) when the number or strategy cannot be
/// a queue's.
pub fn upsert_hq_queue(
    conn: &Connection,
    path: &Path,
    q: &branchline_sync::wire::Queue,
    revision: i64,
    now_ms: i64,
) -> Result<Vec<String>, HqQueueError> {
    let number: ExtensionNumber = q
        .number
        .parse()
        .map_err(|e| HqQueueError::Invalid(format!("number: {e}")))?;
    if !(2..=6).contains(&q.number.len()) {
        return Err(HqQueueError::Invalid(
            "number: a queue's number has 2 to 6 digits".to_owned(),
        ));
    }
    let strategy = Strategy::from_str(&q.strategy).map_err(|_| {
        HqQueueError::Invalid(format!("strategy: {:?} is not a strategy", q.strategy))
    })?;
    if let Some(target) = &q.overflow {
        if target.is_empty()
            || target.len() > 32
            || !target.bytes().all(|b| b.is_ascii_digit() || b == b'+')
        {
            return Err(HqQueueError::Invalid(format!(
                "overflow: {target:?} is not a number"
            )));
        }
    }
    let mut name = queue_name_of(&q.name, number.as_str());
    let taken: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM queues WHERE name = ?1 AND number <> ?2)",
            params![name, q.number],
            |r| r.get(0),
        )
        .map_err(sql(path, "check queue name"))?;
    if taken {
        name = format!(
            "{}-{}",
            &name[..name.len().min(32 - 1 - q.number.len())],
            q.number
        );
    }
    let max_wait_ms = (q.max_wait_s > 0).then(|| i64::from(q.max_wait_s) * 1000);
    conn.execute(
        "INSERT INTO queues (name, number, strategy, max_wait_ms, revision, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (number) DO UPDATE SET name = excluded.name,
             strategy = excluded.strategy, max_wait_ms = excluded.max_wait_ms,
             revision = excluded.revision, updated_at_ms = excluded.updated_at_ms",
        params![
            name,
            q.number,
            strategy.as_str(),
            max_wait_ms,
            revision,
            now_ms
        ],
    )
    .map_err(sql(path, "upsert queue from hq"))?;
    let id: i64 = conn
        .query_row(
            "SELECT id FROM queues WHERE number = ?1",
            [&q.number],
            |r| r.get(0),
        )
        .map_err(sql(path, "read queue id"))?;
    conn.execute("DELETE FROM queue_members WHERE queue_id = ?1", [id])
        .map_err(sql(path, "clear queue members"))?;
    let mut skipped = Vec::new();
    for (position, username) in q.agents.iter().enumerate() {
        let user: Option<i64> = conn
            .query_row(
                "SELECT id FROM users WHERE username = ?1 AND agent_id IS NOT NULL",
                [username],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(path, "find queue member"))?;
        match user {
            Some(user) => {
                conn.execute(
                    "INSERT OR IGNORE INTO queue_members (queue_id, user_id, position)
                     VALUES (?1, ?2, ?3)",
                    params![id, user, position as i64],
                )
                .map_err(sql(path, "add queue member"))?;
            }
            None => skipped.push(username.clone()),
        }
    }
    match &q.overflow {
        Some(target) => conn.execute(
            "INSERT INTO queue_overflow (queue_id, event, kind, target) VALUES (?1, 'max_wait', 'number', ?2)
             ON CONFLICT (queue_id, event) DO UPDATE SET kind = excluded.kind, target = excluded.target",
            params![id, target],
        ),
        None => conn.execute(
            "DELETE FROM queue_overflow WHERE queue_id = ?1 AND event = 'max_wait'",
            [id],
        ),
    }
    .map_err(sql(path, "set queue overflow"))?;
    Ok(skipped)
}

/// Deletes HQ's queue with `number` (a queue made on the box, revision 0, stays).
/// Returns whether one was deleted.
pub fn delete_hq_queue(conn: &Connection, path: &Path, number: &str) -> Result<bool, StoreError> {
    let n = conn
        .execute(
            "DELETE FROM queues WHERE number = ?1 AND revision > 0",
            [number],
        )
        .map_err(sql(path, "delete queue from hq"))?;
    Ok(n > 0)
}

/// Why HQ's queue row was not written.
#[derive(Debug, thiserror::Error)]
pub enum HqQueueError {
    /// The row cannot be a queue of the box (the sync refuses it).
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A display name made a queue name (see [`upsert_hq_queue`]).
fn queue_name_of(display: &str, number: &str) -> String {
    let mut name = String::new();
    for c in display.trim().chars().flat_map(char::to_lowercase) {
        match c {
            'a'..='z' | '0'..='9' | '_' | '-' => name.push(c),
            ' ' | '.' | '/' if !name.ends_with('-') => name.push('-'),
            _ => {}
        }
        if name.len() == 32 {
            break;
        }
    }
    let name = name.trim_matches('-').to_owned();
    if name.is_empty() {
        format!("queue-{number}")
    } else {
        name
    }
}

// --- queues made on the box (`/api/v1/queues`) ------------------------------------------

/// A queue as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueRow {
    /// The queue's name.
    pub name: String,
    /// The number callers dial.
    pub number: String,
    /// The strategy.
    pub strategy: String,
    /// Ring timeout per agent, ms.
    pub ring_timeout_ms: i64,
    /// Wrap-up, ms.
    pub wrap_up_ms: i64,
    /// Longest wait, ms (none: no limit).
    pub max_wait_ms: Option<i64>,
    /// Most callers waiting (none: no limit).
    pub max_len: Option<i64>,
    /// Skill fallback, ms.
    pub skill_fallback_ms: Option<i64>,
    /// Announcement period, ms.
    pub announce_every_ms: Option<i64>,
    /// `silence`, `tone` or `prompt`.
    pub music_on_hold: String,
    /// The music prompt.
    pub moh_prompt: Option<String>,
    /// The survey prompt.
    pub survey_prompt: Option<String>,
    /// Recording policy: `always`, `never` or `on_demand`.
    pub recording: String,
    /// Members in offer order.
    pub members: Vec<MemberRow>,
    /// Overflow rules by event (`full`, `max_wait`, `no_agents`).
    pub overflow: BTreeMap<String, OverflowRow>,
    /// VIP patterns.
    pub vip: Vec<String>,
    /// `hq` (synced down, HQ's to change) or `local` (made on the box).
    pub source: &'static str,
}

/// A member of a [`QueueRow`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberRow {
    /// The agent ID.
    pub agent_id: String,
    /// The user.
    pub username: String,
    /// The penalty.
    pub penalty: i64,
}

/// An overflow rule of a [`QueueRow`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OverflowRow {
    /// `busy`, `queue`, `number` or `voicemail`.
    pub kind: String,
    /// Its target (empty for `busy`).
    pub target: String,
}

/// A member in a request body.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    /// The agent's ID (work number).
    pub agent_id: String,
    /// 0 (rung first) to 100.
    #[serde(default)]
    pub penalty: u32,
}

/// An overflow rule in a request body.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct OverflowBody {
    /// `busy`, `queue`, `number` or `voicemail`.
    pub kind: String,
    /// The queue name, number or mailbox (none for `busy`).
    #[serde(default)]
    pub target: Option<String>,
}

/// A queue as `PUT /api/v1/queues/{name}` gives it (checked by [`LocalQueue::check`]).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueBody {
    /// The number callers dial (2 to 6 digits).
    pub number: String,
    /// `ring_all`, `round_robin`, `longest_idle`, `fewest_calls` or `skill_based`.
    pub strategy: String,
    /// How long one agent rings (default 15 s).
    #[serde(default)]
    pub ring_timeout_ms: Option<i64>,
    /// After-call work (default none).
    #[serde(default)]
    pub wrap_up_ms: Option<i64>,
    /// Longest wait before the `max_wait` overflow.
    #[serde(default)]
    pub max_wait_ms: Option<i64>,
    /// Most callers waiting before the `full` overflow.
    #[serde(default)]
    pub max_len: Option<i64>,
    /// Skill-based: any agent after this long.
    #[serde(default)]
    pub skill_fallback_ms: Option<i64>,
    /// Position announcements this often.
    #[serde(default)]
    pub announce_every_ms: Option<i64>,
    /// `silence`, `tone` (default) or `prompt`.
    #[serde(default)]
    pub music_on_hold: Option<String>,
    /// The music prompt, with `prompt`.
    #[serde(default)]
    pub moh_prompt: Option<String>,
    /// The post-call survey's prompt.
    #[serde(default)]
    pub survey_prompt: Option<String>,
    /// Recording policy: `always`, `never` (default) or `on_demand`.
    #[serde(default)]
    pub recording: Option<String>,
    /// Members in offer order.
    #[serde(default)]
    pub members: Vec<MemberBody>,
    /// Overflow rules by event.
    #[serde(default)]
    pub overflow: BTreeMap<String, OverflowBody>,
    /// Callers who jump the queue: numbers or prefixes ending in `*`.
    #[serde(default)]
    pub vip: Vec<String>,
}

/// A queue to write, its fields checked one by one ([`LocalQueue::check`]).
#[derive(Debug, Clone)]
pub struct LocalQueue {
    name: QueueName,
    body: QueueBody,
}

impl LocalQueue {
    /// Checks `body` for queue `name`: every bad field is named (400).
    pub fn check(name: &str, body: &QueueBody) -> crate::error::Result<LocalQueue> {
        use crate::error::FieldProblem;
        let mut problems = Vec::new();
        let mut bad =
            |field: String, message: String| problems.push(FieldProblem { field, message });
        let parsed_name = name.parse::<QueueName>();
        if let Err(e) = &parsed_name {
            bad("name".into(), e.to_string());
        }
        if !(2..=6).contains(&body.number.len()) || !body.number.bytes().all(|b| b.is_ascii_digit())
        {
            bad("number".into(), "must be 2 to 6 digits".into());
        }
        if let Err(e) = body.strategy.parse::<Strategy>() {
            bad("strategy".into(), e.to_string());
        }
        for (field, v, zero_ok) in [
            ("ring_timeout_ms", body.ring_timeout_ms, false),
            ("wrap_up_ms", body.wrap_up_ms, true),
            ("max_wait_ms", body.max_wait_ms, false),
            ("max_len", body.max_len, false),
            ("skill_fallback_ms", body.skill_fallback_ms, false),
            ("announce_every_ms", body.announce_every_ms, false),
        ] {
            match v {
                Some(v) if v < 0 || (v == 0 && !zero_ok) => bad(
                    field.into(),
                    format!(
                        "{v}: must be {}",
                        if zero_ok { "0 or more" } else { "more than 0" }
                    ),
                ),
                _ => {}
            }
        }
        let music = body.music_on_hold.as_deref().unwrap_or("tone");
        if !["silence", "tone", "prompt"].contains(&music) {
            bad(
                "music_on_hold".into(),
                format!("{music:?}: must be silence, tone or prompt"),
            );
        }
        if (music == "prompt") != body.moh_prompt.is_some() {
            bad(
                "moh_prompt".into(),
                "is given exactly when music_on_hold is prompt".into(),
            );
        }
        for (field, p) in [
            ("moh_prompt", &body.moh_prompt),
            ("survey_prompt", &body.survey_prompt),
        ] {
            if let Some(p) = p {
                if !crate::prompts::valid_name(p) {
                    bad(
                        field.into(),
                        format!("{p:?}: a prompt name is 1 to 64 of a-z 0-9 - _"),
                    );
                }
            }
        }
        if let Some(r) = &body.recording {
            if RecordingPolicy::parse(r).is_none() {
                bad(
                    "recording".into(),
                    format!("{r:?}: must be {}", RecordingPolicy::NAMES),
                );
            }
        }
        for (i, m) in body.members.iter().enumerate() {
            if let Err(e) = m.agent_id.parse::<AgentId>() {
                bad(format!("members[{i}].agent_id"), e.to_string());
            }
            if m.penalty > 100 {
                bad(format!("members[{i}].penalty"), "must be 0 to 100".into());
            }
        }
        for (event, o) in &body.overflow {
            if !["full", "max_wait", "no_agents"].contains(&event.as_str()) {
                bad(
                    format!("overflow.{event}"),
                    "the events are full, max_wait and no_agents".into(),
                );
            }
            match (o.kind.as_str(), o.target.as_deref()) {
                ("busy", None | Some("")) => {}
                ("queue" | "number" | "voicemail", Some(t)) if !t.is_empty() => {}
                ("busy" | "queue" | "number" | "voicemail", _) => bad(
                    format!("overflow.{event}.target"),
                    "is given exactly when the kind is not busy".into(),
                ),
                (kind, _) => bad(
                    format!("overflow.{event}.kind"),
                    format!("{kind:?}: must be busy, queue, number or voicemail"),
                ),
            }
        }
        for (i, v) in body.vip.iter().enumerate() {
            if let Err(e) = v.parse::<VipPattern>() {
                bad(format!("vip[{i}]"), e.to_string());
            }
        }
        match parsed_name {
            Ok(name) if problems.is_empty() => Ok(LocalQueue {
                name,
                body: body.clone(),
            }),
            _ => Err(crate::error::Error::Invalid {
                entity: "queue",
                key: name.to_owned(),
                problems,
            }),
        }
    }
}

/// Every queue, by name.
pub fn list_queues(conn: &Connection, path: &Path) -> Result<Vec<QueueRow>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT id, name, number, strategy, ring_timeout_ms, wrap_up_ms, max_wait_ms, max_len,
                    skill_fallback_ms, announce_every_ms, music_on_hold, moh_prompt,
                    survey_prompt, revision, recording
               FROM queues ORDER BY name",
        )
        .map_err(sql(path, "list queues"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                QueueRow {
                    name: r.get(1)?,
                    number: r.get(2)?,
                    strategy: r.get(3)?,
                    ring_timeout_ms: r.get(4)?,
                    wrap_up_ms: r.get(5)?,
                    max_wait_ms: r.get(6)?,
                    max_len: r.get(7)?,
                    skill_fallback_ms: r.get(8)?,
                    announce_every_ms: r.get(9)?,
                    music_on_hold: r.get(10)?,
                    moh_prompt: r.get(11)?,
                    survey_prompt: r.get(12)?,
                    recording: r.get(14)?,
                    members: Vec::new(),
                    overflow: BTreeMap::new(),
                    vip: Vec::new(),
                    source: if r.get::<_, i64>(13)? > 0 {
                        "hq"
                    } else {
                        "local"
                    },
                },
            ))
        })
        .map_err(sql(path, "list queues"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql(path, "list queues"))?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, mut q) in rows {
        let mut s = conn
            .prepare_cached(
                "SELECT u.agent_id, u.username, m.penalty FROM queue_members m
                   JOIN users u ON u.id = m.user_id
                  WHERE m.queue_id = ?1 ORDER BY m.position, u.id",
            )
            .map_err(sql(path, "list queue members"))?;
        q.members = s
            .query_map([id], |r| {
                Ok(MemberRow {
                    agent_id: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    username: r.get(1)?,
                    penalty: r.get(2)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(sql(path, "list queue members"))?;
        let mut s = conn
            .prepare_cached("SELECT event, kind, target FROM queue_overflow WHERE queue_id = ?1")
            .map_err(sql(path, "list queue overflow"))?;
        q.overflow = s
            .query_map([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    OverflowRow {
                        kind: r.get(1)?,
                        target: r.get(2)?,
                    },
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(sql(path, "list queue overflow"))?;
        let mut s = conn
            .prepare_cached("SELECT pattern FROM queue_vip WHERE queue_id = ?1 ORDER BY pattern")
            .map_err(sql(path, "list queue vip"))?;
        q.vip = s
            .query_map([id], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(sql(path, "list queue vip"))?;
        out.push(q);
    }
    Ok(out)
}

fn queue_conflict(name: &str, why: &str) -> crate::error::Error {
    crate::error::Error::QueueConflict {
        name: name.to_owned(),
        why: why.to_owned(),
    }
}

/// Writes (creates or replaces) the box's queue `q` in the caller's transaction, then
/// checks the whole call center as it now is ([`load_config`]): a conflict (HQ's
/// queue, a number in use, an unknown agent, an overflow to a missing queue) is an
/// error and the caller's transaction must roll back. Returns the row and whether it
/// was created.
pub fn put_local_queue(
    conn: &Connection,
    path: &Path,
    q: &LocalQueue,
    now_ms: i64,
) -> crate::error::Result<(QueueRow, bool)> {
    let store = |e: StoreError| crate::error::Error::AcdStore(Box::new(e));
    let name = q.name.as_str();
    let b = &q.body;
    let existing: Option<i64> = conn
        .query_row("SELECT revision FROM queues WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sql(path, "read queue"))
        .map_err(store)?;
    if existing.is_some_and(|rev| rev > 0) {
        return Err(queue_conflict(name, "the queue is HQ's: change it at HQ"));
    }
    let number_taken: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM queues WHERE number = ?1 AND name <> ?2)",
            params![b.number, name],
            |r| r.get(0),
        )
        .map_err(sql(path, "check queue number"))
        .map_err(store)?;
    if number_taken {
        return Err(queue_conflict(
            name,
            &format!("number {} is another queue's", b.number),
        ));
    }
    conn.execute("DELETE FROM queues WHERE name = ?1", [name])
        .map_err(sql(path, "replace queue"))
        .map_err(store)?;
    conn.execute(
        "INSERT INTO queues (name, number, strategy, ring_timeout_ms, wrap_up_ms, max_wait_ms,
             max_len, skill_fallback_ms, announce_every_ms, music_on_hold, moh_prompt,
             survey_prompt, revision, updated_at_ms, recording)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0, ?13, ?14)",
        params![
            name,
            b.number,
            b.strategy,
            b.ring_timeout_ms.unwrap_or(15_000),
            b.wrap_up_ms.unwrap_or(0),
            b.max_wait_ms,
            b.max_len,
            b.skill_fallback_ms,
            b.announce_every_ms,
            b.music_on_hold.as_deref().unwrap_or("tone"),
            b.moh_prompt,
            b.survey_prompt,
            now_ms,
            b.recording.as_deref().unwrap_or("never")
        ],
    )
    .map_err(sql(path, "insert queue"))
    .map_err(store)?;
    let id = conn.last_insert_rowid();
    for (position, m) in b.members.iter().enumerate() {
        let user: Option<i64> = conn
            .query_row(
                "SELECT id FROM users WHERE agent_id = ?1",
                [&m.agent_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(path, "find member"))
            .map_err(store)?;
        let Some(user) = user else {
            return Err(crate::error::Error::Invalid {
                entity: "queue",
                key: name.to_owned(),
                problems: vec![crate::error::FieldProblem {
                    field: format!("members[{position}].agent_id"),
                    message: format!("no user has agent ID {}", m.agent_id),
                }],
            });
        };
        conn.execute(
            "INSERT INTO queue_members (queue_id, user_id, penalty, position) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (queue_id, user_id) DO UPDATE SET penalty = excluded.penalty",
            params![id, user, m.penalty, position as i64],
        )
        .map_err(sql(path, "add member"))
        .map_err(store)?;
    }
    for (event, o) in &b.overflow {
        conn.execute(
            "INSERT INTO queue_overflow (queue_id, event, kind, target) VALUES (?1, ?2, ?3, ?4)",
            params![id, event, o.kind, o.target.as_deref().unwrap_or("")],
        )
        .map_err(sql(path, "add overflow"))
        .map_err(store)?;
    }
    for v in &b.vip {
        conn.execute(
            "INSERT OR IGNORE INTO queue_vip (queue_id, pattern) VALUES (?1, ?2)",
            params![id, v],
        )
        .map_err(sql(path, "add vip"))
        .map_err(store)?;
    }
    // The call center as it would be: refused whole when it does not fit together.
    if let Err(e) = load_config(conn, path) {
        return Err(crate::error::Error::Invalid {
            entity: "queue",
            key: name.to_owned(),
            problems: vec![crate::error::FieldProblem {
                field: "queue".to_owned(),
                message: e.to_string(),
            }],
        });
    }
    let row = list_queues(conn, path)
        .map_err(store)?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| crate::error::Error::NotFound {
            entity: "queue",
            key: name.to_owned(),
        })?;
    Ok((row, existing.is_none()))
}

/// Deletes the box's queue `name` (cascading to its members, overflow and VIPs).
pub fn delete_local_queue(conn: &Connection, path: &Path, name: &str) -> crate::error::Result<()> {
    let store = |e: StoreError| crate::error::Error::AcdStore(Box::new(e));
    let revision: Option<i64> = conn
        .query_row("SELECT revision FROM queues WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sql(path, "read queue"))
        .map_err(store)?;
    match revision {
        None => Err(crate::error::Error::NotFound {
            entity: "queue",
            key: name.to_owned(),
        }),
        Some(rev) if rev > 0 => Err(queue_conflict(name, "the queue is HQ's: delete it at HQ")),
        Some(_) => {
            conn.execute("DELETE FROM queues WHERE name = ?1", [name])
                .map_err(sql(path, "delete queue"))
                .map_err(store)?;
            if let Err(e) = load_config(conn, path) {
                return Err(queue_conflict(
                    name,
                    &format!("the call center would not fit together: {e}"),
                ));
            }
            Ok(())
        }
    }
}
