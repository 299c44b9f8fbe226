package twin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

// Store keeps twins. UpdateTwin reads the identity and document of one
// device, lets fn change the document, and writes it back in one
// transaction; if fn returns an error nothing is written.
type Store interface {
	Twin(ctx context.Context, deviceID string) (*herd.Device, *Doc, error)
	UpdateTwin(ctx context.Context, deviceID string, fn func(*herd.Device, *Doc) error) (*herd.Device, *Doc, error)
	// ModuleTwin and UpdateModuleTwin are Twin and UpdateTwin for a
	// module's twin (DeviceNotFound, ModuleNotFound).
	ModuleTwin(ctx context.Context, deviceID, moduleID string) (*herd.Module, *Doc, error)
	UpdateModuleTwin(ctx context.Context, deviceID, moduleID string, fn func(*herd.Module, *Doc) error) (*herd.Module, *Doc, error)
}

// NotifyFunc tells a device that its desired properties changed. body is
// the notification JSON (the change plus "$version"). It is called after the
// change is committed and must not block.
type NotifyFunc func(deviceID string, where Where, version int64, body []byte)

// Where is where a writer's transaction saw a device's connection when
// its change committed. The zero Where says nothing: the device may be
// connected anywhere.
type Where struct {
	// Known says that Node was read with the change.
	Known bool
	// Node is the node of a cluster that held the device's connection,
	// "" when the device was not connected.
	Node string
}

// WhereNode is the Where of a store's answer: the node that holds the
// device's connection, nil when the device is not connected. A device
// connected with no node recorded (a hub alone, or a connection from
// before cluster mode) may be anywhere.
func WhereNode(node *string) Where {
	switch {
	case node == nil:
		return Where{Known: true}
	case *node == "":
		return Where{}
	}
	return Where{Known: true, Node: *node}
}

// Service reads and writes twins.
type Service struct {
	store   Store
	now     func() time.Time
	notify  NotifyFunc
	changed func(deviceID string) // after a service-side write (nil: none)
	written func(deviceID string) // after every write (nil: none)
}

// OnChange makes the service call fn after each service-side write (tags
// or desired properties, Update) commits; fn must not block. Automatic
// device configurations (internal/config) follow devices with it.
func (s *Service) OnChange(fn func(deviceID string)) { s.changed = fn }

// OnWrite makes the service call fn after every twin write it makes
// commits — Update, UpdateIf and a device's PatchReported; fn must not
// block. Continuous jobs (internal/job) follow devices with it, as their
// conditions may read any part of a twin.
func (s *Service) OnWrite(fn func(deviceID string)) { s.written = fn }

func (s *Service) wrote(deviceID string) {
	if s.written != nil {
		s.written(deviceID)
	}
}

// NewService returns a twin service. notify may be nil.
func NewService(store Store, now func() time.Time, notify NotifyFunc) *Service {
	if notify == nil {
		notify = func(string, Where, int64, []byte) {}
	}
	return &Service{store: store, now: now, notify: notify}
}

// Get returns the service view of a device's twin.
func (s *Service) Get(ctx context.Context, deviceID string) (*herd.Twin, error) {
	dev, doc, err := s.store.Twin(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	return View(dev, doc), nil
}

// DeviceView returns the twin as a device reads it over MQTT; deviceID
// may name a module (herd.ModuleIdentity).
func (s *Service) DeviceView(ctx context.Context, deviceID string) ([]byte, error) {
	var doc *Doc
	var err error
	if dev, mod := herd.SplitIdentity(deviceID); mod != "" {
		_, doc, err = s.store.ModuleTwin(ctx, dev, mod)
	} else {
		_, doc, err = s.store.Twin(ctx, deviceID)
	}
	if err != nil {
		return nil, err
	}
	return json.Marshal(DeviceView(doc))
}

// Update applies a service write (PATCH, or PUT with replace) to a twin. A
// replace sets tags and desired properties to exactly what p holds.
// ifMatch is the request's If-Match value: "" or "*" write
// unconditionally, anything else must equal the current etag (quotes and a
// W/ prefix are stripped). Connected devices are told about desired
// changes after the write commits.
func (s *Service) Update(ctx context.Context, deviceID string, p Patch, replace bool, ifMatch string) (*herd.Twin, error) {
	if p.Reported.Set {
		return nil, invalid("reported properties can only be written by the device")
	}
	if replace {
		// A replace writes the whole twin: a missing section becomes empty.
		if !p.Tags.Set {
			p.Tags = Change{Set: true}
		}
		if !p.Desired.Set {
			p.Desired = Change{Set: true}
		}
	}
	var up Update
	dev, doc, err := s.store.UpdateTwin(ctx, deviceID, func(_ *herd.Device, d *Doc) error {
		if err := CheckETag(ifMatch, ETagString(d.ETag)); err != nil {
			return err
		}
		var err error
		up, err = d.Apply(p, replace, s.now())
		return err
	})
	if err != nil {
		return nil, err
	}
	s.publish(deviceID, up)
	if s.changed != nil {
		s.changed(deviceID)
	}
	s.wrote(deviceID)
	return View(dev, doc), nil
}

// errUnchanged ends an UpdateIf that writes nothing.
var errUnchanged = errors.New("twin unchanged")

// UpdateIf reads a device's twin and, in the same transaction, applies the
// patch decide returns for it (service side, as Update without a
// replace) when decide says to; it reports whether it wrote. Connected
// devices are told about desired changes after the write commits.
func (s *Service) UpdateIf(ctx context.Context, deviceID string, decide func(*herd.Twin) (Patch, bool, error)) (bool, error) {
	var up Update
	_, _, err := s.store.UpdateTwin(ctx, deviceID, func(dev *herd.Device, d *Doc) error {
		p, ok, err := decide(View(dev, d))
		if err != nil {
			return err
		}
		if !ok {
			return errUnchanged
		}
		up, err = d.Apply(p, false, s.now())
		return err
	})
	if errors.Is(err, errUnchanged) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	s.publish(deviceID, up)
	s.wrote(deviceID)
	return true, nil
}

// PatchReported applies a device's reported-properties patch and returns
// the new reported $version; deviceID may name a module
// (herd.ModuleIdentity), whose twin it then writes.
func (s *Service) PatchReported(ctx context.Context, deviceID string, p Patch) (int64, error) {
	if p.Tags.Set || p.Desired.Set {
		return 0, invalid("a device can write only reported properties")
	}
	apply := func(d *Doc) error {
		_, err := d.Apply(p, false, s.now())
		return err
	}
	if dev, mod := herd.SplitIdentity(deviceID); mod != "" {
		_, doc, err := s.store.UpdateModuleTwin(ctx, dev, mod, func(_ *herd.Module, d *Doc) error { return apply(d) })
		if err != nil {
			return 0, err
		}
		return doc.ReportedVersion, nil
	}
	_, doc, err := s.store.UpdateTwin(ctx, deviceID, func(_ *herd.Device, d *Doc) error { return apply(d) })
	if err != nil {
		return 0, err
	}
	s.wrote(deviceID)
	return doc.ReportedVersion, nil
}

// Publish tells the device about a committed desired change. Writers other
// than Update (twin-update jobs) call it after their own transactions.
func (s *Service) Publish(deviceID string, up Update) { s.publish(deviceID, up) }

// Notify sends a prepared desired-change notification (the change plus
// "$version", see Patch.NotificationBody) to a device. Writers that patch
// many twins in one transaction call it after their commit, with where
// they saw the device connected.
func (s *Service) Notify(deviceID string, where Where, version int64, body []byte) {
	s.notify(deviceID, where, version, body)
}

func (s *Service) publish(deviceID string, up Update) {
	if up.Desired == nil {
		return
	}
	body, err := json.Marshal(up.Desired)
	if err != nil {
		return // cannot happen: the patch was decoded from JSON
	}
	s.notify(deviceID, Where{}, up.DesiredVersion, body)
}

// CheckETag compares an If-Match header value with the current etag: ""
// and "*" match anything; quotes and a weak "W/" prefix are ignored.
func CheckETag(ifMatch, current string) error {
	want := NormalizeETag(ifMatch)
	if want == "" || want == "*" || want == current {
		return nil
	}
	return herd.Errorf(herd.ErrPreconditionFailed, "the etag %q does not match the current etag %q", want, current)
}

// NormalizeETag strips a W/ prefix and surrounding quotes.
func NormalizeETag(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "W/")
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	return s
}

// Marshal encodes a section for storage.
func Marshal(m map[string]any) (string, error) {
	if m == nil {
		return "{}", nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encode twin section: %w", err)
	}
	return string(b), nil
}

// Unmarshal decodes a stored section, keeping numbers exact.
func Unmarshal(s string) (map[string]any, error) {
	if s == "" {
		return map[string]any{}, nil
	}
	v, err := decode([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("decode stored twin section: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("decode stored twin section: not an object")
	}
	return m, nil
}

// GetModule returns the service view of a module's twin.
func (s *Service) GetModule(ctx context.Context, deviceID, moduleID string) (*herd.Twin, error) {
	m, doc, err := s.store.ModuleTwin(ctx, deviceID, moduleID)
	if err != nil {
		return nil, err
	}
	return ModuleView(m, doc), nil
}

// UpdateModule merges (or, with replace, replaces) the tags and desired
// properties of a module's twin, under the same rules as Update; a
// connected module is told about desired changes after the write commits.
func (s *Service) UpdateModule(ctx context.Context, deviceID, moduleID string, p Patch, replace bool, ifMatch string) (*herd.Twin, error) {
	if p.Reported.Set {
		return nil, invalid("reported properties can only be written by the module")
	}
	if replace {
		if !p.Tags.Set {
			p.Tags = Change{Set: true}
		}
		if !p.Desired.Set {
			p.Desired = Change{Set: true}
		}
	}
	var up Update
	m, doc, err := s.store.UpdateModuleTwin(ctx, deviceID, moduleID, func(_ *herd.Module, d *Doc) error {
		if err := CheckETag(ifMatch, ETagString(d.ETag)); err != nil {
			return err
		}
		var err error
		up, err = d.Apply(p, replace, s.now())
		return err
	})
	if err != nil {
		return nil, err
	}
	s.publish(herd.ModuleIdentity(deviceID, moduleID), up)
	return ModuleView(m, doc), nil
}
