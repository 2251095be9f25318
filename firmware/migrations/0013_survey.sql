-- Post-call survey (issue 6): a queue may name a voice prompt that its callers hear
-- when the agent hangs up first, asking for a score 1-5 on the keypad; the score the
-- caller keyed is kept on the call's CDR. NULL: no survey for the queue / no score
-- (none asked, none keyed, or written before this migration).
--
-- Additive only. Never edit a released migration: add a new file instead.

ALTER TABLE queues ADD COLUMN survey_prompt TEXT
    CHECK (survey_prompt IS NULL OR (length(survey_prompt) BETWEEN 1 AND 64
           AND survey_prompt NOT GLOB '*[^a-z0-9_-]*'));
ALTER TABLE cdrs ADD COLUMN survey_score INTEGER CHECK (survey_score BETWEEN 1 AND 5);
