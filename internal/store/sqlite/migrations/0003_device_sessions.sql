-- Persistent MQTT sessions (§8.3): what a clean-session-0 device subscribed
-- to, kept across reconnects and hub restarts. subscriptions is a bit set
-- (internal/bus.Feature: 1 methods, 2 twin responses, 4 desired, 8 C2D).
-- The session goes with its device.
CREATE TABLE device_sessions (
    device_id     TEXT PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    subscriptions INTEGER NOT NULL
);
