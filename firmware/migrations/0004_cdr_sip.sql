-- Schema v4: the SIP Call-IDs of a call's legs on its CDR (B2BUA, issue 3).
--
-- NULL for calls without a SIP leg on that side (analog-only calls, and every CDR
-- written before v4). Never edit a released migration: add 0005_*.sql instead.

ALTER TABLE cdrs ADD COLUMN caller_sip_call_id TEXT;
ALTER TABLE cdrs ADD COLUMN callee_sip_call_id TEXT;
