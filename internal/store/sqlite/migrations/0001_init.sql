-- Policies: the hub's shared access policies (rights is a bit set, see
-- internal/auth.Rights).
CREATE TABLE policies (
    name          TEXT PRIMARY KEY,
    primary_key   TEXT NOT NULL,
    secondary_key TEXT NOT NULL,
    rights        INTEGER NOT NULL
);

-- Devices: one row per device identity and its twin, so that twin queries
-- read one table. Times are TEXT in Azure's layout
-- (2006-01-02T15:04:05.0000000Z, never-set = 0001-01-01T00:00:00Z), which
-- sorts in time order. Twin sections are JSON objects without their
-- $version and $metadata members, which live in the columns beside them.
CREATE TABLE devices (
    device_id                     TEXT PRIMARY KEY,
    generation_id                 TEXT NOT NULL,
    etag                          INTEGER NOT NULL,
    status                        TEXT NOT NULL,
    status_reason                 TEXT,
    status_updated_time           TEXT NOT NULL,
    auth_type                     TEXT NOT NULL,
    primary_key                   TEXT NOT NULL,
    secondary_key                 TEXT NOT NULL,
    primary_thumbprint            TEXT,
    secondary_thumbprint          TEXT,
    iot_edge                      INTEGER NOT NULL,
    device_scope                  TEXT NOT NULL,
    parent_scopes                 TEXT NOT NULL,
    connection_state              TEXT NOT NULL,
    connection_state_updated_time TEXT NOT NULL,
    last_activity_time            TEXT NOT NULL,
    c2d_message_count             INTEGER NOT NULL,
    twin_etag                     INTEGER NOT NULL,
    twin_version                  INTEGER NOT NULL,
    tags                          TEXT NOT NULL,
    desired                       TEXT NOT NULL,
    desired_version               INTEGER NOT NULL,
    desired_metadata              TEXT NOT NULL,
    reported                      TEXT NOT NULL,
    reported_version              INTEGER NOT NULL,
    reported_metadata             TEXT NOT NULL
);

-- Settings: what the last `herd serve` was configured with (host name,
-- HTTPS address), so that other commands can build connection strings.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
