-- The connection epoch of a device or module (cluster mode): the node that
-- accepts a connection raises it in the statement that records the
-- connection as its own (ClaimConnections), before its CONNACK; every
-- later write about that connection (its state, its persistent session)
-- carries the epoch it got and applies only while the epoch is still that
-- one, so a late write from a node the device has left changes nothing,
-- and takeovers are ordered by the epoch, not by the nodes' clocks. 0 for
-- connections recorded without one (a node alone).
ALTER TABLE devices ADD COLUMN conn_epoch bigint NOT NULL DEFAULT 0;
ALTER TABLE modules ADD COLUMN conn_epoch bigint NOT NULL DEFAULT 0;
