-- Schema v22 (issue 10): the numbering plan the stored numbers' canonical form was
-- derived with (one canonical number form; read and written by crate::numbers::store),
-- and an index to find a preview attempt by its call when the call's CDR is written
-- (its outcome is read from the call: crate::campaign::store::finish_from_cdr).
--
-- One row at most. The daemon writes it at every start from the site's country
-- (crate::numbers::store::adopt); when the plan differs from the stored one (first
-- start after this migration, or the country changed) the numbers already stored
-- (customer_numbers, lead_numbers) are rewritten to the new canonical form in the same
-- transaction. Until a row exists numbers are compared as written (digits with an
-- optional leading '+'), as before. The rewrite is not done here in SQL because the
-- canonical form depends on the site's country, which lives in the config file.
-- Never edit a released migration: add a new numbered one instead.

CREATE TABLE site_numbering (
    only                 INTEGER PRIMARY KEY CHECK (only = 1),
    country_code         TEXT    NOT NULL CHECK (length(country_code) BETWEEN 1 AND 3
                                                 AND country_code NOT GLOB '*[^0-9]*'),
    international_prefix TEXT    NOT NULL CHECK (length(international_prefix) BETWEEN 1 AND 4
                                                 AND international_prefix NOT GLOB '*[^0-9]*'),
    national_prefix      TEXT    NOT NULL CHECK (length(national_prefix) BETWEEN 1 AND 4
                                                 AND national_prefix NOT GLOB '*[^0-9]*'),
    adopted_at_ms        INTEGER NOT NULL
) STRICT;

-- Open attempts by call: the CDR writer looks its call id up here for every CDR.
CREATE INDEX lead_attempts_open_call ON lead_attempts (call_id)
    WHERE outcome IS NULL AND call_id IS NOT NULL;
