-- Schema v2: users, groups, roles and permissions, the hash-chained audit log and
-- the box's enrollment state (issue 4).
--
-- `revision` columns hold the HQ revision a row is based on (0 = created on this box
-- and not yet acknowledged by HQ). Enum columns are text with CHECK constraints; the
-- Rust enums in crate::rbac list the same names.

CREATE TABLE users (
    id                   INTEGER PRIMARY KEY,
    username             TEXT    NOT NULL UNIQUE,
    display_name         TEXT    NOT NULL,
    -- argon2id PHC string, e.g. $argon2id$v=19$m=19456,t=2,p=1$salt$hash
    password_hash        TEXT    NOT NULL,
    agent_id             TEXT    UNIQUE,
    pin_hash             TEXT,
    extension            TEXT,
    enabled              INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    must_change_password INTEGER NOT NULL DEFAULT 0 CHECK (must_change_password IN (0, 1)),
    failed_logins        INTEGER NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until_ms      INTEGER,
    revision             INTEGER NOT NULL DEFAULT 0,
    created_at_ms        INTEGER NOT NULL,
    updated_at_ms        INTEGER NOT NULL
) STRICT;

CREATE INDEX users_extension ON users (extension);

CREATE TABLE groups (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    description   TEXT    NOT NULL DEFAULT '',
    revision      INTEGER NOT NULL DEFAULT 0,
    updated_at_ms INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE group_members (
    group_id       INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    is_group_admin INTEGER NOT NULL DEFAULT 0 CHECK (is_group_admin IN (0, 1)),
    PRIMARY KEY (group_id, user_id)
) STRICT;

CREATE INDEX group_members_user ON group_members (user_id);

CREATE TABLE roles (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    description   TEXT    NOT NULL DEFAULT '',
    builtin       INTEGER NOT NULL DEFAULT 0 CHECK (builtin IN (0, 1)),
    revision      INTEGER NOT NULL DEFAULT 0,
    updated_at_ms INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE role_permissions (
    role_id  INTEGER NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    resource TEXT    NOT NULL CHECK (resource IN (
        'users', 'roles', 'groups', 'extensions', 'queues', 'agents', 'calls',
        'recordings', 'voicemail', 'reports', 'contacts', 'blacklist', 'system_config',
        'sync', 'provisioning', 'diagnostics', 'audit', 'numbers')),
    action   TEXT    NOT NULL CHECK (action IN (
        'view', 'add', 'edit', 'delete', 'import', 'export', 'download', 'listen',
        'audit', 'operate', 'enable')),
    scope    TEXT    NOT NULL CHECK (scope IN ('own', 'group', 'site', 'all')),
    PRIMARY KEY (role_id, resource, action)
) STRICT;

CREATE TABLE user_roles (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id INTEGER NOT NULL REFERENCES roles (id),
    PRIMARY KEY (user_id, role_id)
) STRICT;

CREATE INDEX user_roles_role ON user_roles (role_id);

-- Append-only, hash-chained: hash = sha256(canonical encoding of every other column
-- and prev_hash), see crate::audit. Ids are 1, 2, 3, ... without gaps.
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY,
    at_ms     INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    source    TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    resource  TEXT    NOT NULL,
    target    TEXT    NOT NULL,
    result    TEXT    NOT NULL CHECK (result IN ('allowed', 'denied', 'ok', 'failed')),
    detail    TEXT    NOT NULL CHECK (json_valid(detail)),
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
) STRICT;

-- The chain's head: number of rows and the last row's hash (deleting the last row,
-- or all of them, is detected against it).
CREATE TABLE audit_head (
    only      INTEGER PRIMARY KEY CHECK (only = 1),
    count     INTEGER NOT NULL,
    last_hash TEXT    NOT NULL
) STRICT;

INSERT INTO audit_head (only, count, last_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Enrollment with HQ, and the generation of the role tables (bumped by every change
-- to roles or role_permissions so cached permission sets know they are stale).
CREATE TABLE box_state (
    only            INTEGER PRIMARY KEY CHECK (only = 1),
    enrolled        INTEGER NOT NULL CHECK (enrolled IN (0, 1)),
    enrolled_at_ms  INTEGER,
    rbac_generation INTEGER NOT NULL DEFAULT 0
) STRICT;

INSERT INTO box_state (only, enrolled, enrolled_at_ms, rbac_generation) VALUES (1, 0, NULL, 0);
