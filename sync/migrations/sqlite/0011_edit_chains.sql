-- branch-hq schema, SQLite, version 11: who last wrote each entity row, so that a
-- box's consecutive offline edits of one row are not taken for a conflict (issue 5).
--
-- A box that edits a row twice before HQ's revision of the first edit comes back
-- down sends both edits with the same base revision (e.g. a user created on the box,
-- then added to a group: both carry base 0). HQ applied the first at revision R and
-- then saw the second's base (0) differ from R. Every revision after `chain_base`
-- up to the row's current one was written by `writer_box`'s own edits, so an edit
-- from that box based on any of those revisions saw nothing it did not write itself.
--
-- writer_box  the box whose edit wrote the current revision; NULL when an HQ operator
--             (the admin API) wrote it, or for rows written before this version.
-- chain_base  the revision the writer box's unbroken run of edits started from (0 for
--             a row the box created); NULL with writer_box.
ALTER TABLE entities ADD COLUMN writer_box TEXT;
ALTER TABLE entities ADD COLUMN chain_base INTEGER;
