package registry

import (
	"context"
	"strings"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/twin"
)

// MaxBulkDevices is the most devices one bulk request may name.
const MaxBulkDevices = 100

// Bulk creates, updates and deletes many devices in one transaction, with
// an outcome per device (POST /devices). A malformed request as a whole
// (too many devices, one device twice) fails without writing anything; a
// device whose own operation fails is reported in the result and the
// others are applied.
func (s *Service) Bulk(ctx context.Context, devices []herd.ImportDevice) (herd.BulkResult, error) {
	if len(devices) == 0 {
		return herd.BulkResult{}, herd.Errorf(herd.ErrArgumentInvalid, "the bulk request names no devices")
	}
	if len(devices) > MaxBulkDevices {
		return herd.BulkResult{}, herd.Errorf(herd.ErrTooManyDevices, "a bulk request may name at most %d devices, not %d", MaxBulkDevices, len(devices))
	}
	seen := make(map[string]bool, len(devices))
	for _, d := range devices {
		if seen[d.ID] {
			return herd.BulkResult{}, herd.Errorf(herd.ErrDeviceDefinedMultipleTimes, "device %q appears more than once in the request", d.ID)
		}
		seen[d.ID] = true
	}
	result := herd.BulkResult{IsSuccessful: true, Errors: []herd.BulkError{}, Warnings: []herd.BulkWarning{}}
	fail := func(d herd.ImportDevice, err error) {
		result.IsSuccessful = false
		result.Errors = append(result.Errors, herd.BulkError{
			DeviceID: d.ID, ModuleID: d.ModuleID, ErrorCode: string(herd.ErrorCodeOf(err)),
			ErrorStatus: herd.ErrorMessage(err), Operation: d.ImportMode,
		})
	}
	var ops []Op
	var opDevices []herd.ImportDevice
	for _, d := range devices {
		op, err := s.bulkOp(ctx, d)
		if err != nil {
			fail(d, err)
			continue
		}
		ops = append(ops, op)
		opDevices = append(opDevices, d)
	}
	if len(ops) > 0 {
		res, err := s.apply(ctx, ops)
		if err != nil {
			return herd.BulkResult{}, err
		}
		for i, r := range res {
			if r.Err != nil {
				fail(opDevices[i], r.Err)
			}
		}
	}
	return result, nil
}

// bulkOp turns one import entry into a registry operation.
func (s *Service) bulkOp(ctx context.Context, d herd.ImportDevice) (Op, error) {
	if d.ModuleID != "" {
		return Op{}, herd.Errorf(herd.ErrArgumentInvalid, "modules are not supported by this hub")
	}
	if err := ValidateDeviceID(d.ID); err != nil {
		return Op{}, err
	}
	mode := strings.ToLower(d.ImportMode)
	ifMatch := ""
	if strings.HasSuffix(mode, "ifmatchetag") {
		if d.ETag == "" {
			return Op{}, herd.Errorf(herd.ErrArgumentInvalid, "importMode %s needs eTag", d.ImportMode)
		}
		ifMatch = d.ETag
		mode = strings.TrimSuffix(mode, "ifmatchetag")
	}
	switch mode {
	case "delete":
		return Op{Kind: OpDelete, DeviceID: d.ID, Change: func(cur *herd.Device) error {
			return twin.CheckETag(ifMatch, cur.ETag)
		}}, nil
	case "create", "update", "createorupdate":
	default:
		return Op{}, herd.Errorf(herd.ErrArgumentInvalid,
			"importMode %q is not one of create, update, updateIfMatchETag, createOrUpdate, createOrUpdateIfMatchETag, delete, deleteIfMatchETag", d.ImportMode)
	}
	dev := herd.Device{DeviceID: d.ID, Status: d.Status, StatusReason: d.StatusReason,
		DeviceScope: d.DeviceScope, ParentScopes: d.ParentScopes}
	if d.Authentication != nil {
		dev.Authentication = *d.Authentication
	}
	if d.Capabilities != nil {
		dev.Capabilities = *d.Capabilities
	}
	if mode == "update" {
		if err := normalize(&dev, false); err != nil {
			return Op{}, err
		}
		if err := s.checkScopes(ctx, &dev); err != nil {
			return Op{}, err
		}
		return Op{Kind: OpUpdate, DeviceID: d.ID, Change: s.updater(dev, ifMatch)}, nil
	}
	update := dev
	if err := normalize(&update, false); err != nil {
		return Op{}, err
	}
	if err := s.checkScopes(ctx, &update); err != nil {
		return Op{}, err
	}
	if err := s.prepareCreate(&dev); err != nil {
		return Op{}, err
	}
	if err := s.checkCreateScopes(ctx, &dev); err != nil {
		return Op{}, err
	}
	doc, err := s.initialTwin(d)
	if err != nil {
		return Op{}, err
	}
	if mode == "create" {
		return Op{Kind: OpCreate, DeviceID: d.ID, Device: &dev, Twin: doc}, nil
	}
	return Op{Kind: OpUpdate, DeviceID: d.ID, Change: s.updater(update, ifMatch),
		CreateIfMissing: true, Device: &dev, Twin: doc}, nil
}

// initialTwin builds the twin of an imported device from its tags and
// desired properties.
func (s *Service) initialTwin(d herd.ImportDevice) (*twin.Doc, error) {
	doc := twin.NewDoc(s.now())
	v := map[string]any{}
	if d.Tags != nil {
		v["tags"] = d.Tags
	}
	if d.Properties != nil && d.Properties.Desired != nil {
		v["properties"] = map[string]any{"desired": d.Properties.Desired}
	}
	if len(v) == 0 {
		return doc, nil
	}
	p, err := twin.ParseServiceValue(v)
	if err != nil {
		return nil, err
	}
	if _, err := doc.Apply(p, false, s.now()); err != nil {
		return nil, err
	}
	return doc, nil
}
