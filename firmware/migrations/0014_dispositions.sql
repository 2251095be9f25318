-- Disposition tagging (issue 6, agents): during wrap-up an agent keys a customer-type
-- digit (`*60<digit>` by default) for the queue call they just finished. The tag is
-- kept per call here rather than on the CDR row: the CDR may still be waiting for its
-- legs' quality (or the survey) when the agent keys it, and a CDR already handed to
-- the outbox is never rewritten. Keying again during the same wrap-up replaces the
-- tag (and queues it for HQ again). `type_name` is the type's name when it was keyed
-- (types can be renamed or deleted later); `customer_id` the customer whose type was
-- set, found by the call's caller number (NULL: no customer has that number).
--
-- Additive only. Never edit a released migration: add a new file instead.

CREATE TABLE cdr_dispositions (
    call_id     TEXT    PRIMARY KEY CHECK (length(call_id) BETWEEN 1 AND 64),
    agent_id    TEXT    NOT NULL,
    digit       INTEGER NOT NULL CHECK (digit BETWEEN 0 AND 9),
    type_name   TEXT    NOT NULL,
    customer_id INTEGER REFERENCES customers (id) ON DELETE SET NULL,
    at_ms       INTEGER NOT NULL
) STRICT;
