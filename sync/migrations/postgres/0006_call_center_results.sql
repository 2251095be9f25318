-- branch-hq schema, PostgreSQL, version 6: call-center results.
--
-- `dispositions`: the customer-type digit an agent keyed in wrap-up for a call (wire
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

-- CDRs: the post-call survey score (1-5) and, for a call the box's caller screening
-- blocked, the list's mode, the action the caller got and the entry's pattern (wire
-- `Cdr.survey_score` and `Cdr.blocked`). With these the projection holds the whole CDR
-- again (see `Cdr::FIELDS`). NULL: no score / not blocked, or sent by an older box.
ALTER TABLE cdrs ADD COLUMN survey_score BIGINT;
ALTER TABLE cdrs ADD COLUMN blocked_mode TEXT;
ALTER TABLE cdrs ADD COLUMN blocked_action TEXT;
ALTER TABLE cdrs ADD COLUMN blocked_pattern TEXT;
