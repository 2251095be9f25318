-- Schema 28: `cdrs.hangup_cause` may also be `route_not_permitted` (issue 5: an
-- outside call refused because HQ's dial route matching the number needs a calling
-- permission the caller does not hold). SQLite cannot change a column's CHECK
-- constraint in place, so the table is rebuilt as in schema 27 (nothing references
-- `cdrs`: no foreign keys, triggers or views), rows copied unchanged in the same
-- column order, and the indexes recreated.
CREATE TABLE cdrs_new (
    id             INTEGER PRIMARY KEY,
    call_id        TEXT    NOT NULL UNIQUE,
    direction      TEXT    NOT NULL,
    caller         TEXT    NOT NULL,
    caller_port    INTEGER,
    callee         TEXT    NOT NULL,
    callee_port    INTEGER,
    started_at_ms  INTEGER NOT NULL,
    answered_at_ms INTEGER,
    ended_at_ms    INTEGER NOT NULL,
    duration_ms    INTEGER NOT NULL,
    billable_ms    INTEGER NOT NULL,
    disposition    TEXT    NOT NULL,
    hangup_side    TEXT    NOT NULL,
    caller_sip_call_id TEXT,
    callee_sip_call_id TEXT,
    caller_loss_percent REAL,
    caller_jitter_ms REAL,
    caller_mos REAL,
    callee_loss_percent REAL,
    callee_jitter_ms REAL,
    callee_mos REAL,
    transfer_chain TEXT,
    queue TEXT,
    agent_id TEXT,
    queue_wait_ms INTEGER CHECK (queue_wait_ms >= 0),
    blocked_mode TEXT CHECK (blocked_mode IN ('deny', 'allow')),
    blocked_action TEXT CHECK (blocked_action IN ('busy', 'congestion', 'reject')),
    blocked_pattern TEXT,
    survey_score INTEGER CHECK (survey_score BETWEEN 1 AND 5),
    hold_ms INTEGER CHECK (hold_ms >= 0),
    queue_overflow TEXT CHECK (queue_overflow IN ('voicemail', 'number', 'busy')),
    interrupted INTEGER NOT NULL DEFAULT 0 CHECK (interrupted IN (0, 1)),
    hangup_cause TEXT CHECK (hangup_cause IN ('media_timeout', 'session_expired',
                                               'route_not_permitted'))
) STRICT;

INSERT INTO cdrs_new SELECT * FROM cdrs;
DROP TABLE cdrs;
ALTER TABLE cdrs_new RENAME TO cdrs;
CREATE INDEX cdrs_started_at_ms ON cdrs (started_at_ms);
CREATE INDEX cdrs_queue ON cdrs (queue, started_at_ms) WHERE queue IS NOT NULL;
