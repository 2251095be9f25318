-- Schema v9: certificate renewal and box revocation (hq::enroll, hq::sync_api).
--
-- A box renewing its certificate over mutual TLS gets a new one that HQ stages in
-- next_cert_fingerprint: until the box first uses it, both the current and the next
-- certificate are accepted (a box that lost the answer, or crashed before storing the
-- new files, still gets in with the old one); the first request made with the next
-- certificate promotes it to cert_fingerprint and the old one is refused from then on.
--
-- A revoked box (revoked_at_ms set, POST /admin/v1/boxes/{id}/revoke) is refused on
-- every mutual-TLS request; only an explicit re-enrollment with a fresh, valid token
-- clears the flag. admin_audit records the operator's and the boxes' identity changes
-- (revoke, enroll, re-enroll, renew).
ALTER TABLE boxes ADD COLUMN next_cert_fingerprint TEXT;
ALTER TABLE boxes ADD COLUMN cert_renewed_at_ms INTEGER;
ALTER TABLE boxes ADD COLUMN revoked_at_ms INTEGER;
ALTER TABLE boxes ADD COLUMN revoked_reason TEXT;
CREATE TABLE admin_audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms    INTEGER NOT NULL,
    actor    TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    box_id   TEXT    NOT NULL,
    detail   TEXT    NOT NULL
);
CREATE INDEX admin_audit_box ON admin_audit(box_id);
