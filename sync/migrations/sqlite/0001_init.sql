-- branch-hq schema, SQLite, version 1.
CREATE TABLE sites (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    file_policy   TEXT NOT NULL DEFAULT '{"mode":"none"}',
    feed_floor    INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE boxes (
    id                TEXT PRIMARY KEY,
    site              TEXT NOT NULL REFERENCES sites(id),
    cert_fingerprint  TEXT,
    last_seen_ms      INTEGER,
    firmware_version  TEXT,
    backlog           INTEGER,
    oldest_pending_ms INTEGER,
    created_at_ms     INTEGER NOT NULL
);
CREATE INDEX boxes_site ON boxes(site);
CREATE TABLE box_epochs (
    box       TEXT NOT NULL REFERENCES boxes(id),
    epoch     TEXT NOT NULL,
    acked_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (box, epoch)
);
CREATE TABLE up_records (
    box            TEXT NOT NULL,
    epoch          TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    kind           TEXT NOT NULL,
    key            TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    payload        TEXT NOT NULL,
    PRIMARY KEY (box, epoch, seq)
) WITHOUT ROWID;
-- Projection rows are written only for newly stored up_records, so (box, epoch,
-- seq) is unique by construction without a second unique index.
CREATE TABLE cdrs (
    id             INTEGER PRIMARY KEY,
    box            TEXT NOT NULL,
    site           TEXT NOT NULL,
    epoch          TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    call_id        TEXT NOT NULL,
    direction      TEXT NOT NULL,
    caller         TEXT NOT NULL,
    caller_port    INTEGER,
    callee         TEXT NOT NULL,
    callee_port    INTEGER,
    started_at_ms  INTEGER NOT NULL,
    answered_at_ms INTEGER,
    ended_at_ms    INTEGER NOT NULL,
    disposition    TEXT NOT NULL,
    hangup_side    TEXT NOT NULL
);
CREATE INDEX cdrs_site_started ON cdrs(site, started_at_ms);
CREATE TABLE audit_rows (
    box       TEXT NOT NULL,
    site      TEXT NOT NULL,
    epoch     TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    audit_id  INTEGER NOT NULL,
    at_ms     INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    source    TEXT NOT NULL,
    action    TEXT NOT NULL,
    resource  TEXT NOT NULL,
    target    TEXT NOT NULL,
    result    TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    PRIMARY KEY (box, epoch, seq)
);
CREATE TABLE recordings (
    box           TEXT NOT NULL,
    site          TEXT NOT NULL,
    epoch         TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    call_id       TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL,
    format        TEXT NOT NULL,
    PRIMARY KEY (box, epoch, seq)
);
CREATE INDEX recordings_site_sha ON recordings(site, sha256);
CREATE TABLE edit_conflicts (
    box      TEXT NOT NULL,
    epoch    TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    conflict TEXT NOT NULL,
    PRIMARY KEY (box, epoch, seq)
);
CREATE TABLE entities (
    site     TEXT NOT NULL REFERENCES sites(id),
    kind     TEXT NOT NULL,
    key      TEXT NOT NULL,
    revision INTEGER NOT NULL,
    row_json TEXT,
    deleted  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site, kind, key)
);
CREATE INDEX entities_site_revision ON entities(site, revision);
CREATE TABLE feed (
    revision INTEGER PRIMARY KEY,
    site     TEXT NOT NULL,
    kind     TEXT NOT NULL,
    key      TEXT NOT NULL,
    row_json TEXT
);
CREATE INDEX feed_site_revision ON feed(site, revision);
CREATE TABLE revision_counter (
    only  INTEGER PRIMARY KEY CHECK (only = 1),
    value INTEGER NOT NULL
);
INSERT INTO revision_counter (only, value) VALUES (1, 0);
