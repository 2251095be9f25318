-- branch-hq schema, PostgreSQL, version 1.
CREATE TABLE sites (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    file_policy   TEXT NOT NULL DEFAULT '{"mode":"none"}',
    feed_floor    BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE boxes (
    id                TEXT PRIMARY KEY,
    site              TEXT NOT NULL REFERENCES sites(id),
    cert_fingerprint  TEXT,
    last_seen_ms      BIGINT,
    firmware_version  TEXT,
    backlog           BIGINT,
    oldest_pending_ms BIGINT,
    created_at_ms     BIGINT NOT NULL
);
CREATE INDEX boxes_site ON boxes(site);
CREATE TABLE box_epochs (
    box       TEXT NOT NULL REFERENCES boxes(id),
    epoch     TEXT NOT NULL,
    acked_seq BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (box, epoch)
);
-- Key columns compare bytewise (COLLATE "C"): cheaper than locale collation on
-- the hottest index.
CREATE TABLE up_records (
    box            TEXT COLLATE "C" NOT NULL,
    epoch          TEXT COLLATE "C" NOT NULL,
    seq            BIGINT NOT NULL,
    kind           TEXT NOT NULL,
    key            TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    payload        TEXT NOT NULL,
    PRIMARY KEY (box, epoch, seq)
);
-- Projection rows are written only for newly stored up_records, so (box, epoch,
-- seq) is unique by construction without a second unique index.
CREATE TABLE cdrs (
    id             BIGSERIAL PRIMARY KEY,
    box            TEXT NOT NULL,
    site           TEXT NOT NULL,
    epoch          TEXT NOT NULL,
    seq            BIGINT NOT NULL,
    call_id        TEXT NOT NULL,
    direction      TEXT NOT NULL,
    caller         TEXT NOT NULL,
    caller_port    BIGINT,
    callee         TEXT NOT NULL,
    callee_port    BIGINT,
    started_at_ms  BIGINT NOT NULL,
    answered_at_ms BIGINT,
    ended_at_ms    BIGINT NOT NULL,
    disposition    TEXT NOT NULL,
    hangup_side    TEXT NOT NULL
);
CREATE INDEX cdrs_site_started ON cdrs(site, started_at_ms);
CREATE TABLE audit_rows (
    box       TEXT NOT NULL,
    site      TEXT NOT NULL,
    epoch     TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    audit_id  BIGINT NOT NULL,
    at_ms     BIGINT NOT NULL,
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
    seq           BIGINT NOT NULL,
    call_id       TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    size          BIGINT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    duration_ms   BIGINT NOT NULL,
    format        TEXT NOT NULL,
    PRIMARY KEY (box, epoch, seq)
);
CREATE INDEX recordings_site_sha ON recordings(site, sha256);
CREATE TABLE edit_conflicts (
    box      TEXT NOT NULL,
    epoch    TEXT NOT NULL,
    seq      BIGINT NOT NULL,
    conflict TEXT NOT NULL,
    PRIMARY KEY (box, epoch, seq)
);
CREATE TABLE entities (
    site     TEXT NOT NULL REFERENCES sites(id),
    kind     TEXT NOT NULL,
    key      TEXT NOT NULL,
    revision BIGINT NOT NULL,
    row_json TEXT,
    deleted  BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (site, kind, key)
);
CREATE INDEX entities_site_revision ON entities(site, revision);
CREATE TABLE feed (
    revision BIGINT PRIMARY KEY,
    site     TEXT NOT NULL,
    kind     TEXT NOT NULL,
    key      TEXT NOT NULL,
    row_json TEXT
);
CREATE INDEX feed_site_revision ON feed(site, revision);
-- Revisions of every site's feed. A writer takes its site's row lock
-- (SELECT ... FROM sites FOR UPDATE) before nextval, so within one site revisions
-- commit in the order they are drawn.
CREATE SEQUENCE feed_revision;
