-- Schema 19: hold time and queue overflow on CDRs (issue 6: CDRs carry hold time; an
-- overflowed queue call keeps its queue).
--
-- `hold_ms`: milliseconds the call spent on hold (some party held it), NULL when never
-- held. `queue_overflow`: where a queued call went when it left its queue without an
-- agent by the queue's overflow rule (`voicemail`, `number`, `busy`), NULL otherwise;
-- `queue` then names the queue it left. Rows written before stay NULL (no hold time
-- known; their overflowed calls have no queue). Additive only.
ALTER TABLE cdrs ADD COLUMN hold_ms INTEGER CHECK (hold_ms >= 0);
ALTER TABLE cdrs ADD COLUMN queue_overflow TEXT
    CHECK (queue_overflow IN ('voicemail', 'number', 'busy'));
