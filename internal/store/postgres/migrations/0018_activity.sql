-- The activity of devices and modules between their connection changes,
-- as in the SQLite store's migration 0170. PostgreSQL writes a new
-- version of a whole row for any update: an activity write into the
-- devices row copied the device's identity and twin, and its index
-- entries when the page had no room. Here it is a row of two columns,
-- with room on its page for the next version (fillfactor), so that the
-- update is a heap-only one. A reader takes the later of this and the
-- row's own last_activity_time (internal/query.LastActivity).
CREATE TABLE device_activity (
    device_id          text COLLATE "C" PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    last_activity_time text COLLATE "C" NOT NULL
) WITH (fillfactor = 50);

CREATE TABLE module_activity (
    device_id          text COLLATE "C" NOT NULL,
    module_id          text COLLATE "C" NOT NULL,
    last_activity_time text COLLATE "C" NOT NULL,
    PRIMARY KEY (device_id, module_id),
    FOREIGN KEY (device_id, module_id) REFERENCES modules (device_id, module_id) ON DELETE CASCADE
) WITH (fillfactor = 50);
