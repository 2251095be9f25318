-- branch-hq schema, PostgreSQL, version 10: what a box's small CRM and outbound
-- campaigns send up (issue 10): campaign attempt results and progress, customers'
-- service records and call notes, and customers made on the box.
--
-- Each table keeps the record as the box sent it (`record`, the wire JSON of its
-- kind, validated by hq::validate before it is written) beside the columns the admin
-- API filters on. A record is written once: projections are inserted only for
-- records new to the (box, epoch, seq) ledger `up_records`. Kinds the box sends again
-- after a change (an attempt's result and wrap-up, a campaign's progress, a customer)
-- keep the latest by seq per (box, epoch, the box's id); `seq` is the record's.
-- Service records are joined at query time to `dispositions` (site, call_id),
-- `recordings` (box, epoch, call_id) and `call_notes` (box, epoch, call_id).
-- Additive only.
CREATE TABLE campaign_results (
    id            BIGSERIAL PRIMARY KEY,
    site          TEXT   NOT NULL,
    box           TEXT   NOT NULL,
    epoch         TEXT   NOT NULL,
    seq           BIGINT NOT NULL,
    attempt_id    BIGINT NOT NULL,
    campaign      TEXT   NOT NULL,
    agent         TEXT,
    started_at_ms BIGINT NOT NULL,
    record        TEXT   NOT NULL,
    UNIQUE (box, epoch, attempt_id)
);
CREATE INDEX campaign_results_site_started ON campaign_results(site, started_at_ms);

CREATE TABLE campaign_progress (
    id          BIGSERIAL PRIMARY KEY,
    site        TEXT   NOT NULL,
    box         TEXT   NOT NULL,
    epoch       TEXT   NOT NULL,
    seq         BIGINT NOT NULL,
    campaign_id BIGINT NOT NULL,
    campaign    TEXT   NOT NULL,
    record      TEXT   NOT NULL,
    UNIQUE (box, epoch, campaign_id)
);

CREATE TABLE service_records (
    id              BIGSERIAL PRIMARY KEY,
    site            TEXT   NOT NULL,
    box             TEXT   NOT NULL,
    epoch           TEXT   NOT NULL,
    seq             BIGINT NOT NULL,
    call_id         TEXT   NOT NULL,
    customer_hq_id  TEXT,
    customer_box_id BIGINT,
    number          TEXT   NOT NULL,
    agent_id        TEXT,
    started_at_ms   BIGINT NOT NULL,
    record          TEXT   NOT NULL,
    UNIQUE (box, epoch, call_id)
);
CREATE INDEX service_records_site_started ON service_records(site, started_at_ms);
CREATE INDEX service_records_number ON service_records(number);

CREATE TABLE call_notes (
    id      BIGSERIAL PRIMARY KEY,
    site    TEXT   NOT NULL,
    box     TEXT   NOT NULL,
    epoch   TEXT   NOT NULL,
    seq     BIGINT NOT NULL,
    call_id TEXT   NOT NULL,
    note_id BIGINT NOT NULL,
    at_ms   BIGINT NOT NULL,
    record  TEXT   NOT NULL,
    UNIQUE (box, epoch, note_id)
);
CREATE INDEX call_notes_call ON call_notes(box, epoch, call_id);

CREATE TABLE box_customers (
    id          BIGSERIAL PRIMARY KEY,
    site        TEXT   NOT NULL,
    box         TEXT   NOT NULL,
    epoch       TEXT   NOT NULL,
    seq         BIGINT NOT NULL,
    customer_id BIGINT NOT NULL,
    name        TEXT   NOT NULL,
    deleted     BOOLEAN NOT NULL,
    record      TEXT   NOT NULL,
    UNIQUE (box, epoch, customer_id)
);
CREATE INDEX box_customers_site ON box_customers(site, id);

-- A customer's numbers, for the admin API's number filter: replaced with each record.
CREATE TABLE box_customer_numbers (
    customer_row BIGINT NOT NULL REFERENCES box_customers(id) ON DELETE CASCADE,
    number       TEXT   NOT NULL,
    PRIMARY KEY (customer_row, number)
);
CREATE INDEX box_customer_numbers_number ON box_customer_numbers(number);
