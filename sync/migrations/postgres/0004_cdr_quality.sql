-- branch-hq schema, PostgreSQL, version 4: CDR call quality and transfer chain.
--
-- Per SIP leg (caller side, callee side): packet loss %, interarrival jitter (ms)
-- and the MOS estimate the box measured on the RTP it received (wire `Cdr`
-- `caller_quality` / `callee_quality`); NULL when the box sent none (no SIP leg, no
-- RTP, or firmware from before the field). `transfer_chain`: the wire field's JSON
-- array (`[{"call_id":..,"transferred_by":..}]`), NULL when the call was not
-- transferred. With these columns the projection holds the whole CDR again, so its
-- payload JSON is not kept (see `Cdr::FIELDS`). Additive only; ADD COLUMN without a
-- default does not rewrite the table.
ALTER TABLE cdrs
    ADD COLUMN caller_loss_percent DOUBLE PRECISION,
    ADD COLUMN caller_jitter_ms DOUBLE PRECISION,
    ADD COLUMN caller_mos DOUBLE PRECISION,
    ADD COLUMN callee_loss_percent DOUBLE PRECISION,
    ADD COLUMN callee_jitter_ms DOUBLE PRECISION,
    ADD COLUMN callee_mos DOUBLE PRECISION,
    ADD COLUMN transfer_chain TEXT;
