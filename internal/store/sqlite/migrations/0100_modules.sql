-- Modules: the module identities of devices (internal/registry,
-- modules.go) and their twins, one row each, like devices. A module
-- belongs to its device: deleting the device deletes its modules. The
-- twin sections are SQLite JSONB, written with jsonb(?) and read with
-- json(…), as in devices.
CREATE TABLE modules (
    device_id                     TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    module_id                     TEXT NOT NULL,
    generation_id                 TEXT NOT NULL,
    etag                          INTEGER NOT NULL,
    managed_by                    TEXT NOT NULL,
    auth_type                     TEXT NOT NULL,
    primary_key                   TEXT NOT NULL,
    secondary_key                 TEXT NOT NULL,
    primary_thumbprint            TEXT,
    secondary_thumbprint          TEXT,
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
    reported_metadata             TEXT NOT NULL,
    PRIMARY KEY (device_id, module_id)
);
