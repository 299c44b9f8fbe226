package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/certs"
	"github.com/herd-iot/herd/internal/hubtest"
	"github.com/herd-iot/herd/internal/store/pgtest"
	"github.com/herd-iot/herd/service"
)

// TestClusterSurvivesRestarts restarts PostgreSQL (killed, as a crash
// would) and then the NATS server under a 2-node cluster in the middle of
// a method job: the nodes reconnect to both, the node that holds the
// job's lease renews it once the database is back (or another node takes
// the job, if the holder's session was seen gone first), and the job goes
// on.
// One device connects only after both restarts, so the job must still run
// then; no device runs the method twice, and the only failures are calls
// whose outcome the restarts may have lost.
func TestClusterSurvivesRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	ctx := context.Background()
	// Commits durable before they return, as a real server's are (the
	// throwaway default loses the last ones in a crash, and a claim lost
	// that way would let a method run twice); fsync may stay off: the
	// machine does not crash, only the server.
	pg, err := pgtest.StartWith("synchronous_commit=on")
	if err != nil {
		pgtest.Unavailable(t, err)
	}
	t.Cleanup(pg.Stop)
	name, err := pg.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nats := hubtest.StartNATS(t)
	dir0 := t.TempDir()
	c := &testCluster{t: t, bin: buildHerd(t), nats: nats.URL, store: pg.DatabaseURL(name), dir0: dir0,
		ca: filepath.Join(dir0, certs.CAFile), lease: "3s"}
	n0, n1 := c.start(0), c.start(1)
	admin := c.client(n1)
	const n = 12
	f := newPingFleet(t, c, 200*time.Millisecond)
	var late *herd.Device
	for i := range n + 1 {
		d, err := admin.CreateDevice(ctx, herd.Device{DeviceID: fmt.Sprintf("dev-%02d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if i == n {
			late = d
			break
		}
		f.connect(d, []*clusterNode{n0, n1}[i%2].mqtt)
	}
	// 2 devices a second, over the restarts.
	if _, err := admin.ScheduleDeviceMethod(ctx, "restarts", "*",
		herd.MethodRequest{MethodName: "ping", ResponseTimeoutInSeconds: 10, ConnectTimeoutInSeconds: 120},
		service.JobOptions{Herd: &herd.JobOptions{Rollout: &herd.Rollout{MaxPerMinute: 120}}}); err != nil {
		t.Fatal(err)
	}
	progress := func() int64 {
		j, err := admin.GetJob(ctx, "restarts")
		if err != nil {
			return -1 // the database may be down
		}
		return j.DeviceJobStatistics.SucceededCount + j.DeviceJobStatistics.FailedCount
	}
	hubtest.Eventually(t, 30*time.Second, func() bool { return progress() >= 2 }, "the job does not start")

	pg.Kill()
	if err := pg.Restart(); err != nil {
		t.Fatal(err)
	}
	var before int64
	hubtest.Eventually(t, 30*time.Second, func() bool { before = progress(); return before >= 0 }, "the job cannot be read after PostgreSQL restarted")
	hubtest.Eventually(t, 60*time.Second, func() bool { return progress() > before },
		"the job does not go on after PostgreSQL restarted (%d done before)", before)

	nats.Restart()
	before = progress()
	hubtest.Eventually(t, 60*time.Second, func() bool { return progress() > before },
		"the job does not go on after NATS restarted (%d done before)", before)
	// The nodes reach each other again: a method from node-1's REST API
	// to a device on node-0.
	hubtest.Eventually(t, 30*time.Second, func() bool {
		res, err := admin.InvokeMethod(ctx, "dev-00", herd.MethodRequest{MethodName: "ping", ResponseTimeoutInSeconds: 5})
		return err == nil && res.Status == 200
	}, "no method from node-1 reaches a device on node-0 after NATS restarted")

	f.connect(late, n0.mqtt)
	f.extra["dev-00"] = 1 // the direct method above
	f.checkJob(admin, "restarts", n+1, late.DeviceID, "a restart")
}
