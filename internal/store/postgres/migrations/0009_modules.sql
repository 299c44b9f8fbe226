-- Modules: the module identities of devices (internal/registry,
-- modules.go) and their twins, one row each, like devices. A module
-- belongs to its device: deleting the device deletes its modules.
CREATE TABLE modules (
    device_id                     text COLLATE "C" NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    module_id                     text COLLATE "C" NOT NULL,
    generation_id                 text COLLATE "C" NOT NULL,
    etag                          bigint NOT NULL,
    managed_by                    text COLLATE "C" NOT NULL,
    auth_type                     text COLLATE "C" NOT NULL,
    primary_key                   text COLLATE "C" NOT NULL,
    secondary_key                 text COLLATE "C" NOT NULL,
    primary_thumbprint            text COLLATE "C",
    secondary_thumbprint          text COLLATE "C",
    connection_state              text COLLATE "C" NOT NULL,
    connection_state_updated_time text COLLATE "C" NOT NULL,
    last_activity_time            text COLLATE "C" NOT NULL,
    c2d_message_count             bigint NOT NULL,
    twin_etag                     bigint NOT NULL,
    twin_version                  bigint NOT NULL,
    tags                          jsonb NOT NULL,
    desired                       jsonb NOT NULL,
    desired_version               bigint NOT NULL,
    desired_metadata              jsonb NOT NULL,
    reported                      jsonb NOT NULL,
    reported_version              bigint NOT NULL,
    reported_metadata             jsonb NOT NULL,
    PRIMARY KEY (device_id, module_id)
);
