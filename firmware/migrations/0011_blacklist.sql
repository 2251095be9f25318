-- Schema v11: caller screening (issue 6, item 7), read and written by
-- crate::blacklist::store.
--
-- `blacklist` holds HQ's entries (source 'hq', revision = HQ's revision, written by the
-- change feed; they used to sit in hq_rows as JSON and move here) and the box's own
-- (source 'local', revision 0, added through the local API). One row per pattern:
-- a number, a prefix ending in '*', or 'anonymous' (validated by the firmware; the
-- CHECKs only bound the text). `action` NULL means what the mode implies.
-- `hits` / `last_hit_ms` count the calls the entry blocked.
-- `blacklist_settings` is the box's mode (deny: a blacklist; allow: an allowlist) and
-- the action of blocks no entry names. HQ does not sync it.
--
-- The CDR columns record why a call was blocked (NULL for calls that were not).
-- Never edit a released migration: add a new numbered one instead.

CREATE TABLE blacklist (
    id            INTEGER PRIMARY KEY,
    pattern       TEXT    NOT NULL UNIQUE CHECK (length(pattern) BETWEEN 1 AND 64),
    reason        TEXT    NOT NULL DEFAULT '',
    action        TEXT    CHECK (action IN ('allow', 'busy', 'congestion', 'reject')),
    source        TEXT    NOT NULL CHECK (source IN ('hq', 'local')),
    revision      INTEGER NOT NULL DEFAULT 0 CHECK ((source = 'hq') = (revision > 0)),
    hits          INTEGER NOT NULL DEFAULT 0 CHECK (hits >= 0),
    last_hit_ms   INTEGER,
    created_by    TEXT    NOT NULL DEFAULT '',
    updated_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE blacklist_settings (
    only           INTEGER PRIMARY KEY CHECK (only = 1),
    mode           TEXT    NOT NULL DEFAULT 'deny' CHECK (mode IN ('deny', 'allow')),
    default_action TEXT    NOT NULL DEFAULT 'busy'
                   CHECK (default_action IN ('busy', 'congestion', 'reject')),
    updated_at_ms  INTEGER NOT NULL DEFAULT 0
) STRICT;

INSERT INTO blacklist_settings (only) VALUES (1);

-- HQ's entries so far: out of hq_rows into their table (rows whose key could never be
-- a pattern stay where they were; the next snapshot removes them).
INSERT INTO blacklist (pattern, reason, action, source, revision, updated_at_ms)
    SELECT key, coalesce(json_extract(row, '$.reason'), ''), NULL, 'hq', revision, updated_at_ms
      FROM hq_rows
     WHERE kind = 'blacklist' AND length(key) BETWEEN 1 AND 64;
DELETE FROM hq_rows
 WHERE kind = 'blacklist' AND key IN (SELECT pattern FROM blacklist);

ALTER TABLE cdrs ADD COLUMN blocked_mode TEXT CHECK (blocked_mode IN ('deny', 'allow'));
ALTER TABLE cdrs ADD COLUMN blocked_action TEXT
    CHECK (blocked_action IN ('busy', 'congestion', 'reject'));
ALTER TABLE cdrs ADD COLUMN blocked_pattern TEXT;
