package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/store"
	"github.com/herd-iot/herd/internal/store/pgtest"
	"github.com/herd-iot/herd/internal/store/rows"
	"github.com/herd-iot/herd/internal/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func open(t *testing.T, spec string) storetest.Store {
	t.Helper()
	s, err := store.Open(context.Background(), spec, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(storetest.Store)
}

func sqliteSpec(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "herd.db") }

// sameDump fails unless two stores hold the same rows.
func sameDump(t *testing.T, what string, want, got map[string][]string) {
	t.Helper()
	for _, tb := range rows.Tables {
		w, g := want[tb.Name], got[tb.Name]
		if len(w) != len(g) {
			t.Errorf("%s: %s has %d rows, want %d", what, tb.Name, len(g), len(w))
			continue
		}
		for i := range w {
			if w[i] != g[i] {
				t.Errorf("%s: %s row %d:\n got  %s\n want %s", what, tb.Name, i, g[i], w[i])
				break
			}
		}
	}
}

// TestCopy: a hub copied from SQLite to PostgreSQL and back holds the same
// rows in every table, and answers queries the same; copying into a store
// that holds a hub is refused unless replace is set, and then leaves
// exactly the source's rows.
func TestCopy(t *testing.T) {
	ctx := context.Background()
	src := open(t, sqliteSpec(t))
	storetest.Populate(t, src, 300)
	want := storetest.Dump(t, src)
	if len(want["device_jobs"]) == 0 || len(want["modules"]) == 0 || len(want["module_sessions"]) == 0 || len(want["ca_certificates"]) != 2 || len(want["device_sessions"]) == 0 {
		t.Fatalf("the fixture misses tables: %v", want)
	}

	pg := open(t, pgtest.URL(t))
	var progressed int64
	got, err := store.Copy(ctx, src, pg, false, func(n int) error { progressed += int64(n); return nil })
	if err != nil {
		t.Fatal(err)
	}
	counts, err := store.CountRows(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, counts) || progressed != counts.Total() {
		t.Errorf("copied %v (progress %d), the source holds %v", got, progressed, counts)
	}
	sameDump(t, "SQLite → PostgreSQL", want, storetest.Dump(t, pg))

	back := open(t, sqliteSpec(t))
	if _, err := store.Copy(ctx, pg, back, false, nil); err != nil {
		t.Fatal(err)
	}
	sameDump(t, "PostgreSQL → SQLite", want, storetest.Dump(t, back))

	var counted []string
	for _, s := range []storetest.Store{src, pg, back} {
		res, err := query.NewService(s).Run(ctx, "SELECT COUNT() AS n FROM devices WHERE tags.wave.n = 1 AND properties.desired.fw = '2.0'", 10, "")
		if err != nil {
			t.Fatal(err)
		}
		counted = append(counted, fmt.Sprint(res.Items))
	}
	if counted[0] != counted[1] || counted[0] != counted[2] || counted[0] == "[map[n:0]]" {
		t.Errorf("the twin job's devices, counted on SQLite, PostgreSQL and the copy back: %v", counted)
	}

	// A second copy into the same target is refused and changes nothing.
	if _, err := store.Copy(ctx, src, pg, false, nil); !errors.Is(err, rows.ErrNotEmpty) {
		t.Errorf("copy into a hub: %v, want ErrNotEmpty", err)
	}
	sameDump(t, "after a refused copy", want, storetest.Dump(t, pg))

	// With replace, a target holding another hub ends up holding exactly
	// the source's rows.
	other := open(t, pgtest.URL(t))
	storetest.Populate(t, other, 10)
	if _, err := store.Copy(ctx, other, back, true, nil); err != nil {
		t.Fatal(err)
	}
	sameDump(t, "replace", storetest.Dump(t, other), storetest.Dump(t, back))
}

// TestCopyFailureWritesNothing: a copy that fails half-way (here its
// progress callback, as when it is interrupted) leaves the target as it
// was, on both stores, with replace or without.
func TestCopyFailureWritesNothing(t *testing.T) {
	ctx := context.Background()
	src := open(t, sqliteSpec(t))
	storetest.Populate(t, src, 5000) // more than one batch of devices
	stop := errors.New("interrupted")
	for _, spec := range []string{sqliteSpec(t), pgtest.URL(t)} {
		dst := open(t, spec)
		small := open(t, sqliteSpec(t))
		storetest.Populate(t, small, 3)
		if _, err := store.Copy(ctx, small, dst, false, nil); err != nil {
			t.Fatal(err)
		}
		before := storetest.Dump(t, dst)
		for _, replace := range []bool{false, true} {
			calls := 0
			_, err := store.Copy(ctx, src, dst, replace, func(int) error {
				calls++
				if calls == 3 {
					return stop
				}
				return nil
			})
			if replace && !errors.Is(err, stop) {
				t.Errorf("%s: interrupted copy: %v", store.Redact(spec), err)
			}
			if !replace && !errors.Is(err, rows.ErrNotEmpty) {
				t.Errorf("%s: copy into a hub: %v", store.Redact(spec), err)
			}
			sameDump(t, store.Redact(spec), before, storetest.Dump(t, dst))
		}
	}
}
