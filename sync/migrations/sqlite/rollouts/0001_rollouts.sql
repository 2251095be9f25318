-- branch-hq update rollouts, SQLite, rollout schema version 1 (tracked in
-- rollout_migrations, apart from the main schema's numbering).
CREATE TABLE rollouts (
    id            TEXT PRIMARY KEY,
    version       TEXT NOT NULL,
    board         TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    size          INTEGER NOT NULL CHECK (size > 0),
    forced        INTEGER NOT NULL CHECK (forced IN (0, 1)),
    waves         TEXT NOT NULL,              -- JSON array of cumulative percentages
    current_wave  INTEGER NOT NULL DEFAULT 0,
    state         TEXT NOT NULL CHECK (state IN ('active', 'paused', 'cancelled')),
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE rollout_sites (
    rollout TEXT NOT NULL REFERENCES rollouts(id),
    site    TEXT NOT NULL REFERENCES sites(id),
    PRIMARY KEY (rollout, site)
);
CREATE INDEX rollout_sites_site ON rollout_sites(site);
CREATE TABLE rollout_outcomes (
    rollout       TEXT NOT NULL REFERENCES rollouts(id),
    box           TEXT NOT NULL REFERENCES boxes(id),
    state         TEXT NOT NULL,
    version       TEXT,
    reason        TEXT,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (rollout, box)
);
