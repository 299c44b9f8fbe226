package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/fleetdb"
	"github.com/herd-iot/herd/internal/store"
	"github.com/herd-iot/herd/service"
)

// importInFlight is how many bulk requests the import keeps in flight.
const importInFlight = 8

// benchImport creates cfg.importDevices devices through the bulk registry
// API (POST /devices, 100 devices a request as Azure allows, with a tag
// each; the hub generates their keys) over HTTPS on loopback, on each
// store, and checks the registry counts them all.
func benchImport(ctx context.Context, e *bench) error {
	for _, b := range e.backends {
		if err := importOn(ctx, e, b); err != nil {
			return fmt.Errorf("%s: %w", b.Name(), err)
		}
	}
	return nil
}

func importOn(ctx context.Context, e *bench, b *backend) error {
	n := e.cfg.importDevices
	h, err := b.hub(ctx, "import", "", 0, false)
	if err != nil {
		return err
	}
	defer h.stop()
	cs, err := h.ConnectionString("iothubowner")
	if err != nil {
		return err
	}
	c, err := service.New(cs, service.WithCAFile(h.CAFile()), service.WithEndpoint("https://"+h.HTTPSAddr().String()))
	if err != nil {
		return err
	}
	defer c.Close()
	e.logf("importing %d devices through POST /devices (%s)", n, b.Name())
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(importInFlight)
	for first := 0; first < n; first += 100 {
		batch := make([]herd.ImportDevice, 0, 100)
		for i := first; i < min(first+100, n); i++ {
			batch = append(batch, herd.ImportDevice{ID: fleetdb.DeviceID(i), ImportMode: herd.ImportCreate,
				Status: herd.DeviceEnabled, Tags: map[string]any{"building": i % 100}})
		}
		g.Go(func() error {
			res, err := c.BulkDevices(gctx, batch)
			if err != nil {
				return err
			}
			if !res.IsSuccessful {
				return fmt.Errorf("bulk import failed: %+v", res.Errors)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	took := time.Since(start)
	st, err := c.RegistryStatistics(ctx)
	if err != nil {
		return err
	}
	if st.TotalDeviceCount != int64(n) {
		return fmt.Errorf("the registry counts %d devices after importing %d", st.TotalDeviceCount, n)
	}
	e.r.add(row{what: fmt.Sprintf("bulk import through the registry API (`POST /devices`, 100 devices a request, %d in flight, a tag each, keys generated)", importInFlight),
		store: b.Name(), scale: fmt.Sprintf("%s devices", count(n)),
		measured: fmt.Sprintf("**%s** (%s devices/s)", seconds(took), count(int(float64(n)/took.Seconds())))})
	return nil
}

// benchCopy measures herd store copy (store.Copy) of the jobs fleet of
// cfg.copyDevices devices: SQLite → PostgreSQL (building the fleet's
// PostgreSQL template, recorded by pgBench.fleet) and PostgreSQL → a new
// SQLite file. Without PostgreSQL among the stores it copies SQLite to
// SQLite.
func benchCopy(ctx context.Context, e *bench) error {
	n := e.cfg.copyDevices
	src, err := sqliteFleet(ctx, e, fleetdb.Jobs, n)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "herd-bench-copy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	from, what, label := "sqlite:"+src, "SQLite → SQLite", "SQLite"
	for _, b := range e.backends {
		if b.kind == storePostgres {
			label = "both"
			name, err := b.pg.fleet(ctx, e, fleetdb.Jobs, n)
			if err != nil {
				return err
			}
			from, what = b.pg.url(name), "PostgreSQL → SQLite"
		}
	}
	e.logf("copying the %d-device fleet, %s", n, what)
	took, err := copyStores(ctx, from, "sqlite:"+filepath.Join(dir, store.SQLiteFile), dir)
	if err != nil {
		return err
	}
	e.r.add(row{what: "`herd store copy` of a hub (store.Copy: every table, one transaction of the target), " + what, store: label,
		scale: fmt.Sprintf("%s devices (%s)", count(n), fleetLabel(fleetdb.Jobs)), measured: fmt.Sprintf("**%s** (%s devices/s)", seconds(took), count(int(float64(n)/took.Seconds())))})
	return nil
}
