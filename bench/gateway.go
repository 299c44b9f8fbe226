package main

import (
	"context"
	"fmt"
	"time"

	"github.com/herd-iot/herd/bench/measure"
)

// benchGateway measures, with the devices in a child process over plain
// MQTT sockets: connects per second (cold and warm), the hub's RSS per
// idle device, method round trips and a method job over the fleet.
func benchGateway(ctx context.Context, e *bench) error {
	for _, b := range e.backends {
		if err := gatewayOn(ctx, e, b); err != nil {
			return fmt.Errorf("%s: %w", b.Name(), err)
		}
	}
	return nil
}

func gatewayOn(ctx context.Context, e *bench, b *backend) error {
	cfg, r, logf := e.cfg, e.r, e.logf
	n := cfg.gatewayDevices
	st := b.Name()
	h, err := b.hub(ctx, "gateway", "", 0, true)
	if err != nil {
		return err
	}
	defer h.stop()
	ids, err := register(ctx, h, "gw-", n)
	if err != nil {
		return err
	}
	scale := fmt.Sprintf("%s devices", count(n))
	base := measure.SettledRSS()
	f, err := startFleet(h.dir, fleetSpec{Host: h.Hostname(), Addr: h.MQTTPlainAddr().String(), Concurrency: 512, Devices: ids})
	if err != nil {
		return err
	}
	defer f.close()

	logf("connecting %d devices over plain MQTT from a child process (%s)", n, st)
	rep, err := f.do("connect")
	if err != nil {
		return err
	}
	if err := waitConnected(ctx, h, int64(n), time.Minute); err != nil {
		return err
	}
	r.add(row{what: "SAS-authenticated connects, plain MQTT, first connect (cold key cache, 512 in flight)", store: st, scale: scale,
		measured: fmt.Sprintf("**%s/s** (%s)", count(int(float64(n)/rep.Seconds)), seconds(time.Duration(rep.Seconds*float64(time.Second)))),
		target:   "≥ 10,000/s"})
	time.Sleep(2 * time.Second) // the registry's batched connection-state writes are done
	idle := measure.SettledRSS()
	r.add(row{what: "hub RSS per idle connected device, plain MQTT (hub process only)", store: st, scale: scale,
		measured: fmt.Sprintf("**%.1f KB** (hub %s → %s MB)", float64(idle-base)/float64(n), count(int(base/1024)), count(int(idle/1024))),
		target:   "≤ 10 KB"})

	logf("method round trips for %s with %d in flight", cfg.roundTrips, cfg.inflight)
	rt := measure.MeasureRoundTrips(ctx, h.Methods, ids, cfg.roundTrips, cfg.inflight)
	r.add(row{what: fmt.Sprintf("direct-method round trips through the gateway (method.Invoke → device → answer, %d in flight)", cfg.inflight), store: st, scale: scale,
		measured: fmt.Sprintf("**%s/s**, p50 %s, p99 %s, %d errors", count(int(rt.Rate)), seconds(rt.P50), seconds(rt.P99), rt.Errors),
		target:   "≥ 60,000/s"})

	logf("method job over %d socket devices, %d runs", n, cfg.jobRuns)
	took, err := jobRuns(ctx, h, cfg.jobRuns, n, "socket-method",
		`{"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":"lockDoor","payload":{"lockTime":"10m"}}}`)
	if err != nil {
		return err
	}
	r.add(row{what: "method job, devices over plain MQTT sockets (child process), every outcome persisted", store: st, scale: scale,
		measured: rate(n, took), target: "≥ 30,000 devices/s (10k)", n: n})
	jobRate := float64(n) / took[len(took)/2].Seconds()
	r.ratio(row{what: "method job devices/s ÷ direct-method round trips/s (same devices, same hub, same run)", store: st, scale: scale,
		measured: fmt.Sprintf("%.2f (%s/s ÷ %s/s)", jobRate/rt.Rate, count(int(jobRate)), count(int(rt.Rate))), target: "≥ 0.9"})

	logf("reconnecting %d devices", n)
	if _, err := f.do("disconnect"); err != nil {
		return err
	}
	if err := waitConnected(ctx, h, 0, time.Minute); err != nil {
		return err
	}
	if rep, err = f.do("connect"); err != nil {
		return err
	}
	r.add(row{what: "SAS-authenticated connects, plain MQTT, reconnect (warm key cache, session kept)", store: st, scale: scale,
		measured: fmt.Sprintf("**%s/s** (%s)", count(int(float64(n)/rep.Seconds)), seconds(time.Duration(rep.Seconds*float64(time.Second)))),
		target:   "≥ 10,000/s"})
	return nil
}
