package hub

import (
	"context"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/job"
)

// jobMethods lets method jobs reach devices through the bus and the method
// service.
type jobMethods struct{ h *Hub }

var _ job.Methods = jobMethods{}

// Online reports whether the device is online for methods, here or (in a
// cluster) on another node.
func (m jobMethods) Online(deviceID string) bool {
	return m.h.Methods.Reachable(context.Background(), deviceID)
}

// WaitOnline waits, woken by the bus, until the device is online for
// methods.
func (m jobMethods) WaitOnline(ctx context.Context, deviceID string) error {
	return m.h.Methods.WaitReachable(ctx, deviceID)
}

// Invoke calls the method through the method service.
func (m jobMethods) Invoke(ctx context.Context, deviceID string, req herd.MethodRequest) (*herd.MethodResult, error) {
	return m.h.Methods.Invoke(ctx, deviceID, req)
}
