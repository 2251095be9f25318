-- Schema v23 (issue 5): find the box's own pending edits of a user, role or group
-- without scanning the outbox. A feed page leaves a row alone while an edit of it made
-- on the box is still in the outbox (HQ has not decided it yet: its verdict comes back
-- as a later feed change or as a conflict), and a snapshot keeps such rows; both look
-- the edit up by (kind, record_key). The outbox can hold a million CDRs after a long
-- WAN outage, so the index is partial: only edit rows are in it, and writing a CDR does
-- not touch it.
-- Never edit a released migration: add a new numbered one instead.

CREATE INDEX outbox_pending_edits ON outbox (kind, record_key)
    WHERE kind IN ('user_change', 'role_change', 'group_change');
