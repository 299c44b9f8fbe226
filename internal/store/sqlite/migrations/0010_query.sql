-- Twin queries (internal/query, docs/query.md). The twin sections are
-- stored as SQLite JSONB, which the JSON functions read without parsing
-- text, and a covering index keeps them beside device_id in a narrow
-- b-tree: a query over tags or properties scans the index in device_id
-- order (its pages are ~10x fewer than the table's) and reads full rows
-- only for the devices it returns. The store writes the sections with
-- jsonb(?) and reads them with json(…).
UPDATE devices SET tags = jsonb(tags), desired = jsonb(desired), reported = jsonb(reported);
CREATE INDEX devices_query ON devices (device_id, tags, desired, reported);
