-- Schema 26: why the box itself ended a call (issue 3: calls whose far end vanishes
-- are torn down by the media inactivity timeout).
--
-- `hangup_cause`: `media_timeout` when a SIP leg of the call received no RTP or RTCP for
-- `[media] rtp_timeout_s` (or `rtp_hold_timeout_s` while held) and the box sent it a BYE
-- (`hangup_side` is then `system`); NULL for every other call, and for rows written
-- before. Additive only.
ALTER TABLE cdrs ADD COLUMN hangup_cause TEXT CHECK (hangup_cause IN ('media_timeout'));
