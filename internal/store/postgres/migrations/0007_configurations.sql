-- Automatic device configurations (internal/config). body holds the
-- configuration's own members as JSON (labels, content, targetCondition,
-- priority, metric queries); the metric results are counted when read.
CREATE TABLE configurations (
    id           text COLLATE "C" PRIMARY KEY,
    body         text NOT NULL,
    created_time text COLLATE "C" NOT NULL,
    updated_time text COLLATE "C" NOT NULL,
    etag         bigint NOT NULL
);
