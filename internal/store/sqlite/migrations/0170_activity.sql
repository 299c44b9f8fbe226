-- The activity of devices and modules between their connection changes.
-- A connected device's lastActivityTime moves on every few seconds while
-- it talks (at most once per 5 s, internal/gateway); written into the
-- devices row, each such write rewrites the whole row with its twin.
-- Here it rewrites a row of two columns. The row's own
-- last_activity_time still takes the activity written with a connection
-- change (which rewrites the row anyway); a reader takes the later of
-- the two (internal/query.LastActivity). Deleted with the device or
-- module.
CREATE TABLE device_activity (
    device_id          TEXT PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    last_activity_time TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE module_activity (
    device_id          TEXT NOT NULL,
    module_id          TEXT NOT NULL,
    last_activity_time TEXT NOT NULL,
    PRIMARY KEY (device_id, module_id),
    FOREIGN KEY (device_id, module_id) REFERENCES modules (device_id, module_id) ON DELETE CASCADE
) WITHOUT ROWID;
