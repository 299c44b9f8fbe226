package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/herd-iot/herd/internal/fleetdb"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/store"
)

// benchQueries times the query benchmarks' queries (fleetdb.Queries) over
// a fleet of the query shape through the query service, as POST
// /devices/query runs them, on each store: one untimed run, then the
// median of the runs.
func benchQueries(ctx context.Context, e *bench) error {
	for _, b := range e.backends {
		if err := queriesOn(ctx, e, b); err != nil {
			return fmt.Errorf("%s: %w", b.Name(), err)
		}
	}
	return nil
}

func queriesOn(ctx context.Context, e *bench, b *backend) error {
	cfg, r := e.cfg, e.r
	n := cfg.queryTwins
	var spec string
	switch b.kind {
	case storeSQLite:
		path, err := sqliteFleet(ctx, e, fleetdb.Query, n)
		if err != nil {
			return err
		}
		spec = "sqlite:" + path
	default:
		name, err := b.pg.fleet(ctx, e, fleetdb.Query, n)
		if err != nil {
			return err
		}
		spec = b.pg.url(name) // read only: the template itself
	}
	db, err := store.Open(ctx, spec, cfg.dir)
	if err != nil {
		return err
	}
	defer db.Close()
	svc := query.NewService(db)
	for _, q := range fleetdb.Queries {
		var took []time.Duration
		items := 0
		for i := 0; i <= cfg.queryRuns; i++ {
			t0 := time.Now()
			items = 0
			token := ""
			for {
				res, err := svc.Run(ctx, q.Text, 100, token)
				if err != nil {
					return fmt.Errorf("%s: %w", q.Text, err)
				}
				items += len(res.Items)
				token = res.Continuation
				if !q.All || token == "" {
					break
				}
			}
			if i > 0 {
				took = append(took, time.Since(t0))
			}
		}
		slices.Sort(took)
		target := ""
		if strings.Contains(q.Text, "WHERE") {
			target = "≤ 1 s"
		}
		r.add(row{what: fmt.Sprintf("twin query `%s`: %s", q.Text, q.What), store: b.Name(), scale: fmt.Sprintf("%s twins", count(n)),
			measured: fmt.Sprintf("**%s** (%s)", seconds(took[len(took)/2]), plural(items, "item")), target: target})
	}
	return nil
}

// plural prints n with its noun.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return count(n) + " " + noun + "s"
}
