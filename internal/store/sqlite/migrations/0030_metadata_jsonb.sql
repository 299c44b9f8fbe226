-- Twin $metadata trees as SQLite JSONB, like the sections beside them
-- (migration 0010). A twin-update job merges a patch into desired
-- $metadata for every twin it writes; on text the merge parsed the old
-- tree into JSONB and printed the result back to text, row by row. The
-- store writes them with jsonb(?) and reads them with json(…); queries on
-- properties.*.$metadata read JSONB with the same JSON functions.
UPDATE devices SET desired_metadata = jsonb(desired_metadata), reported_metadata = jsonb(reported_metadata);
