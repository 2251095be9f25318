-- Schema v24 (issue 10): the site's time zone, for campaign calling hours (and any
-- other rule judged by the branch's wall clock), read and written by
-- crate::site_time::store.
--
-- One row at most. The daemon writes it at every start from `[telephony] time_zone`
-- (crate::site_time::store::adopt): the spec as configured (an IANA zone name, a POSIX
-- TZ rule, or UTC) and, for a zone name, the TZif file's bytes as read from the
-- zoneinfo directory, so every reader computes with the same zone from the connection
-- alone. No row: UTC.
--
-- campaigns.utc_offset_min (schema 21) is no longer read: calling hours are local to
-- this zone, with daylight saving time. New and edited campaigns write 0 there. The
-- column stays because SQLite cannot drop a column that has a CHECK constraint.
-- Never edit a released migration: add a new numbered one instead.

CREATE TABLE site_time_zone (
    only          INTEGER PRIMARY KEY CHECK (only = 1),
    spec          TEXT    NOT NULL CHECK (length(spec) BETWEEN 1 AND 128),
    tzif          BLOB             CHECK (tzif IS NULL OR length(tzif) BETWEEN 44 AND 1048576),
    adopted_at_ms INTEGER NOT NULL
) STRICT;
