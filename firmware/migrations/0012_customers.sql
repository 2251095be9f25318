-- Schema v12: customer records (issue 10 item 1), which are also the shared contact
-- directory of issue 6 item 8; read and written by crate::customers::store.
--
-- `customers` holds HQ's contacts (source 'hq', hq_id = HQ's key, revision = HQ's
-- revision, written by the change feed; they used to sit in hq_rows as JSON and move
-- here) and the box's own (source 'local', hq_id NULL, revision 0, made through the
-- local API or a CSV import). type_digit is a customer type (the keypad digit of
-- customer_types); owner_user_id / owner_group_id the agent and/or group that own it
-- (RBAC scope own / group).
-- `customer_numbers`: several numbers per customer, normalised to digits with an
-- optional leading '+' (validated by the firmware), keyed by number first so a lookup
-- by the calling number is one index seek. A number is unique among local customers
-- (the firmware checks); HQ's contacts are taken as HQ sends them.
-- `customer_fields`: the site's custom field definitions (at most 32, enforced by the
-- firmware); `customer_field_values` their values in canonical text, one row per
-- value (several rows for a multiple-choice field), indexed for filtering by field.
-- `customer_types`: digit 0-9 -> name, so at most 10.
-- Never edit a released migration: add a new numbered one instead.

CREATE TABLE customer_types (
    digit         INTEGER PRIMARY KEY CHECK (digit BETWEEN 0 AND 9),
    name          TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
    updated_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE customers (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 1024),
    type_digit     INTEGER REFERENCES customer_types (digit) ON DELETE SET NULL,
    owner_user_id  INTEGER REFERENCES users (id) ON DELETE SET NULL,
    owner_group_id INTEGER REFERENCES groups (id) ON DELETE SET NULL,
    source         TEXT    NOT NULL CHECK (source IN ('hq', 'local')),
    hq_id          TEXT    UNIQUE CHECK ((source = 'hq') = (hq_id IS NOT NULL)),
    revision       INTEGER NOT NULL DEFAULT 0 CHECK ((source = 'hq') = (revision > 0)),
    created_by     TEXT    NOT NULL DEFAULT '',
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL
) STRICT;

CREATE INDEX customers_name ON customers (name);
CREATE INDEX customers_type ON customers (type_digit);
CREATE INDEX customers_owner_user ON customers (owner_user_id);
CREATE INDEX customers_owner_group ON customers (owner_group_id);

CREATE TABLE customer_numbers (
    number      TEXT    NOT NULL CHECK (length(number) BETWEEN 1 AND 33),
    customer_id INTEGER NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    PRIMARY KEY (number, customer_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX customer_numbers_customer ON customer_numbers (customer_id, position);

CREATE TABLE customer_fields (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 32),
    label         TEXT    NOT NULL,
    type          TEXT    NOT NULL CHECK (type IN ('text', 'integer', 'phone', 'date', 'time',
                                                    'datetime', 'single_choice', 'multi_choice')),
    required      INTEGER NOT NULL CHECK (required IN (0, 1)),
    default_value TEXT    CHECK (default_value IS NULL OR json_valid(default_value)),
    choices       TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(choices)),
    updated_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE customer_field_values (
    customer_id INTEGER NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    field_id    INTEGER NOT NULL REFERENCES customer_fields (id) ON DELETE CASCADE,
    value       TEXT    NOT NULL,
    PRIMARY KEY (customer_id, field_id, value)
) STRICT, WITHOUT ROWID;

CREATE INDEX customer_field_values_filter ON customer_field_values (field_id, value);

-- HQ's contacts so far: out of hq_rows into the tables. Their numbers were validated by
-- HQ (digits, optional leading '+', at most 32); a nameless contact is named by its key.
INSERT INTO customers (name, source, hq_id, revision, created_by, created_at_ms, updated_at_ms)
    SELECT CASE WHEN coalesce(json_extract(row, '$.name'), '') = '' THEN key
                ELSE substr(json_extract(row, '$.name'), 1, 1024) END,
           'hq', key, revision, 'hq', updated_at_ms, updated_at_ms
      FROM hq_rows
     WHERE kind = 'contact' AND revision > 0 AND json_valid(row)
       AND length(key) BETWEEN 1 AND 256;
INSERT OR IGNORE INTO customer_numbers (number, customer_id, position)
    SELECT j.value, c.id, j.key
      FROM customers c
      JOIN hq_rows h ON h.kind = 'contact' AND h.key = c.hq_id, json_each(h.row, '$.numbers') j
     WHERE j.type = 'text' AND length(j.value) BETWEEN 1 AND 33
       AND j.value GLOB '[0-9+]*' AND substr(j.value, 2) NOT GLOB '*[^0-9]*';
DELETE FROM hq_rows
 WHERE kind = 'contact' AND key IN (SELECT hq_id FROM customers WHERE source = 'hq');
