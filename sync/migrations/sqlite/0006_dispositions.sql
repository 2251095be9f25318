-- branch-hq schema, SQLite, version 6: call dispositions.
--
-- The customer-type digit an agent keyed in wrap-up for a call (wire
-- `DispositionRecord`), one row per site and call: a box sends a new record each
-- time the agent keys again, and the latest (by at_ms) wins. `box`, `epoch`, `seq`
-- name the up record it came from. Join to `cdrs` on (site, call_id). Additive only.
CREATE TABLE dispositions (
    site           TEXT NOT NULL,
    call_id        TEXT NOT NULL,
    box            TEXT NOT NULL,
    epoch          TEXT NOT NULL,
    seq            BIGINT NOT NULL,
    agent_id       TEXT NOT NULL,
    digit          INTEGER NOT NULL CHECK (digit BETWEEN 0 AND 9),
    type_name      TEXT NOT NULL,
    customer_hq_id TEXT,
    at_ms          BIGINT NOT NULL,
    PRIMARY KEY (site, call_id)
);
