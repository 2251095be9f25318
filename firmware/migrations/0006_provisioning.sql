-- Schema v6: USB provisioning (crate::provision).
--
-- One bundle is applied in ONE transaction: its settings replace provisioned_settings,
-- its token id goes into provisioning_used_tokens and its sha256 into
-- provisioning_bundles, or nothing changes.

-- Enrollment token ids already used on this box (replay protection, UsedTokens).
CREATE TABLE provisioning_used_tokens (
    token_id   TEXT    PRIMARY KEY CHECK (length(token_id) = 16),
    used_at_s  INTEGER NOT NULL
) STRICT;

-- Bundles applied, by the sha256 of their bytes: the same stick again is a no-op.
CREATE TABLE provisioning_bundles (
    sha256     TEXT    PRIMARY KEY CHECK (length(sha256) = 64),
    token_id   TEXT    NOT NULL REFERENCES provisioning_used_tokens (token_id),
    site       TEXT    NOT NULL,
    applied_at_s INTEGER NOT NULL
) STRICT;

-- The settings of the last applied bundle, one row per field, the value as JSON:
-- site, hq_url, ca_pin, enrollment_token (kept for the enrollment step), country,
-- network, trunk, fxs (port -> extension map), fxo, installer.
CREATE TABLE provisioned_settings (
    field      TEXT    PRIMARY KEY,
    value      TEXT    NOT NULL CHECK (json_valid(value)),
    bundle_sha256 TEXT NOT NULL REFERENCES provisioning_bundles (sha256)
) STRICT;
