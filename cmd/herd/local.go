package main

import (
	"context"
	"fmt"

	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/store"
)

// openLocal opens the store of a local hub, for the commands that read it
// directly (connection-string, token, the CLI's defaults, sim): the SQLite
// database in the data folder, or the store --store names. A data folder
// without a database is an error, not a new hub.
func openLocal(ctx context.Context, spec, dir string) (hub.Store, error) {
	kind, where, err := store.Parse(spec, dir)
	if err != nil {
		return nil, err
	}
	if kind == store.SQLite && !fileExists(where) {
		if spec == "" {
			return nil, fmt.Errorf("--data %s: no hub database there (start one with `herd serve --data %s`)", dir, dir)
		}
		return nil, fmt.Errorf("--store %s: no such database (start a hub with `herd serve --store %s`)", spec, spec)
	}
	return store.Open(ctx, spec, dir)
}
