package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/cluster"
)

// RenewNode writes a node's lease (cluster.Store).
func (db *DB) RenewNode(ctx context.Context, l cluster.Lease) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO nodes (node_id, started_time, renewed_time, lease_until, stopped_time,
		rest_address, mqtt_address, version, connected_devices, runs_jobs, running_jobs) VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8, $9, $10)
		ON CONFLICT (node_id) DO UPDATE SET started_time = excluded.started_time, renewed_time = excluded.renewed_time,
		lease_until = excluded.lease_until, stopped_time = NULL, rest_address = excluded.rest_address,
		mqtt_address = excluded.mqtt_address, version = excluded.version, connected_devices = excluded.connected_devices,
		runs_jobs = excluded.runs_jobs, running_jobs = excluded.running_jobs`,
		l.NodeID, stamp(l.StartedTime), stamp(l.RenewedTime), stamp(l.LeaseUntil), l.RESTAddress, l.MQTTAddress, l.Version, l.ConnectedDevices, l.Leader, l.RunningJobs)
	if err != nil {
		return fmt.Errorf("renew the lease of node %q: %w", l.NodeID, err)
	}
	return nil
}

// StopNode ends a node's lease (cluster.Store).
func (db *DB) StopNode(ctx context.Context, id string, now time.Time) error {
	at := stamp(now)
	if _, err := db.pool.Exec(ctx, `UPDATE nodes SET stopped_time = $1, lease_until = $1, runs_jobs = false, running_jobs = 0 WHERE node_id = $2`, at, id); err != nil {
		return fmt.Errorf("end the lease of node %q: %w", id, err)
	}
	return nil
}

// Nodes returns every node's row (cluster.Store).
func (db *DB) Nodes(ctx context.Context) ([]*herd.Node, error) {
	rows, err := db.pool.Query(ctx, `SELECT node_id, started_time, renewed_time, lease_until, coalesce(stopped_time, ''),
		rest_address, mqtt_address, version, connected_devices, runs_jobs, running_jobs FROM nodes ORDER BY node_id`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*herd.Node, error) {
		var (
			n                                herd.Node
			started, renewed, until, stopped string
		)
		if err := row.Scan(&n.NodeID, &started, &renewed, &until, &stopped, &n.RESTAddress, &n.MQTTAddress, &n.Version, &n.ConnectedDevices, &n.Leader, &n.RunningJobs); err != nil {
			return nil, err
		}
		n.StartedTime, n.RenewedTime, n.LeaseUntil, n.StoppedTime = parseTime(started), parseTime(renewed), parseTime(until), parseTime(stopped)
		return &n, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return out, nil
}

// PurgeNodes forgets the nodes whose lease ended before t (cluster.Store).
func (db *DB) PurgeNodes(ctx context.Context, before time.Time) (int, error) {
	tag, err := db.pool.Exec(ctx, `DELETE FROM nodes WHERE lease_until < $1`, stamp(before))
	if err != nil {
		return 0, fmt.Errorf("forget old nodes: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

var _ cluster.Store = (*DB)(nil)

// DisconnectNode marks Disconnected, at at, the devices and modules
// connected through node (cluster.Store).
func (db *DB) DisconnectNode(ctx context.Context, node string, at time.Time) (int64, error) {
	return db.disconnect(ctx, at, `conn_node = $2`, node)
}

// DisconnectOrphans marks Disconnected, at at, the devices and modules
// connected through a node that holds no lease at at: lost, stopped or
// unknown (cluster.Store).
func (db *DB) DisconnectOrphans(ctx context.Context, at time.Time) (int64, error) {
	return db.disconnect(ctx, at, `conn_node NOT IN (SELECT node_id FROM nodes WHERE stopped_time IS NULL AND lease_until >= $2)`, stamp(at))
}

// disconnect marks the connected devices and modules where a condition
// holds (of one argument) Disconnected at at. The literal states let the
// planner use the partial indexes of connected devices by node.
func (db *DB) disconnect(ctx context.Context, at time.Time, where string, arg any) (int64, error) {
	var n int64
	err := db.tx(ctx, func(tx pgx.Tx) error {
		for _, table := range []string{"devices", "modules"} {
			tag, err := tx.Exec(ctx, `UPDATE `+table+` SET connection_state = 'Disconnected', connection_state_updated_time = $1
				WHERE connection_state = 'Connected' AND `+where, stamp(at), arg)
			if err != nil {
				return err
			}
			n += tag.RowsAffected()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("record devices disconnected: %w", err)
	}
	return n, nil
}

// ConnectedNode returns the node a device or module is connected
// through, or "" (mesh.Presence).
func (db *DB) ConnectedNode(ctx context.Context, id string) (string, error) {
	var node string
	dev, mod := herd.SplitIdentity(id)
	var err error
	if mod == "" {
		err = db.pool.QueryRow(ctx, `SELECT conn_node FROM devices WHERE device_id = $1 AND connection_state = 'Connected'`, dev).Scan(&node)
	} else {
		err = db.pool.QueryRow(ctx, `SELECT conn_node FROM modules WHERE device_id = $1 AND module_id = $2 AND connection_state = 'Connected'`, dev, mod).Scan(&node)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("the node of %q: %w", id, err)
	}
	return node, nil
}
