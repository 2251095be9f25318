-- Schema v15: voicemail (issue 6, point 5), read and written by crate::voicemail::store.
--
-- A mailbox is numbered like the extension it serves (an FXS or SIP extension) or
-- like a queue's overflow target (`queue_overflow.kind = 'voicemail'`, its `target`).
-- Mailboxes are configured in the store like queues (later synced from HQ); the
-- messages are the box's own: the audio is a mono WAV file under the data directory's
-- `voicemail/` (next to `recordings/`), named by `file` relative to that directory.
-- Values a CHECK cannot judge (the PIN hash's format) are validated when call control
-- loads the mailboxes, with an error naming the row and column.
-- Never edit a released migration: add a new numbered one instead.

CREATE TABLE voicemail_boxes (
    id             INTEGER PRIMARY KEY,
    -- The mailbox number: the extension's, or the number a queue overflows to.
    number         TEXT    NOT NULL UNIQUE
                   CHECK (length(number) BETWEEN 2 AND 6 AND number NOT GLOB '*[^0-9]*'),
    -- The user the mailbox belongs to (for the API's scopes); NULL: a shared mailbox.
    owner_user_id  INTEGER REFERENCES users (id) ON DELETE SET NULL,
    -- argon2id PHC string of the mailbox PIN (accounts::password); NULL: the mailbox
    -- can be opened only from its own extension's phone (the own-mailbox code).
    pin_hash       TEXT,
    -- The greeting: a WAV file in `voicemail/greetings/` (PCM mono 8 kHz 16-bit, like
    -- a prompt), named without `.wav`; NULL: the system greeting prompt, else a beep.
    greeting       TEXT    CHECK (greeting IS NULL OR (length(greeting) BETWEEN 1 AND 64
                   AND greeting NOT GLOB '*[^a-z0-9_-]*')),
    max_message_ms INTEGER NOT NULL DEFAULT 120000
                   CHECK (max_message_ms BETWEEN 5000 AND 600000),
    max_messages   INTEGER NOT NULL DEFAULT 50 CHECK (max_messages BETWEEN 1 AND 1000),
    -- Calls to the extension go to the mailbox when it is busy / does not answer.
    on_busy        INTEGER NOT NULL DEFAULT 1 CHECK (on_busy IN (0, 1)),
    on_no_answer   INTEGER NOT NULL DEFAULT 1 CHECK (on_no_answer IN (0, 1)),
    -- How long the extension rings before the caller goes to the mailbox; NULL: the
    -- box's ring timeout (`[telephony] ring_timeout_s`).
    no_answer_ms   INTEGER CHECK (no_answer_ms BETWEEN 5000 AND 120000),
    revision       INTEGER NOT NULL DEFAULT 0,
    updated_at_ms  INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE voicemail_messages (
    id             INTEGER PRIMARY KEY,
    mailbox_id     INTEGER NOT NULL REFERENCES voicemail_boxes (id) ON DELETE CASCADE,
    -- The call that left it (its CDR's call id); '' for a message recovered after a
    -- crash.
    call_id        TEXT    NOT NULL DEFAULT '',
    caller_number  TEXT    NOT NULL DEFAULT '',
    caller_name    TEXT    NOT NULL DEFAULT '',
    received_at_ms INTEGER NOT NULL,
    duration_ms    INTEGER NOT NULL CHECK (duration_ms >= 0),
    -- Relative to the voicemail directory, e.g. `msg-201-1767200000000.wav`.
    file           TEXT    NOT NULL UNIQUE
                   CHECK (length(file) BETWEEN 5 AND 128 AND file NOT GLOB '*[^A-Za-z0-9._-]*'
                          AND file NOT LIKE '.%'),
    size_bytes     INTEGER NOT NULL CHECK (size_bytes >= 44),
    sha256         TEXT    NOT NULL
                   CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
    -- 0: new (counts for message waiting); 1: heard (saved).
    heard          INTEGER NOT NULL DEFAULT 0 CHECK (heard IN (0, 1)),
    -- Cut by a crash and repaired at start-up.
    interrupted    INTEGER NOT NULL DEFAULT 0 CHECK (interrupted IN (0, 1))
) STRICT;

CREATE INDEX voicemail_messages_box ON voicemail_messages (mailbox_id, received_at_ms);
