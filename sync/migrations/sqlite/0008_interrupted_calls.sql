-- branch-hq schema, SQLite, version 8: calls the box's power cut or crash interrupted.
--
-- `interrupted`: 1 when the box rebuilt the CDR at start-up from its journal of live
-- calls (wire `Cdr.interrupted`): the box stopped while the call was up, `ended_at_ms`
-- is the last moment it knew the call was up. 0 for every other call, and for records
-- from boxes that predate the field. Additive only.
ALTER TABLE cdrs ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
