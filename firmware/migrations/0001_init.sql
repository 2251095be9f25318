-- Schema v1: analog ports, extensions, call detail records and the outbox.
--
-- Applied by rusqlite_migration; the schema version is PRAGMA user_version.
-- Never edit a released migration: add 0002_*.sql instead.

-- The board's analog ports. `state` is the last reported line state, for diagnostics.
CREATE TABLE ports (
    number        INTEGER PRIMARY KEY CHECK (number BETWEEN 1 AND 255),
    kind          TEXT    NOT NULL CHECK (kind IN ('fxs', 'fxo')),
    state         TEXT    NOT NULL DEFAULT 'idle',
    updated_at_ms INTEGER NOT NULL
) STRICT;

-- Extensions and the FXS port that rings for each (NULL: no analog port, e.g. SIP only).
CREATE TABLE extensions (
    number        TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    port          INTEGER REFERENCES ports (number),
    call_waiting  INTEGER NOT NULL CHECK (call_waiting IN (0, 1)),
    updated_at_ms INTEGER NOT NULL
) STRICT;

CREATE INDEX extensions_port ON extensions (port);

-- One row per call leg. Enum columns hold the serde (snake_case) names of crate::cdr.
CREATE TABLE cdrs (
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
    hangup_side    TEXT    NOT NULL
) STRICT;

CREATE INDEX cdrs_started_at_ms ON cdrs (started_at_ms);

-- Everything that must reach HQ, written in the same transaction as the fact itself.
-- `seq` is the per-box sequence number HQ dedupes on; AUTOINCREMENT so a seq is never
-- reused, even after the rows HQ acknowledged have been trimmed.
CREATE TABLE outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT    NOT NULL,
    record_key    TEXT    NOT NULL,
    payload       TEXT    NOT NULL CHECK (json_valid(payload)),
    created_at_ms INTEGER NOT NULL
) STRICT;
