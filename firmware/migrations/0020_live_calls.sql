-- Schema 20: the journal of live calls, and CDRs of calls a power cut interrupted
-- (issue 6: "kill -9 during a recorded call leaves ... a CDR marked interrupted after
-- restart").
--
-- `live_calls` holds, for every call that is up, the CDR it would get if it ended at
-- `updated_at_ms` (JSON, the sync wire's `Cdr`). The daemon writes a call's row when it
-- is answered and refreshes the whole table every few seconds while calls are up; the
-- transaction that stores a call's CDR deletes its row. `ended` is 1 for a call that
-- ended and whose CDR only waits for its legs' quality reports (written as it is at the
-- next start), 0 for a call still up (written at the next start with `interrupted` set).
-- `recordings`: the keys (`p1`, `l3`, as in recording file names) of the recordings of
-- the call running at the last write, comma-separated: a recording a crash cut is
-- registered under the call's id at the next start.
--
-- `cdrs.interrupted`: 1 for a CDR rebuilt at start-up from this journal: the box
-- stopped (power cut, crash, kill -9) while the call was up and `ended_at_ms` is the
-- last moment it knew the call was up. Rows written before are 0. Additive only.
CREATE TABLE live_calls (
    call_id       TEXT PRIMARY KEY NOT NULL,
    cdr           TEXT NOT NULL,
    ended         INTEGER NOT NULL CHECK (ended IN (0, 1)),
    recordings    TEXT NOT NULL DEFAULT '',
    updated_at_ms INTEGER NOT NULL
);
ALTER TABLE cdrs ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0 CHECK (interrupted IN (0, 1));
