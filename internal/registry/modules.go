package registry

import (
	"context"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/twin"
)

// ModuleStore keeps module identities (and their twins, created and
// deleted with them). A module belongs to a device: the device's deletion
// deletes its modules. Errors: DeviceNotFound when the device does not
// exist, ModuleNotFound when the module does not, ModuleAlreadyExists.
type ModuleStore interface {
	// CreateModule stores a new module of an existing device with its
	// first twin and returns it as written (etag 1).
	CreateModule(ctx context.Context, m *herd.Module, doc *twin.Doc) (*herd.Module, error)
	// UpdateModule lets change edit the current module (an error aborts
	// and is returned) and writes it with its etag moved on, in one
	// transaction.
	UpdateModule(ctx context.Context, deviceID, moduleID string, change func(cur *herd.Module) error) (*herd.Module, error)
	// Module returns one module.
	Module(ctx context.Context, deviceID, moduleID string) (*herd.Module, error)
	// Modules returns a device's modules in id order.
	Modules(ctx context.Context, deviceID string) ([]*herd.Module, error)
	// DeleteModule deletes a module and its twin if check (given the
	// current module) passes, in one transaction.
	DeleteModule(ctx context.Context, deviceID, moduleID string, check func(cur *herd.Module) error) error
}

// MaxModulesPerDevice bounds a device's modules (Azure documents 50 for
// IoT Edge devices, and no limit otherwise; Herd applies one to all).
const MaxModulesPerDevice = 50

// ValidateModuleID checks a module id: the rules of device ids (1 to 128
// characters of the same set).
func ValidateModuleID(id string) error {
	if err := ValidateDeviceID(id); err != nil {
		e := err.(*herd.Error)
		return herd.Errorf(e.Code, "module id: %s", e.Message)
	}
	return nil
}

func moduleNotFound(deviceID, moduleID string) error {
	return herd.Errorf(herd.ErrModuleNotFound, "device %q has no module %q", deviceID, moduleID)
}

// checkIDs refuses ids that cannot name a device or a module: a device id
// that cannot exist is DeviceNotFound, as for devices.
func checkIDs(deviceID, moduleID string) error {
	if ValidateDeviceID(deviceID) != nil {
		return notFound(deviceID)
	}
	if ValidateModuleID(moduleID) != nil {
		return moduleNotFound(deviceID, moduleID)
	}
	return nil
}

func notFound(id string) error {
	return herd.Errorf(herd.ErrDeviceNotFound, "device %q does not exist", id)
}

// normalizeModule validates a module as a client sent it: ids, managedBy
// (at most 128 characters) and authentication (as a device's).
func normalizeModule(m *herd.Module, generate bool) error {
	if err := ValidateDeviceID(m.DeviceID); err != nil {
		return err
	}
	if err := ValidateModuleID(m.ModuleID); err != nil {
		return err
	}
	if len(m.ManagedBy) > 128 {
		return herd.Errorf(herd.ErrArgumentInvalid, "managedBy is longer than 128 characters")
	}
	return normalizeAuth(&m.Authentication, generate)
}

// CreateModule registers a new module of an existing device, with an empty
// twin. Empty keys are generated.
func (s *Service) CreateModule(ctx context.Context, m herd.Module) (*herd.Module, error) {
	if ValidateDeviceID(m.DeviceID) != nil {
		return nil, notFound(m.DeviceID)
	}
	if err := normalizeModule(&m, true); err != nil {
		return nil, err
	}
	m.GenerationID = newGenerationID()
	m.ConnectionState = herd.Disconnected
	m.ConnectionStateUpdatedTime = herd.Time{}
	m.LastActivityTime = herd.Time{}
	m.CloudToDeviceMessageCount = 0
	return s.store.CreateModule(ctx, &m, twin.NewDoc(s.now()))
}

// UpdateModule replaces a module's writable fields (authentication,
// managedBy); ifMatch is "*" or the current etag. Empty sas keys keep the
// current keys.
func (s *Service) UpdateModule(ctx context.Context, m herd.Module, ifMatch string) (*herd.Module, error) {
	if err := checkIDs(m.DeviceID, m.ModuleID); err != nil {
		return nil, err
	}
	if err := normalizeModule(&m, false); err != nil {
		return nil, err
	}
	out, err := s.store.UpdateModule(ctx, m.DeviceID, m.ModuleID, func(cur *herd.Module) error {
		if err := twin.CheckETag(ifMatch, cur.ETag); err != nil {
			return err
		}
		a := m.Authentication
		if a.Type == herd.AuthSAS {
			old := cur.Authentication.SymmetricKey
			if a.SymmetricKey.PrimaryKey == "" {
				a.SymmetricKey.PrimaryKey = keyOrNew(old.PrimaryKey)
			}
			if a.SymmetricKey.SecondaryKey == "" {
				a.SymmetricKey.SecondaryKey = keyOrNew(old.SecondaryKey)
			}
		}
		cur.Authentication = a
		cur.ManagedBy = m.ManagedBy
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.moduleChanged(m.DeviceID, m.ModuleID)
	return out, nil
}

// GetModule returns one module of a device.
func (s *Service) GetModule(ctx context.Context, deviceID, moduleID string) (*herd.Module, error) {
	if err := checkIDs(deviceID, moduleID); err != nil {
		return nil, err
	}
	return s.store.Module(ctx, deviceID, moduleID)
}

// ListModules returns a device's modules in id order.
func (s *Service) ListModules(ctx context.Context, deviceID string) ([]*herd.Module, error) {
	if ValidateDeviceID(deviceID) != nil {
		return nil, notFound(deviceID)
	}
	return s.store.Modules(ctx, deviceID)
}

// DeleteModule removes a module and its twin; ifMatch is "", "*" or the
// etag.
func (s *Service) DeleteModule(ctx context.Context, deviceID, moduleID, ifMatch string) error {
	if err := checkIDs(deviceID, moduleID); err != nil {
		return err
	}
	if err := s.store.DeleteModule(ctx, deviceID, moduleID, func(cur *herd.Module) error {
		return twin.CheckETag(ifMatch, cur.ETag)
	}); err != nil {
		return err
	}
	s.moduleChanged(deviceID, moduleID)
	return nil
}

// moduleChanged forgets a module's cached keys and tells the gateway (the
// change function, with the module's identity) to check its connection.
func (s *Service) moduleChanged(deviceID, moduleID string) {
	id := herd.ModuleIdentity(deviceID, moduleID)
	s.forget(id)
	s.onChange(id)
}
