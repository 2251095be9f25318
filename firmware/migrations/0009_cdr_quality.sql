-- CDR call quality and transfer chain (issue 3 leftovers).
--
-- Per SIP leg of the call (caller side, callee side): packet loss in percent,
-- interarrival jitter in ms and the E-model MOS estimate of the RTP the box received
-- on that leg. NULL when that side was no SIP leg, carried no RTP, or the CDR was
-- written before this migration.
--
-- transfer_chain: the calls this one continues after transfers, oldest first, as the
-- JSON array of the wire type (`[{"call_id":..,"transferred_by":..}]`); NULL when the
-- call was not transferred.
--
-- Additive only. Never edit a released migration: add a new file instead.

ALTER TABLE cdrs ADD COLUMN caller_loss_percent REAL;
ALTER TABLE cdrs ADD COLUMN caller_jitter_ms REAL;
ALTER TABLE cdrs ADD COLUMN caller_mos REAL;
ALTER TABLE cdrs ADD COLUMN callee_loss_percent REAL;
ALTER TABLE cdrs ADD COLUMN callee_jitter_ms REAL;
ALTER TABLE cdrs ADD COLUMN callee_mos REAL;
ALTER TABLE cdrs ADD COLUMN transfer_chain TEXT;
