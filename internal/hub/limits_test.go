package hub_test

import (
	"testing"

	"github.com/herd-iot/herd/internal/hub"
)

func TestMaxConnectionsFor(t *testing.T) {
	for limit, want := range map[int]int{
		0:       0, // unknown: no bound
		100:     25,
		256:     64,
		1024:    824,
		4096:    3687,
		20000:   18000,
		1048576: 1046576,
	} {
		if got := hub.MaxConnectionsFor(limit); got != want {
			t.Errorf("MaxConnectionsFor(%d) = %d, want %d", limit, got, want)
		}
	}
	if d := hub.Default().MaxConnections; d < 0 {
		t.Errorf("the default bound %d is negative", d)
	}
}
