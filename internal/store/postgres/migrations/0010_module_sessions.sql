-- Persistent MQTT sessions of modules (§8.3), as device_sessions keeps
-- devices': the subscription set of a module that connected with
-- clean session 0, deleted with the module.
CREATE TABLE module_sessions (
    device_id     text COLLATE "C" NOT NULL,
    module_id     text COLLATE "C" NOT NULL,
    subscriptions integer NOT NULL,
    PRIMARY KEY (device_id, module_id),
    FOREIGN KEY (device_id, module_id) REFERENCES modules (device_id, module_id) ON DELETE CASCADE
);
