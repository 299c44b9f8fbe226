package registry

import (
	"context"
	"strings"

	"github.com/herd-iot/herd"
)

// EdgeScopePrefix starts the device scope of every IoT Edge device.
const EdgeScopePrefix = "ms-azure-iot-edge://"

// EdgeScope is the device scope the hub gives an IoT Edge device:
// ms-azure-iot-edge://{deviceId}-{generationId}, as Azure does.
func EdgeScope(deviceID, generationID string) string {
	return EdgeScopePrefix + deviceID + "-" + generationID
}

// parseEdgeScope returns the device id an edge scope names. The id may
// itself contain '-'; the generation id (digits) follows the last one.
func parseEdgeScope(scope string) (string, bool) {
	rest, ok := strings.CutPrefix(scope, EdgeScopePrefix)
	i := strings.LastIndexByte(rest, '-')
	if !ok || i <= 0 || i == len(rest)-1 {
		return "", false
	}
	return rest[:i], true
}

// checkScopes validates the scopes a client gave a device and fills what
// the hub derives (§3.7; Azure's registry end-to-end tests):
//   - an IoT Edge device's deviceScope is the hub's (set on create; what a
//     client sends is ignored); its parentScopes may name one other edge
//     device, its parent in a nested hierarchy;
//   - a leaf device's deviceScope is empty or the scope of an existing
//     edge device, its parent; its parentScopes are [deviceScope].
//
// A scope that names no existing edge device is ArgumentInvalid.
func (s *Service) checkScopes(ctx context.Context, d *herd.Device) error {
	if len(d.ParentScopes) > 1 {
		return herd.Errorf(herd.ErrArgumentInvalid, "parentScopes may name at most one parent, not %d", len(d.ParentScopes))
	}
	if d.Capabilities.IoTEdge {
		d.DeviceScope = "" // the hub's, set from the generation id
		if len(d.ParentScopes) == 1 {
			return s.checkEdgeScope(ctx, "parentScopes", d.ParentScopes[0], d.DeviceID)
		}
		return nil
	}
	if d.DeviceScope == "" && len(d.ParentScopes) == 1 {
		d.DeviceScope = d.ParentScopes[0]
	}
	if d.DeviceScope == "" {
		d.ParentScopes = nil
		return nil
	}
	if len(d.ParentScopes) == 1 && d.ParentScopes[0] != d.DeviceScope {
		return herd.Errorf(herd.ErrArgumentInvalid, "a device that is not an IoT Edge device has its parent's scope as deviceScope and as its only parentScopes entry; %q and %q differ", d.DeviceScope, d.ParentScopes[0])
	}
	if err := s.checkEdgeScope(ctx, "deviceScope", d.DeviceScope, d.DeviceID); err != nil {
		return err
	}
	d.ParentScopes = []string{d.DeviceScope}
	return nil
}

// checkCreateScopes is checkScopes for a device prepareCreate filled in:
// an edge device keeps the scope prepareCreate gave it.
func (s *Service) checkCreateScopes(ctx context.Context, d *herd.Device) error {
	scope := d.DeviceScope
	if err := s.checkScopes(ctx, d); err != nil {
		return err
	}
	if d.Capabilities.IoTEdge {
		d.DeviceScope = scope
	}
	return nil
}

// checkEdgeScope checks that scope is the device scope of an existing IoT
// Edge device other than self.
func (s *Service) checkEdgeScope(ctx context.Context, field, scope, self string) error {
	id, ok := parseEdgeScope(scope)
	if !ok {
		return herd.Errorf(herd.ErrArgumentInvalid, "%s %q is not an IoT Edge device's scope (%s{deviceId}-{generationId})", field, scope, EdgeScopePrefix)
	}
	if id == self {
		return herd.Errorf(herd.ErrArgumentInvalid, "%s %q names the device itself", field, scope)
	}
	edge, err := s.store.Device(ctx, id)
	if herd.IsCode(err, herd.ErrDeviceNotFound) {
		return herd.Errorf(herd.ErrArgumentInvalid, "%s %q: there is no device %q", field, scope, id)
	}
	if err != nil {
		return err
	}
	if !edge.Capabilities.IoTEdge || edge.DeviceScope != scope {
		return herd.Errorf(herd.ErrArgumentInvalid, "%s %q is not the scope of an IoT Edge device (device %q has scope %q)", field, scope, id, edge.DeviceScope)
	}
	return nil
}
