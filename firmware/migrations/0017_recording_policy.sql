-- Schema v17: recording policies of queues and agents (issue 6 item 4).
--
-- Extensions' policies are in `[recording]` of the config file; a queue's and an
-- agent's are here, next to their rows: 'always', 'never' (default: asks for nothing)
-- or 'on_demand'. The most demanding policy of a call wins (crate::recorder::calls).
-- Queues synced from HQ keep the box's value (HQ's entity does not carry it).
-- Never edit a released migration: add a new numbered one instead.

ALTER TABLE queues ADD COLUMN recording TEXT NOT NULL DEFAULT 'never'
    CHECK (recording IN ('always', 'never', 'on_demand'));

ALTER TABLE users ADD COLUMN recording TEXT NOT NULL DEFAULT 'never'
    CHECK (recording IN ('always', 'never', 'on_demand'));
