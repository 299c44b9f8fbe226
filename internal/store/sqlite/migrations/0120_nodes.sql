-- The nodes serving this store and their leases (internal/cluster): a
-- node renews its row every few seconds while it runs and sets
-- stopped_time when it shuts down. Not hub data: `herd store copy` leaves
-- it behind.
CREATE TABLE nodes (
    node_id           TEXT PRIMARY KEY,
    started_time      TEXT NOT NULL,
    renewed_time      TEXT NOT NULL,
    lease_until       TEXT NOT NULL,
    stopped_time      TEXT,
    rest_address      TEXT NOT NULL,
    mqtt_address      TEXT NOT NULL,
    version           TEXT NOT NULL,
    connected_devices INTEGER NOT NULL
);
