package store

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/internal/store/rows"
)

// copyBatch is how many rows travel from the source to the target at a
// time.
const copyBatch = 2000

// Counts is how many rows each table holds, by table name.
type Counts map[string]int64

// Total is the sum of c.
func (c Counts) Total() int64 {
	var n int64
	for _, v := range c {
		n += v
	}
	return n
}

// CountRows counts the rows of every table of rows.Tables in s.
func CountRows(ctx context.Context, s hub.Store) (Counts, error) {
	src, ok := s.(rows.Source)
	if !ok {
		return nil, fmt.Errorf("this store cannot export its rows")
	}
	c := Counts{}
	for _, t := range rows.Tables {
		n, err := src.CountRows(ctx, t)
		if err != nil {
			return nil, err
		}
		c[t.Name] = n
	}
	return c, nil
}

// Copy copies a hub's data — every table of rows.Tables: registry and
// twins, sessions, policies, settings, jobs with their device records and
// CA certificates — from one store into another, in one transaction of the
// target: a copy that fails leaves the target as it was. A target that
// already holds a hub's data is refused with rows.ErrNotEmpty unless
// replace is set, which empties it first. progress, if not nil, is called
// with the number of rows each batch added, from one goroutine. Copy
// returns how many rows of each table it copied.
//
// The source is read table by table; a hub that keeps running on it while
// the copy runs may change it in between, so stop the hub first.
func Copy(ctx context.Context, from, to hub.Store, replace bool, progress func(n int) error) (Counts, error) {
	src, ok := from.(rows.Source)
	if !ok {
		return nil, errors.New("the source store cannot export its rows")
	}
	dst, ok := to.(rows.Sink)
	if !ok {
		return nil, errors.New("the target store cannot load rows")
	}
	copied := Counts{}
	err := dst.LoadRows(ctx, replace, func(put func(*rows.Table, [][]any) error) error {
		for _, t := range rows.Tables {
			n, err := copyTable(ctx, src, t, put, progress)
			if err != nil {
				return err
			}
			copied[t.Name] = n
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return copied, nil
}

// copyTable streams t from src to put, reading the next batch while the
// last is written.
func copyTable(ctx context.Context, src rows.Source, t *rows.Table, put func(*rows.Table, [][]any) error, progress func(int) error) (int64, error) {
	g, ctx := errgroup.WithContext(ctx)
	batches := make(chan [][]any, 2)
	g.Go(func() error {
		defer close(batches)
		batch := make([][]any, 0, copyBatch)
		send := func() error {
			select {
			case batches <- batch:
			case <-ctx.Done():
				return ctx.Err()
			}
			batch = make([][]any, 0, copyBatch)
			return nil
		}
		err := src.ExportRows(ctx, t, func(row []any) error {
			batch = append(batch, append([]any(nil), row...))
			if len(batch) == copyBatch {
				return send()
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(batch) > 0 {
			return send()
		}
		return nil
	})
	var n int64
	g.Go(func() error {
		for b := range batches {
			if err := put(t, b); err != nil {
				return err
			}
			n += int64(len(b))
			if progress != nil {
				if err := progress(len(b)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	err := g.Wait()
	return n, err
}
