-- Extension modes of call-center agents (issue 6): which phone an agent's queue calls
-- ring.
--   login      hot-desking: the phone the agent logged in on with the feature code
--              (no other agent holds it); the default, and the behaviour before 0018.
--   fixed      always the user's own `extension`; a feature-code log-in from another
--              phone is refused.
--   automatic  the SIP phone registered from the same IP address as the agent's
--              desktop, which logs in through the local API.
-- Kept on `users` next to `agent_id` (the agent is the user); HQ's user sync updates
-- named columns only, so a mode set on the box survives it.
ALTER TABLE users ADD COLUMN extension_mode TEXT NOT NULL DEFAULT 'login'
    CHECK (extension_mode IN ('login', 'fixed', 'automatic'));
