-- branch-hq schema, SQLite, version 2: what boxes send is stored once.
--
-- 1. up_records keeps a record's payload JSON only when no projection holds all of
--    it (NULL for a CDR, audit row or recording whose fields all have columns; kept
--    for edits, agent state, surveys, and for fields a newer firmware added). SQLite
--    cannot drop NOT NULL in place, so the table is rebuilt; rows stored before
--    this version keep their payload. (The key stays (box, epoch, seq): one writer,
--    no concurrency to win from a narrower key.)
-- 2. cdrs keeps the SIP Call-IDs of the caller's and the callee's legs (firmware
--    migration 0004), so the admin CDR query returns them.
CREATE TABLE up_records_v2 (
    box            TEXT NOT NULL,
    epoch          TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    kind           TEXT NOT NULL,
    key            TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    payload        TEXT,
    PRIMARY KEY (box, epoch, seq)
) WITHOUT ROWID;
INSERT INTO up_records_v2 SELECT box, epoch, seq, kind, key, created_at_ms, received_at_ms, payload
FROM up_records;
DROP TABLE up_records;
ALTER TABLE up_records_v2 RENAME TO up_records;
ALTER TABLE cdrs ADD COLUMN caller_sip_call_id TEXT;
ALTER TABLE cdrs ADD COLUMN callee_sip_call_id TEXT;
