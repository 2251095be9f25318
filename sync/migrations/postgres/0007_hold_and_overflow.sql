-- branch-hq schema, PostgreSQL, version 7: hold time and queue overflow on CDRs.
--
-- `hold_ms`: milliseconds the call spent on hold (wire `Cdr.hold_ms`); NULL for a call
-- never held or sent by an older box. `queue_overflow`: where a queued call went when
-- it left its queue without an agent by the queue's overflow rule, `voicemail`,
-- `number` or `busy` (wire `Cdr.queue_overflow`); the queue stays in `queue`. With
-- these the projection holds the whole CDR again (see `Cdr::FIELDS`). Additive only.
ALTER TABLE cdrs ADD COLUMN hold_ms BIGINT;
ALTER TABLE cdrs ADD COLUMN queue_overflow TEXT;
