-- Automatic device configurations (internal/config). body holds the
-- configuration's own members as JSON (labels, content, targetCondition,
-- priority, metric queries); the metric results are counted when read.
CREATE TABLE configurations (
    id           TEXT PRIMARY KEY,
    body         TEXT NOT NULL,
    created_time TEXT NOT NULL,
    updated_time TEXT NOT NULL,
    etag         INTEGER NOT NULL
);
