-- Schema: the call recorder's index columns on `recordings` (issue 6, item 4).
-- Additive only: 0005 is released and stays as it is.
--
-- The recorder (crate::recorder) registers each recording it writes through
-- crate::sync::files::register_recording_tx and sets these in the same transaction:
--
-- `interrupted` 1: the recording was cut by a crash or power loss and repaired at
--               start-up (sizes fixed from the file length, a torn last frame cut);
--               its call id is then the recording's own name (no CDR was written
--               for a call cut by a crash).
-- `channels`    the channel layout, 'caller-left/agent-right' for the recorder's
--               stereo files; NULL for files registered by hand (`recording-add`).
-- `port`        the analog port the recording was keyed on (the caller's port, or
--               the one port of an analog <-> SIP call), to find the call's CDR.
-- `deleted_at_ms` set by retention when it deleted the file (the row stays, so HQ's
--               copy and the audit trail keep their reference).
ALTER TABLE recordings ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0
    CHECK (interrupted IN (0, 1));
ALTER TABLE recordings ADD COLUMN channels TEXT
    CHECK (channels IS NULL OR length(channels) BETWEEN 1 AND 64);
ALTER TABLE recordings ADD COLUMN port INTEGER CHECK (port IS NULL OR port BETWEEN 0 AND 255);
ALTER TABLE recordings ADD COLUMN deleted_at_ms INTEGER;

-- Retention walks the kept recordings oldest first.
CREATE INDEX recordings_kept ON recordings (started_at_ms) WHERE deleted_at_ms IS NULL;
