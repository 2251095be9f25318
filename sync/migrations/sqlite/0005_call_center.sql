-- branch-hq schema, SQLite, version 5: the call center's records.
--
-- CDRs of queued calls: the queue (its name on the box), the agent ID of the agent
-- who answered (NULL: nobody did) and the caller's wait in ms (wire `Cdr.queue`);
-- all NULL for calls that never entered a queue. With these columns the projection
-- holds the whole CDR again (see `Cdr::FIELDS`).
--
-- `agent_states`: every agent state change a box sends (wire `AgentStateRecord`),
-- for cross-branch agent reports. Like `cdrs`, rows are written only for newly
-- stored up records, so (box, epoch, seq) is unique by construction, and `id`
-- ascends in arrival order (the admin API's page cursor). Additive only.
ALTER TABLE cdrs ADD COLUMN queue TEXT;
ALTER TABLE cdrs ADD COLUMN agent_id TEXT;
ALTER TABLE cdrs ADD COLUMN queue_wait_ms INTEGER;
CREATE INDEX cdrs_site_queue_started ON cdrs(site, queue, started_at_ms)
    WHERE queue IS NOT NULL;

CREATE TABLE agent_states (
    id        INTEGER PRIMARY KEY,
    box       TEXT NOT NULL,
    site      TEXT NOT NULL,
    epoch     TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    agent_id  TEXT NOT NULL,
    state     TEXT NOT NULL,
    reason    TEXT,
    extension TEXT,
    call_id   TEXT,
    at_ms     INTEGER NOT NULL
);
CREATE INDEX agent_states_site_agent_at ON agent_states(site, agent_id, at_ms);
