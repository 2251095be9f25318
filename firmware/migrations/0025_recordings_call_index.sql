-- Schema v25 (issue 8; listed after 0026, which landed first): find a call's
-- recordings without scanning the table. The web page's calls list and
-- `GET /api/v1/recordings?call_id=` look recordings up by the CDR's call id; a box
-- keeps tens of thousands of rows (retention keeps the row after the file is gone).
-- Never edit a released migration: add a new numbered one instead.

CREATE INDEX recordings_call ON recordings (call_id);
