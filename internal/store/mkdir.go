package store

import (
	"context"
	"fmt"
	"os"

	"github.com/herd-iot/herd/internal/hub"
)

func mkdir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create the folder of the database: %w", err)
	}
	return nil
}

func openPostgres(ctx context.Context, url string) (hub.Store, error) {
	return nil, fmt.Errorf("--store %s: the PostgreSQL store is not built yet", Redact(url))
}
