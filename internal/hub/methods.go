package hub

import (
	"context"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/bus"
	"github.com/herd-iot/herd/internal/job"
)

// jobMethods lets method jobs reach devices through the bus and the method
// service.
type jobMethods struct{ h *Hub }

var _ job.Methods = jobMethods{}

// Online reports whether the device is connected and subscribed to methods.
func (m jobMethods) Online(deviceID string) bool {
	c := m.h.Bus.Lookup(deviceID)
	return c != nil && c.Features().Has(bus.Methods)
}

// WaitOnline waits, woken by the bus, until the device is online for
// methods.
func (m jobMethods) WaitOnline(ctx context.Context, deviceID string) error {
	_, err := m.h.Bus.WaitMethods(ctx, deviceID)
	return err
}

// Invoke calls the method through the method service.
func (m jobMethods) Invoke(ctx context.Context, deviceID string, req herd.MethodRequest) (*herd.MethodResult, error) {
	return m.h.Methods.Invoke(ctx, deviceID, req)
}
