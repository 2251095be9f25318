-- Service records (issue 10, item 2): every call with a known customer. A row is
-- written with the call's CDR, in the same transaction, when the outside party's number
-- (the caller of an inbound call, the callee of an outbound one) is a customer's;
-- `agent_id` is the call-center agent who took it, `user_id` the box user who handled
-- it (that agent's user, else the user of the local extension on the call), for the
-- "own" scope of the authorization. The disposition digit (cdr_dispositions) and the
-- recording (recordings) are joined by call_id when read.
-- `call_notes`: notes on a call, added during it (before its CDR exists) or after; a
-- service record shows its call's notes.
--
-- Additive only. Never edit a released migration: add a new file instead.

CREATE TABLE service_records (
    id            INTEGER PRIMARY KEY,
    call_id       TEXT    NOT NULL UNIQUE CHECK (length(call_id) BETWEEN 1 AND 64),
    customer_id   INTEGER NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    number        TEXT    NOT NULL,
    direction     TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    agent_id      TEXT,
    user_id       INTEGER REFERENCES users (id) ON DELETE SET NULL,
    extension     TEXT,
    started_at_ms INTEGER NOT NULL,
    talk_ms       INTEGER NOT NULL CHECK (talk_ms >= 0),
    outcome       TEXT    NOT NULL
) STRICT;

CREATE INDEX service_records_customer ON service_records (customer_id, started_at_ms);

CREATE TABLE call_notes (
    id       INTEGER PRIMARY KEY,
    call_id  TEXT    NOT NULL CHECK (length(call_id) BETWEEN 1 AND 64),
    author   TEXT    NOT NULL,
    text     TEXT    NOT NULL CHECK (length(text) BETWEEN 1 AND 4000),
    at_ms    INTEGER NOT NULL
) STRICT;

CREATE INDEX call_notes_call ON call_notes (call_id, at_ms);
