package sqlite

import (
	"context"
	"database/sql"
	"errors"
)

// stmts are the statements of the single-device paths that run most often,
// prepared once: device reads (key lookups the registry's cache missed,
// one or a connect burst's at once), session reads, a twin read (GET /twins/{id}, a device's twin GET) and a twin's
// read-modify-write (PATCH /twins/{id}, reported properties). Prepared per
// call, as database/sql does for plain queries, parsing the SQL was more
// than half of a twin read.
type stmts struct {
	device, devicesByID, twin *sql.Stmt // on the read pool
	devicesAndSessions        *sql.Stmt // on the read pool
	session, sessions         *sql.Stmt // on the read pool
	twinForUpdate, writeDoc   *sql.Stmt // on the writer
}

func prepareStmts(ctx context.Context, write, read *sql.DB) (*stmts, error) {
	s := &stmts{}
	for _, p := range []struct {
		dst  **sql.Stmt
		db   *sql.DB
		text string
	}{
		{&s.device, read, `SELECT ` + identityColumns + ` FROM devices WHERE device_id = ?`},
		{&s.devicesByID, read, `SELECT ` + identityColumns + ` FROM devices WHERE device_id IN (SELECT value FROM json_each(?))`},
		{&s.devicesAndSessions, read, `SELECT ` + identityColumns + `, s.subscriptions FROM devices
			LEFT JOIN device_sessions s USING (device_id) WHERE device_id IN (SELECT value FROM json_each(?))`},
		{&s.session, read, `SELECT subscriptions FROM device_sessions WHERE device_id = ?`},
		{&s.sessions, read, `SELECT device_id, subscriptions FROM device_sessions WHERE device_id IN (SELECT value FROM json_each(?))`},
		{&s.twin, read, `SELECT ` + identityColumns + `, ` + twinSelect + ` FROM devices WHERE device_id = ?`},
		{&s.twinForUpdate, write, `SELECT ` + identityColumns + `, ` + twinSelect + ` FROM devices WHERE device_id = ?`},
		{&s.writeDoc, write, `UPDATE devices SET twin_etag = ?, twin_version = ?, tags = jsonb(?), desired = jsonb(?),
			desired_version = ?, desired_metadata = jsonb(?), reported = jsonb(?), reported_version = ?,
			reported_metadata = jsonb(?) WHERE device_id = ?`},
	} {
		st, err := p.db.PrepareContext(ctx, p.text)
		if err != nil {
			s.close()
			return nil, err
		}
		*p.dst = st
	}
	return s, nil
}

func (s *stmts) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{s.device, s.devicesByID, s.twin, s.session, s.sessions, s.twinForUpdate, s.writeDoc} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}
