-- Schema v3: enrollment (hq::enroll). One row per one-time enrollment token HQ
-- accepted, written in the same transaction that registers the box and pins its new
-- certificate, so a token enrolls exactly one box key. The same token and the same
-- key again (a box that lost HQ's answer) is answered with a fresh certificate;
-- anything else presenting the token is refused.
CREATE TABLE enrollment_tokens (
    token_id      TEXT    PRIMARY KEY CHECK (length(token_id) = 16),
    box_id        TEXT    NOT NULL REFERENCES boxes(id),
    site          TEXT    NOT NULL REFERENCES sites(id),
    -- sha256 (hex) of the SubjectPublicKeyInfo of the key that enrolled.
    key_sha256    TEXT    NOT NULL CHECK (length(key_sha256) = 64),
    expires_at_s  INTEGER NOT NULL,
    used_at_ms    INTEGER NOT NULL
);
CREATE INDEX enrollment_tokens_box ON enrollment_tokens(box_id);
