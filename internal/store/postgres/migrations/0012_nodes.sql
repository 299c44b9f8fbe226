-- The nodes serving this store and their leases (internal/cluster): a
-- node renews its row every few seconds while it runs and sets
-- stopped_time when it shuts down. Not hub data: `herd store copy` leaves
-- it behind.
CREATE TABLE nodes (
    node_id           text COLLATE "C" PRIMARY KEY,
    started_time      text COLLATE "C" NOT NULL,
    renewed_time      text COLLATE "C" NOT NULL,
    lease_until       text COLLATE "C" NOT NULL,
    stopped_time      text COLLATE "C",
    rest_address      text NOT NULL,
    mqtt_address      text NOT NULL,
    version           text NOT NULL,
    connected_devices bigint NOT NULL
);
