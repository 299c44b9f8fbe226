package postgres

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// asPgError finds a PostgreSQL error in err's chain.
func asPgError(err error, target **pgconn.PgError) bool { return errors.As(err, target) }
