package store

import (
	"context"
	"fmt"
	"os"

	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/store/postgres"
)

func mkdir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create the folder of the database: %w", err)
	}
	return nil
}

func openPostgres(ctx context.Context, url string) (hub.Store, error) {
	db, err := postgres.Open(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("--store %s: %w", Redact(url), err)
	}
	return db, nil
}
