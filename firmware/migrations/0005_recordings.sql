-- Schema v5: call recordings and their upload to HQ (issue 5).
--
-- A recording is a file in the recordings directory (`paths.recordings`) plus this
-- row plus an outbox row of kind 'recording' (wire::RecordingMeta), all written in one
-- transaction by crate::sync::files::register_recording. The metadata goes up with the
-- outbox; the file follows once HQ acknowledged that outbox row (`outbox_seq` at or
-- below sync_state.acked_seq) and HQ's file policy wants it, in resumable chunks
-- (branchline_sync::agent::FileUploader).
--
-- `path` is absolute. `uploaded_at_ms` is set when HQ confirmed the whole file
-- (sha256 verified at HQ); the row and the file stay (retention is a later concern).
-- `last_error`/`last_error_ms` hold the last problem of this file's upload (the local
-- file vanished or changed, HQ refused it) for the sync status; a later success
-- clears them. Never edit a released migration: add 0006_*.sql instead.
CREATE TABLE recordings (
    id             INTEGER PRIMARY KEY,
    call_id        TEXT    NOT NULL CHECK (length(call_id) BETWEEN 1 AND 256),
    sha256         TEXT    NOT NULL UNIQUE
                   CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
    size           INTEGER NOT NULL CHECK (size >= 0),
    started_at_ms  INTEGER NOT NULL,
    duration_ms    INTEGER NOT NULL CHECK (duration_ms >= 0),
    format         TEXT    NOT NULL CHECK (length(format) BETWEEN 1 AND 64),
    path           TEXT    NOT NULL CHECK (substr(path, 1, 1) = '/'),
    outbox_seq     INTEGER NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    uploaded_at_ms INTEGER,
    last_error     TEXT,
    last_error_ms  INTEGER
) STRICT;

-- The upload queue: recordings not yet uploaded, oldest first.
CREATE INDEX recordings_pending ON recordings (outbox_seq) WHERE uploaded_at_ms IS NULL;
