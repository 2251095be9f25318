-- Call-center fields of a CDR (issue 6): the queue the call went through (its name,
-- the last one after queue-to-queue overflow), the agent ID of the agent who took it
-- (NULL: nobody did - abandoned or overflowed out) and the caller's wait in ms.
-- All NULL for a call that never entered a queue, or written before this migration.
--
-- Additive only. Never edit a released migration: add a new file instead.

ALTER TABLE cdrs ADD COLUMN queue TEXT;
ALTER TABLE cdrs ADD COLUMN agent_id TEXT;
ALTER TABLE cdrs ADD COLUMN queue_wait_ms INTEGER CHECK (queue_wait_ms >= 0);

CREATE INDEX cdrs_queue ON cdrs (queue, started_at_ms) WHERE queue IS NOT NULL;
