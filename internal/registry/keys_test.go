package registry_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/store/sqlite"
)

// slowReads lets a test hold a key lookup's read after it has read the
// rows.
type slowReads struct {
	*sqlite.DB
	read    chan struct{}
	release chan struct{}
}

func (s *slowReads) DevicesByID(ctx context.Context, ids []string) (map[string]*herd.Device, error) {
	d, err := s.DB.DevicesByID(ctx, ids)
	if s.read != nil {
		close(s.read)
		<-s.release
	}
	return d, err
}

// TestKeysNotStaleAfterRace: a Keys lookup that read the old keys while an
// update committed must not put them back in the cache.
func TestKeysNotStaleAfterRace(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "herd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := &slowReads{DB: db}
	s := registry.NewService(st, "node-1", time.Now, nil, slog.Default())
	old, err := s.Create(ctx, herd.Device{DeviceID: "d"})
	if err != nil {
		t.Fatal(err)
	}
	st.read, st.release = make(chan struct{}), make(chan struct{})
	got := make(chan string, 1)
	go func() {
		k, err := s.Keys(ctx, "d")
		if err != nil {
			t.Error(err)
		}
		got <- k.PrimaryKey
	}()
	<-st.read // the lookup has read the old keys
	st.read = nil
	newKey := "bmV3a2V5LTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg="
	upd := herd.Device{DeviceID: "d", Authentication: herd.Authentication{SymmetricKey: herd.SymmetricKey{PrimaryKey: newKey}}}
	if _, err := s.Update(ctx, upd, "*"); err != nil {
		t.Fatal(err)
	}
	close(st.release)
	if k := <-got; k != old.Authentication.SymmetricKey.PrimaryKey {
		t.Fatalf("the racing lookup returned %q", k)
	}
	k, err := s.Keys(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	if k.PrimaryKey != newKey {
		t.Errorf("cached primary key %q after the update, want the new key", k.PrimaryKey)
	}
}

// TestKeyCacheBounded: the key cache holds at most its bound, and a
// device whose keys were dropped from it still authenticates (its keys
// are read again).
func TestKeyCacheBounded(t *testing.T) {
	defer registry.SetMaxCachedKeys(16)()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "herd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := registry.NewService(db, "node-1", time.Now, nil, slog.Default())
	keys := map[string]string{}
	for i := range 100 {
		id := fmt.Sprintf("d%03d", i)
		d, err := s.Create(ctx, herd.Device{DeviceID: id})
		if err != nil {
			t.Fatal(err)
		}
		keys[id] = d.Authentication.SymmetricKey.PrimaryKey
	}
	for range 2 {
		for id, want := range keys {
			k, err := s.Keys(ctx, id)
			if err != nil || k.PrimaryKey != want {
				t.Fatalf("Keys(%s) = %q, %v; want %q", id, k.PrimaryKey, err, want)
			}
			if n := registry.CachedKeys(s); n > 16 {
				t.Fatalf("%d keys cached, bound 16", n)
			}
		}
	}
}
