-- The node a device's or module's connection is on (internal/cluster).
-- A disconnect is recorded only by the node the connection is on; a node
-- that starts marks Disconnected its own connections and those left by
-- nodes that are gone, and the nodes that run mark Disconnected those of
-- a node whose lease lapsed. '' for connections recorded before nodes
-- were. The partial indexes find a node's connected devices without
-- reading the others.
ALTER TABLE devices ADD COLUMN conn_node text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE modules ADD COLUMN conn_node text COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX devices_connected_node ON devices (conn_node) WHERE connection_state = 'Connected';
CREATE INDEX modules_connected_node ON modules (conn_node) WHERE connection_state = 'Connected';
