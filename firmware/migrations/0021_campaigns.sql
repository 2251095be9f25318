-- Schema v21 (issue 10 item 4): lead lists, leads, outbound campaigns and their
-- attempts; read and written by crate::campaign::store.
--
-- `lead_lists`: a named list of leads. A list feeds at most one campaign
-- (campaigns.list_id is UNIQUE), so a lead's dialling state can live on the lead.
-- `leads`: a person to call: a name, an optional customer link, custom data as a JSON
-- object (the extra CSV columns), the agent it is assigned to (by a supervisor, or by
-- the agent asking for their next leads), and its dialling state:
--   pending  due at next_at_ms (0: now); attempts so far in `attempts`
--   dialing  an attempt is open (at most one per lead: the dialer's invariant)
--   done     finished; `result` says how (answered, max_attempts, blacklisted, no_number)
-- `lead_numbers`: a lead's numbers (normalised like customers' numbers), unique
-- within a list so the same person is not called twice by one campaign.
-- `campaigns`: lead list, agent group, mode, state, calling hours as minutes of the day
-- with a weekday mask (bit 0 = Monday) in a fixed UTC offset (the box has no site time
-- zone yet), retry rules, caller ID.
-- `lead_attempts`: every dial and its result (answered, busy, no_answer, failed),
-- disposition digit and notes; call_id links the CDR.
-- Never edit a released migration: add a new numbered one instead.

CREATE TABLE lead_lists (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
    created_by    TEXT    NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE leads (
    id               INTEGER PRIMARY KEY,
    list_id          INTEGER NOT NULL REFERENCES lead_lists (id) ON DELETE CASCADE,
    name             TEXT    NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    customer_id      INTEGER REFERENCES customers (id) ON DELETE SET NULL,
    data             TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(data)),
    assigned_user_id INTEGER REFERENCES users (id) ON DELETE SET NULL,
    state            TEXT    NOT NULL DEFAULT 'pending'
                             CHECK (state IN ('pending', 'dialing', 'done')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_at_ms       INTEGER NOT NULL DEFAULT 0,
    result           TEXT    CHECK (result IS NULL OR result IN
                             ('answered', 'max_attempts', 'blacklisted', 'no_number')),
    created_at_ms    INTEGER NOT NULL,
    updated_at_ms    INTEGER NOT NULL
) STRICT;

CREATE INDEX leads_due ON leads (list_id, state, next_at_ms);
CREATE INDEX leads_assigned ON leads (assigned_user_id, state);

CREATE TABLE lead_numbers (
    list_id  INTEGER NOT NULL REFERENCES lead_lists (id) ON DELETE CASCADE,
    number   TEXT    NOT NULL CHECK (length(number) BETWEEN 1 AND 33),
    lead_id  INTEGER NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    PRIMARY KEY (list_id, number)
) STRICT, WITHOUT ROWID;

CREATE INDEX lead_numbers_lead ON lead_numbers (lead_id, position);

CREATE TABLE campaigns (
    id                INTEGER PRIMARY KEY,
    name              TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
    list_id           INTEGER NOT NULL UNIQUE REFERENCES lead_lists (id) ON DELETE RESTRICT,
    group_id          INTEGER NOT NULL REFERENCES groups (id) ON DELETE RESTRICT,
    mode              TEXT    NOT NULL CHECK (mode IN ('preview', 'progressive')),
    state             TEXT    NOT NULL DEFAULT 'draft'
                              CHECK (state IN ('draft', 'running', 'paused', 'done')),
    hours_start_min   INTEGER NOT NULL CHECK (hours_start_min BETWEEN 0 AND 1439),
    hours_end_min     INTEGER NOT NULL CHECK (hours_end_min BETWEEN 1 AND 1440),
    weekdays          INTEGER NOT NULL CHECK (weekdays BETWEEN 1 AND 127),
    utc_offset_min    INTEGER NOT NULL CHECK (utc_offset_min BETWEEN -720 AND 840),
    max_attempts      INTEGER NOT NULL CHECK (max_attempts BETWEEN 1 AND 20),
    busy_retry_s      INTEGER NOT NULL CHECK (busy_retry_s BETWEEN 60 AND 604800),
    no_answer_retry_s INTEGER NOT NULL CHECK (no_answer_retry_s BETWEEN 60 AND 604800),
    failed_retry_s    INTEGER NOT NULL CHECK (failed_retry_s BETWEEN 60 AND 604800),
    ring_timeout_s    INTEGER NOT NULL CHECK (ring_timeout_s BETWEEN 5 AND 120),
    caller_id         TEXT    NOT NULL DEFAULT '' CHECK (length(caller_id) <= 33),
    created_by        TEXT    NOT NULL DEFAULT '',
    created_at_ms     INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL
) STRICT;

CREATE TABLE lead_attempts (
    id            INTEGER PRIMARY KEY,
    campaign_id   INTEGER NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    lead_id       INTEGER NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    number        TEXT    NOT NULL,
    agent_user_id INTEGER REFERENCES users (id) ON DELETE SET NULL,
    call_id       TEXT,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms   INTEGER,
    outcome       TEXT    CHECK (outcome IS NULL OR outcome IN
                          ('answered', 'busy', 'no_answer', 'failed')),
    disposition   INTEGER CHECK (disposition BETWEEN 0 AND 9),
    notes         TEXT    NOT NULL DEFAULT '' CHECK (length(notes) <= 2000),
    CHECK ((outcome IS NULL) = (ended_at_ms IS NULL))
) STRICT;

CREATE INDEX lead_attempts_lead ON lead_attempts (lead_id, id);
CREATE INDEX lead_attempts_campaign ON lead_attempts (campaign_id, id);
-- At most one open attempt per lead.
CREATE UNIQUE INDEX lead_attempts_open ON lead_attempts (lead_id) WHERE outcome IS NULL;

-- The site's campaign settings: how many leads an agent may take at once with
-- "next" (POST /api/v1/campaigns/{id}/next).
CREATE TABLE campaign_settings (
    only       INTEGER PRIMARY KEY CHECK (only = 1),
    next_leads INTEGER NOT NULL CHECK (next_leads BETWEEN 1 AND 100)
) STRICT;

INSERT INTO campaign_settings (only, next_leads) VALUES (1, 5);

-- The `campaigns` resource of the role model (campaigns.view/add/edit/delete/import/
-- operate). role_permissions' CHECK lists the resources, so the table is rebuilt with
-- the new name in the list (SQLite cannot alter a CHECK); nothing references it.
CREATE TABLE role_permissions_new (
    role_id  INTEGER NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    resource TEXT    NOT NULL CHECK (resource IN (
        'users', 'roles', 'groups', 'extensions', 'queues', 'agents', 'calls',
        'recordings', 'voicemail', 'reports', 'contacts', 'blacklist', 'system_config',
        'sync', 'provisioning', 'diagnostics', 'audit', 'numbers', 'campaigns')),
    action   TEXT    NOT NULL CHECK (action IN (
        'view', 'add', 'edit', 'delete', 'import', 'export', 'download', 'listen',
        'audit', 'operate', 'enable')),
    scope    TEXT    NOT NULL CHECK (scope IN ('own', 'group', 'site', 'all')),
    PRIMARY KEY (role_id, resource, action)
) STRICT;

INSERT INTO role_permissions_new (role_id, resource, action, scope)
    SELECT role_id, resource, action, scope FROM role_permissions;
DROP TABLE role_permissions;
ALTER TABLE role_permissions_new RENAME TO role_permissions;
