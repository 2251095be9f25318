-- branch-hq schema, SQLite, version 4: CDR call quality and transfer chain.
--
-- Per SIP leg (caller side, callee side): packet loss %, interarrival jitter (ms)
-- and the MOS estimate the box measured on the RTP it received (wire `Cdr`
-- `caller_quality` / `callee_quality`); NULL when the box sent none (no SIP leg, no
-- RTP, or firmware from before the field). `transfer_chain`: the wire field's JSON
-- array (`[{"call_id":..,"transferred_by":..}]`), NULL when the call was not
-- transferred. With these columns the projection holds the whole CDR again, so its
-- payload JSON is not kept (see `Cdr::FIELDS`). Additive only.
ALTER TABLE cdrs ADD COLUMN caller_loss_percent REAL;
ALTER TABLE cdrs ADD COLUMN caller_jitter_ms REAL;
ALTER TABLE cdrs ADD COLUMN caller_mos REAL;
ALTER TABLE cdrs ADD COLUMN callee_loss_percent REAL;
ALTER TABLE cdrs ADD COLUMN callee_jitter_ms REAL;
ALTER TABLE cdrs ADD COLUMN callee_mos REAL;
ALTER TABLE cdrs ADD COLUMN transfer_chain TEXT;
