-- Schema v7: the call center's queues and agents (issue 6), read by crate::acd::store.
--
-- An agent is a user with an agent ID: `users.agent_id` (unique, 2-10 digits) and
-- `users.pin_hash` (argon2id PHC) from schema v2 are the agent's work number and PIN,
-- so they are not repeated here. Agent skills and queue membership refer to users.
-- Enum columns are text with CHECK constraints; crate::acd::config lists the same names.
-- Values a CHECK cannot judge (overflow targets, VIP patterns) are validated when the
-- ACD loads them, with an error naming the table, row and column.
-- Never edit a released migration: add a new numbered one instead.

CREATE TABLE queues (
    id                INTEGER PRIMARY KEY,
    name              TEXT    NOT NULL UNIQUE
                      CHECK (length(name) BETWEEN 1 AND 32 AND name NOT GLOB '*[^a-z0-9_-]*'),
    -- The extension number callers dial.
    number            TEXT    NOT NULL UNIQUE
                      CHECK (length(number) BETWEEN 2 AND 6 AND number NOT GLOB '*[^0-9]*'),
    strategy          TEXT    NOT NULL CHECK (strategy IN (
        'ring_all', 'round_robin', 'longest_idle', 'fewest_calls', 'skill_based')),
    ring_timeout_ms   INTEGER NOT NULL DEFAULT 15000 CHECK (ring_timeout_ms > 0),
    wrap_up_ms        INTEGER NOT NULL DEFAULT 0 CHECK (wrap_up_ms >= 0),
    -- NULL: no limit / never.
    max_wait_ms       INTEGER CHECK (max_wait_ms > 0),
    max_len           INTEGER CHECK (max_len > 0),
    skill_fallback_ms INTEGER CHECK (skill_fallback_ms > 0),
    announce_every_ms INTEGER CHECK (announce_every_ms > 0),
    music_on_hold     TEXT    NOT NULL DEFAULT 'tone'
                      CHECK (music_on_hold IN ('silence', 'tone', 'prompt')),
    -- The prompt's name, exactly when music_on_hold = 'prompt'.
    moh_prompt        TEXT    CHECK ((music_on_hold = 'prompt') = (moh_prompt IS NOT NULL)),
    revision          INTEGER NOT NULL DEFAULT 0,
    updated_at_ms     INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Where callers go. No row for 'full' or 'max_wait': busy; no row for 'no_agents':
-- callers wait even with nobody logged in. `target` is the mailbox (voicemail), the
-- queue's name (queue), the number (number), or '' (busy).
CREATE TABLE queue_overflow (
    queue_id INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    event    TEXT    NOT NULL CHECK (event IN ('full', 'max_wait', 'no_agents')),
    kind     TEXT    NOT NULL CHECK (kind IN ('voicemail', 'queue', 'number', 'busy')),
    target   TEXT    NOT NULL DEFAULT '' CHECK ((kind = 'busy') = (target = '')),
    PRIMARY KEY (queue_id, event)
) STRICT;

-- Caller numbers (exact) or prefixes (trailing '*') that wait ahead of other callers.
CREATE TABLE queue_vip (
    queue_id INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    pattern  TEXT    NOT NULL,
    PRIMARY KEY (queue_id, pattern)
) STRICT;

-- Agents of a queue; `position` orders round-robin (then user id).
CREATE TABLE queue_members (
    queue_id INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    penalty  INTEGER NOT NULL DEFAULT 0 CHECK (penalty BETWEEN 0 AND 100),
    position INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue_id, user_id)
) STRICT;

CREATE INDEX queue_members_user ON queue_members (user_id);

CREATE TABLE agent_skills (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    skill   TEXT    NOT NULL
            CHECK (length(skill) BETWEEN 1 AND 32 AND skill NOT GLOB '*[^a-z0-9_-]*'),
    level   INTEGER NOT NULL CHECK (level BETWEEN 1 AND 10),
    PRIMARY KEY (user_id, skill)
) STRICT;

-- Agent state history (for reports). Keyed by the agent ID as it was, not the user
-- row, so history survives the user's deletion. Local only for now: not in the outbox.
CREATE TABLE agent_state_log (
    id        INTEGER PRIMARY KEY,
    agent_id  TEXT    NOT NULL,
    state     TEXT    NOT NULL CHECK (state IN (
        'logged_out', 'available', 'ringing', 'on_call', 'wrap_up', 'paused')),
    reason    TEXT    CHECK (reason IS NULL OR state = 'paused'),
    extension TEXT,
    call_id   INTEGER,
    at_ms     INTEGER NOT NULL
) STRICT;

CREATE INDEX agent_state_log_agent ON agent_state_log (agent_id, at_ms);
