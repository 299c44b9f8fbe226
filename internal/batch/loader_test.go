package batch

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fetcher records the batches it was asked for; a batch blocks until
// release is closed when block is set.
type fetcher struct {
	mu      sync.Mutex
	batches [][]string
	block   chan struct{}
	err     error
}

func (f *fetcher) fetch(ctx context.Context, keys []string) (map[string]int, error) {
	f.mu.Lock()
	f.batches = append(f.batches, slices.Clone(keys))
	block := f.block
	f.mu.Unlock()
	if block != nil {
		<-block
	}
	if f.err != nil {
		return nil, f.err
	}
	out := map[string]int{}
	for _, k := range keys {
		if k != "missing" {
			out[k] = len(k)
		}
	}
	return out, nil
}

func (f *fetcher) seen() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.batches)
}

// waitQueued polls until n keys wait behind the fetch in flight.
func waitQueued(t *testing.T, l *Loader[string, int], n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		l.mu.Lock()
		got := 0
		for _, r := range l.waiting {
			got += len(r.keys)
		}
		l.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys waiting, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLoadOne(t *testing.T) {
	f := &fetcher{}
	l := New(f.fetch, 100, time.Second)
	v, ok, err := l.Load(context.Background(), "abc")
	if v != 3 || !ok || err != nil {
		t.Fatalf("Load(abc) = %v, %v, %v; want 3, true, nil", v, ok, err)
	}
	if _, ok, err := l.Load(context.Background(), "missing"); ok || err != nil {
		t.Fatalf("Load(missing) = %v, %v; want false, nil", ok, err)
	}
	if got := f.seen(); !slices.EqualFunc(got, [][]string{{"abc"}, {"missing"}}, slices.Equal) {
		t.Errorf("batches %v: an idle loader reads each key at once, alone", got)
	}
}

func TestLoadsInFlightGoTogether(t *testing.T) {
	f := &fetcher{block: make(chan struct{})}
	l := New(f.fetch, 4, time.Second)
	first := make(chan error, 1)
	go func() {
		_, _, err := l.Load(context.Background(), "first")
		first <- err
	}()
	// The first fetch is in flight (and blocked): these queue behind it,
	// at most 4 to a fetch.
	for deadline := time.Now().Add(10 * time.Second); len(f.seen()) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first fetch did not start")
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := fmt.Sprintf("key-%d", i)
			v, ok, err := l.Load(context.Background(), k)
			if err == nil && (!ok || v != len(k)) {
				err = fmt.Errorf("Load(%s) = %v, %v", k, v, ok)
			}
			errs <- err
		}()
	}
	waitQueued(t, l, 6)
	close(f.block)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	got := f.seen()
	if len(got) != 3 || len(got[0]) != 1 || len(got[1]) != 4 || len(got[2]) != 2 {
		t.Errorf("batches %v: want the first key alone, then the 6 waiting ones in fetches of at most 4", got)
	}
}

func TestFetchErrorFailsItsBatch(t *testing.T) {
	boom := errors.New("store down")
	f := &fetcher{err: boom}
	l := New(f.fetch, 10, time.Second)
	if _, _, err := l.Load(context.Background(), "a"); !errors.Is(err, boom) {
		t.Fatalf("err %v, want %v", err, boom)
	}
	f.mu.Lock()
	f.err = nil
	f.mu.Unlock()
	if v, ok, err := l.Load(context.Background(), "a"); v != 1 || !ok || err != nil {
		t.Fatalf("after the store recovers: %v, %v, %v", v, ok, err)
	}
}

func TestCallerGivesUp(t *testing.T) {
	f := &fetcher{block: make(chan struct{})}
	l := New(f.fetch, 10, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := l.Load(ctx, "a")
		done <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); len(f.seen()) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the fetch did not start")
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	close(f.block)
	// The loader is free again once the abandoned fetch ends.
	if v, ok, err := l.Load(context.Background(), "bb"); v != 2 || !ok || err != nil {
		t.Fatalf("next load: %v, %v, %v", v, ok, err)
	}
}

// goroutine is the id of the goroutine it runs on, from its stack's
// first line ("goroutine 7 [running]:").
func goroutine() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	return id
}

func TestOneGoroutineLingers(t *testing.T) {
	var mu sync.Mutex
	var ran []string
	fetch := func(ctx context.Context, keys []string) (map[string]int, error) {
		mu.Lock()
		ran = append(ran, goroutine())
		mu.Unlock()
		return map[string]int{keys[0]: 1}, nil
	}
	l := New(fetch, 100, time.Second)
	l.linger = 50 * time.Millisecond
	for _, k := range []string{"a", "b", "c"} {
		if _, ok, err := l.Load(context.Background(), k); !ok || err != nil {
			t.Fatalf("Load(%s) = %v, %v", k, ok, err)
		}
	}
	mu.Lock()
	if ran[0] != ran[1] || ran[1] != ran[2] {
		t.Errorf("fetches ran on goroutines %v: one goroutine should do a burst's fetches", ran)
	}
	mu.Unlock()
	// Once idle for linger, the goroutine ends; the next Load starts
	// another.
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		ended := !l.parked && !l.busy
		l.mu.Unlock()
		if ended {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the loader's goroutine did not end after its linger")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, ok, err := l.Load(context.Background(), "d"); !ok || err != nil {
		t.Fatalf("Load(d) after the linger = %v, %v", ok, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if ran[3] == ran[0] {
		t.Errorf("fetch after the linger ran on goroutine %s again; want a new one", ran[3])
	}
}
