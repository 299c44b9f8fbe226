package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

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
	served := map[string]time.Duration{} // median of each query, by its text
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
		served[q.Text] = took[len(took)/2]
		target := ""
		if strings.Contains(q.Text, "WHERE") {
			target = "≤ 1 s"
		}
		r.add(row{what: fmt.Sprintf("twin query `%s`: %s", q.Text, q.What), store: b.Name(), scale: fmt.Sprintf("%s twins", count(n)),
			measured: fmt.Sprintf("**%s** (%s)", seconds(took[len(took)/2]), plural(items, "item")), target: target})
	}
	return handWritten(ctx, e, b, spec, served)
}

// handWrittenCounts are the COUNT queries as one would write them by hand
// for each store, the floor the query service is compared with: the same
// answer on the benchmark fleets (whose fw values are all strings), none
// of the service's typing of a missing or other-typed field.
var handWrittenCounts = map[string]map[string]string{
	"SELECT COUNT() FROM devices WHERE tags.building = 43": {
		storeSQLite:   `SELECT count(*) FROM devices WHERE json_extract(tags, '$.building') = 43`,
		storePostgres: `SELECT count(*) FROM devices WHERE tags @> '{"building":43}'`,
	},
	"SELECT COUNT() FROM devices WHERE properties.reported.fw != '1.2'": {
		storeSQLite:   `SELECT count(*) FROM devices WHERE json_extract(reported, '$.fw') <> '1.2'`,
		storePostgres: `SELECT count(*) FROM devices WHERE reported->>'fw' <> '1.2'`,
	},
}

// handWritten times the hand-written COUNT queries on the same database
// (the same driver, a connection of its own; one untimed run, then the
// median of the runs) and records the service's time over theirs.
func handWritten(ctx context.Context, e *bench, b *backend, spec string, served map[string]time.Duration) error {
	var countRows func(ctx context.Context, sql string) (int64, error)
	switch b.kind {
	case storeSQLite:
		q := url.Values{}
		for _, p := range []string{"busy_timeout(10000)", "cache_size(-65536)", "mmap_size(4294967296)", "query_only(ON)"} {
			q.Add("_pragma", p)
		}
		db, err := sql.Open("sqlite", "file:"+strings.TrimPrefix(spec, "sqlite:")+"?"+q.Encode())
		if err != nil {
			return err
		}
		defer db.Close()
		db.SetMaxOpenConns(1)
		countRows = func(ctx context.Context, text string) (n int64, err error) {
			err = db.QueryRowContext(ctx, text).Scan(&n)
			return n, err
		}
	default:
		conn, err := pgx.Connect(ctx, spec)
		if err != nil {
			return err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		countRows = func(ctx context.Context, text string) (n int64, err error) {
			err = conn.QueryRow(ctx, text).Scan(&n)
			return n, err
		}
	}
	for _, q := range fleetdb.Queries {
		text, ok := handWrittenCounts[q.Text][b.kind]
		if !ok {
			continue
		}
		var took []time.Duration
		for i := 0; i <= e.cfg.queryRuns; i++ {
			t0 := time.Now()
			if _, err := countRows(ctx, text); err != nil {
				return fmt.Errorf("%s: %w", text, err)
			}
			if i > 0 {
				took = append(took, time.Since(t0))
			}
		}
		slices.Sort(took)
		raw := took[len(took)/2]
		e.r.ratio(row{what: fmt.Sprintf("`%s`, the query service ÷ hand-written SQL on the same database (`%s`)", q.Text, text),
			store: b.Name(), scale: fmt.Sprintf("%s twins", count(e.cfg.queryTwins)),
			measured: fmt.Sprintf("%.2f (%s ÷ %s)", served[q.Text].Seconds()/raw.Seconds(), seconds(served[q.Text]), seconds(raw)),
			target:   "≤ 1.1"})
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
