-- Schema v3: sync with HQ (issue 5).
--
-- See crate::sync for the rules these tables serve. Never edit a released migration.

-- The store's sync state: one row.
--
-- `epoch` names this store incarnation on the wire (wire::UpBatch::epoch): outbox seqs
-- are only unique within it. It is random, made once when this migration runs, i.e.
-- when the store is created (or first upgraded to v3); a factory reset deletes the
-- database, so the next start makes a new one and the new seqs cannot collide with
-- the old ones at HQ. SQLite's randomblob() draws from the OS (/dev/urandom).
--
-- `down_cursor` is the last change-feed revision applied (0: never synced); it is
-- written in the same transaction as the page or snapshot it belongs to.
--
-- `acked_seq` is the highest outbox seq HQ acknowledged (the outbox is trimmed up to
-- it in the same transaction).
--
-- The last_* columns, the file policy HQ last sent and the WAN monitor's last states
-- (`wan`, written when a state changes) are the persisted part of the sync status
-- (GET /api/v1/sync, `branchd sync-status`): they survive a restart.
CREATE TABLE sync_state (
    only             INTEGER PRIMARY KEY CHECK (only = 1),
    epoch            TEXT    NOT NULL CHECK (length(epoch) = 32),
    down_cursor      INTEGER NOT NULL DEFAULT 0 CHECK (down_cursor >= 0),
    acked_seq        INTEGER NOT NULL DEFAULT 0 CHECK (acked_seq >= 0),
    last_up_ok_ms    INTEGER,
    last_down_ok_ms  INTEGER,
    last_error       TEXT,
    last_error_ms    INTEGER,
    file_policy      TEXT    CHECK (file_policy IS NULL OR json_valid(file_policy)),
    wan              TEXT    CHECK (wan IS NULL OR json_valid(wan))
) STRICT;

INSERT INTO sync_state (only, epoch) VALUES (1, lower(hex(randomblob(16))));

-- Rows HQ masters that the box has no typed tables for yet (queues, contacts,
-- blacklist, dial routes): the wire row as JSON, by kind and key, with the HQ
-- revision it was last changed at. The call center and the dial plan read them from
-- here until they get tables of their own.
CREATE TABLE hq_rows (
    kind          TEXT    NOT NULL CHECK (kind IN ('queue', 'contact', 'blacklist', 'dial_route')),
    key           TEXT    NOT NULL,
    revision      INTEGER NOT NULL CHECK (revision > 0),
    row           TEXT    NOT NULL CHECK (json_valid(row)),
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
) STRICT;

-- Extensions are mastered at HQ too (number, name, call waiting); the FXS port map
-- stays the box's own (from branchd.toml). 0 = a row only the local config defines.
ALTER TABLE extensions ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;

