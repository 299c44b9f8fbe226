// Package config owns automatic device configurations (PUT
// /configurations/{id}, docs/configurations.md): desired properties that
// the hub applies to every device a target condition selects — the
// Azure-compatible face of a continuous twin update. Of the configurations
// that select a device, the one with the highest priority applies (on a
// tie, the one created last).
//
// Azure re-evaluates configurations every five minutes; Herd applies on
// change: when a configuration is created or changed (to every device it
// selects), and when a device is created or written (tags set by the
// service, a bulk import or a twin job). Each application is one twin
// transaction that first checks, against the twin as it is then, that the
// configuration still wins and that its content is not there already, so
// a device is never written twice for one configuration and a race with
// another write cannot apply a configuration that no longer wins.
package config

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"

	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/twin"
)

// Limits (Azure's for a standard hub).
const (
	MaxConfigurations = 100
	MaxIDLength       = 128
	MaxLabels         = 100
	MaxMetrics        = 10
	MaxLabelLength    = 128
)

// Record is a configuration as the store keeps it: Body is the
// configuration's own members as JSON (herd.Configuration without the
// times, the etag and the metric results); the store sets ETag.
type Record struct {
	ID               string
	Body             []byte
	Created, Updated time.Time
	ETag             int64
}

// Store keeps configurations.
type Store interface {
	// Configurations returns every configuration in id order.
	Configurations(ctx context.Context) ([]Record, error)
	// Configuration returns one, or a ConfigurationNotFound error.
	Configuration(ctx context.Context, id string) (Record, error)
	// CreateConfiguration stores a new configuration with ETag 1; an id
	// taken is ConfigurationAlreadyExists, more than max configurations
	// TooManyConfigurationsOnHub.
	CreateConfiguration(ctx context.Context, r Record, max int) (Record, error)
	// UpdateConfiguration reads a configuration, lets change edit it (an
	// error from change writes nothing and is returned), writes it with
	// its ETag one higher and returns it; unknown: ConfigurationNotFound.
	UpdateConfiguration(ctx context.Context, id string, change func(*Record) error) (Record, error)
	// DeleteConfiguration removes a configuration if check (given it)
	// returns nil; unknown: ConfigurationNotFound.
	DeleteConfiguration(ctx context.Context, id string, check func(Record) error) error
}

// Twins reads and conditionally writes twins (internal/twin.Service).
type Twins interface {
	UpdateIf(ctx context.Context, deviceID string, decide func(*herd.Twin) (twin.Patch, bool, error)) (bool, error)
}

// Queries runs twin queries (internal/query.Service).
type Queries interface {
	Run(ctx context.Context, text string, pageSize int, continuation string) (*query.Result, error)
}

// Service manages configurations and applies them.
type Service struct {
	store   Store
	twins   Twins
	queries Queries
	now     func() time.Time
	log     *slog.Logger
	// onAnnounce is told of configuration writes made here (nil: none).
	onAnnounce func()

	mu      sync.Mutex
	active  []*compiled         // every configuration, winners first
	full    bool                // apply every configuration to its devices
	devices map[string]struct{} // devices to look at again
	wake    chan struct{}
}

// New returns a configuration service; Run applies configurations.
func New(store Store, twins Twins, queries Queries, now func() time.Time, log *slog.Logger) *Service {
	return &Service{store: store, twins: twins, queries: queries, now: now, log: log,
		devices: map[string]struct{}{}, wake: make(chan struct{}, 1)}
}

// compiled is a configuration ready to apply.
type compiled struct {
	c     herd.Configuration
	cond  *query.Query // nil: selects no device
	paths [][]string   // of the desired properties it sets
	vals  []any        // their values (decoded with UseNumber)
	patch twin.Patch
}

// stored is the part of a configuration the store keeps in Body.
type stored struct {
	SchemaVersion   string                    `json:"schemaVersion"`
	Labels          map[string]string         `json:"labels,omitempty"`
	Content         herd.ConfigurationContent `json:"content"`
	TargetCondition string                    `json:"targetCondition"`
	Priority        int                       `json:"priority"`
	Queries         map[string]string         `json:"queries,omitempty"`
}

func invalid(format string, args ...any) error {
	return herd.Errorf(herd.ErrArgumentInvalid, format, args...)
}

// ValidID checks a configuration id: 1 to 128 characters, lower-case
// ASCII letters, digits and - : + % _ # * ? ! ( ) , = @ ; $ ' (Azure's
// rule).
func ValidID(id string) error {
	if id == "" || len(id) > MaxIDLength {
		return invalid("a configuration id has 1 to %d characters, not %d", MaxIDLength, len(id))
	}
	for _, r := range id {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("-:+%_#*?!(),=@;$'", r) {
			continue
		}
		return invalid("configuration id %q: only lower-case letters, digits and - : + %% _ # * ? ! ( ) , = @ ; $ ' are allowed, not %q", id, r)
	}
	return nil
}

// parse checks a PUT body and returns what the store keeps.
func parse(id string, body []byte) (stored, error) {
	var in struct {
		ID              string                     `json:"id"`
		SchemaVersion   string                     `json:"schemaVersion"`
		Labels          map[string]string          `json:"labels"`
		Content         *herd.ConfigurationContent `json:"content"`
		TargetCondition string                     `json:"targetCondition"`
		Priority        json.RawMessage            `json:"priority"`
		Metrics         *herd.ConfigurationMetrics `json:"metrics"`
	}
	var out stored
	if err := json.Unmarshal(body, &in); err != nil {
		return out, invalid("the configuration is not valid JSON of a configuration: %v", err)
	}
	if in.ID != "" && in.ID != id {
		return out, invalid("the body's id %q is not the path's %q", in.ID, id)
	}
	out.SchemaVersion = in.SchemaVersion
	if out.SchemaVersion == "" {
		out.SchemaVersion = "1.0"
	}
	if out.SchemaVersion != "1.0" {
		return out, invalid("schemaVersion %q is not supported (1.0 is)", in.SchemaVersion)
	}
	if len(in.Labels) > MaxLabels {
		return out, invalid("a configuration has at most %d labels, not %d", MaxLabels, len(in.Labels))
	}
	for k, v := range in.Labels {
		if k == "" || len(k) > MaxLabelLength || len(v) > MaxLabelLength || strings.HasPrefix(k, "$") {
			return out, invalid("label %q: keys of 1 to %d characters not starting with $, values of at most %d", k, MaxLabelLength, MaxLabelLength)
		}
	}
	out.Labels = in.Labels
	if in.Content == nil || len(in.Content.DeviceContent) == 0 {
		if in.Content != nil && (len(in.Content.ModulesContent) > 0 || len(in.Content.ModuleContent) > 0) {
			return out, invalid("module content (IoT Edge deployments, module twins) is not supported: Herd has no modules yet; set content.deviceContent")
		}
		return out, herd.Errorf(herd.ErrArgumentNull, "content.deviceContent is required: the desired properties the configuration sets")
	}
	if len(in.Content.ModulesContent) > 0 || len(in.Content.ModuleContent) > 0 {
		return out, invalid("a configuration sets device content or module content, not both (and Herd has no modules yet)")
	}
	out.Content = herd.ConfigurationContent{DeviceContent: in.Content.DeviceContent}
	if _, _, err := contentPaths(out.Content.DeviceContent); err != nil {
		return out, err
	}
	out.TargetCondition = strings.TrimSpace(in.TargetCondition)
	if _, err := targetCondition(out.TargetCondition); err != nil {
		return out, err
	}
	if len(in.Priority) > 0 && string(in.Priority) != "null" {
		n, err := strconv.Atoi(string(bytes.TrimSpace(in.Priority)))
		if err != nil || n < 0 {
			return out, invalid("priority must be a whole number of at least 0, not %s", in.Priority)
		}
		out.Priority = n
	}
	if in.Metrics != nil && len(in.Metrics.Queries) > 0 {
		if len(in.Metrics.Queries) > MaxMetrics {
			return out, invalid("a configuration has at most %d metrics, not %d", MaxMetrics, len(in.Metrics.Queries))
		}
		for name, text := range in.Metrics.Queries {
			if _, err := metricQuery(text); err != nil {
				return out, invalid("metric %q: %s", name, herd.ErrorMessage(err))
			}
		}
		out.Queries = in.Metrics.Queries
	}
	return out, nil
}

// contentPaths splits deviceContent into desired-property paths and
// values.
func contentPaths(content map[string]json.RawMessage) ([][]string, []any, error) {
	keys := make([]string, 0, len(content))
	for k := range content {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var paths [][]string
	var vals []any
	for _, k := range keys {
		name, ok := strings.CutPrefix(k, "properties.desired.")
		segs := strings.Split(name, ".")
		if !ok || slices.Contains(segs, "") {
			return nil, nil, invalid("content.deviceContent key %q: write properties.desired.<name>", k)
		}
		for _, s := range segs {
			if strings.HasPrefix(s, "$") {
				return nil, nil, invalid("content.deviceContent key %q: %s is a system property", k, s)
			}
		}
		for _, p := range paths {
			if isPrefix(p, segs) || isPrefix(segs, p) {
				return nil, nil, invalid("content.deviceContent keys %q and properties.desired.%s overlap", k, strings.Join(p, "."))
			}
		}
		dec := json.NewDecoder(bytes.NewReader(content[k]))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, nil, invalid("content.deviceContent[%q] is not valid JSON: %v", k, err)
		}
		if v == nil {
			return nil, nil, invalid("content.deviceContent[%q] is null: a configuration sets values", k)
		}
		paths, vals = append(paths, segs), append(vals, v)
	}
	return paths, vals, nil
}

func isPrefix(p, of []string) bool { return len(p) <= len(of) && slices.Equal(p, of[:len(p)]) }

// targetCondition parses a target condition ("" selects nothing); it may
// name tags and deviceId only, which the hub follows as they change.
func targetCondition(text string) (*query.Query, error) {
	if text == "" {
		return nil, nil
	}
	q, err := query.ParseCondition(text)
	if err != nil {
		return nil, invalid("targetCondition: %s", herd.ErrorMessage(query.AsHerdError(err)))
	}
	if q.Where == nil {
		return q, nil // "*": every device
	}
	if err := tagsOnly(q.Where); err != nil {
		return nil, err
	}
	return q, nil
}

func tagsOnly(e query.Expr) error {
	switch e := e.(type) {
	case *query.Path:
		if len(e.Segs) > 0 && (e.Segs[0] == "tags" || e.Segs[0] == "deviceId") {
			return nil
		}
		return invalid("targetCondition may name tags and deviceId only, not %s", e)
	case *query.Unary:
		return tagsOnly(e.X)
	case *query.Binary:
		if err := tagsOnly(e.L); err != nil {
			return err
		}
		return tagsOnly(e.R)
	case *query.In:
		return tagsOnly(e.X)
	case *query.Call:
		for _, a := range e.Args {
			if err := tagsOnly(a); err != nil {
				return err
			}
		}
	}
	return nil
}

// metricQuery checks a metric query (SELECT … FROM devices [WHERE …])
// and returns the query that counts its devices.
func metricQuery(text string) (string, error) {
	q, err := query.Parse(text)
	if err != nil {
		return "", query.AsHerdError(err)
	}
	if q.From != query.Devices || len(q.GroupBy) > 0 {
		return "", invalid("a metric counts devices: SELECT deviceId FROM devices WHERE …")
	}
	return countQuery(q.Where), nil
}

func countQuery(where query.Expr) string {
	if where == nil {
		return "SELECT COUNT() AS n FROM devices"
	}
	return "SELECT COUNT() AS n FROM devices WHERE " + where.String()
}

// compile turns a stored configuration into one ready to apply.
func compile(r Record) (*compiled, error) {
	var st stored
	if err := json.Unmarshal(r.Body, &st); err != nil {
		return nil, fmt.Errorf("configuration %q: %w", r.ID, err)
	}
	c := &compiled{c: herd.Configuration{ID: r.ID, SchemaVersion: st.SchemaVersion, Labels: st.Labels, Content: st.Content,
		TargetCondition: st.TargetCondition, Priority: st.Priority,
		CreatedTimeUTC: herd.NewTime(r.Created), LastUpdatedTimeUTC: herd.NewTime(r.Updated), ETag: ETagString(r.ETag),
		Metrics: herd.ConfigurationMetrics{Queries: st.Queries, Results: map[string]int64{}}}}
	if c.c.Metrics.Queries == nil {
		c.c.Metrics.Queries = map[string]string{}
	}
	if c.c.Labels == nil {
		c.c.Labels = map[string]string{}
	}
	var err error
	if c.cond, err = targetCondition(st.TargetCondition); err != nil {
		return nil, err
	}
	if c.paths, c.vals, err = contentPaths(st.Content.DeviceContent); err != nil {
		return nil, err
	}
	desired := map[string]any{}
	for i, p := range c.paths {
		m := desired
		for _, s := range p[:len(p)-1] {
			next, ok := m[s].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[s] = next
			}
			m = next
		}
		m[p[len(p)-1]] = c.vals[i]
	}
	if c.patch, err = twin.ParseServiceValue(map[string]any{"properties": map[string]any{"desired": desired}}); err != nil {
		return nil, invalid("content.deviceContent: %s", herd.ErrorMessage(err))
	}
	return c, nil
}

// ETagString is a configuration's etag as the API shows it.
func ETagString(n int64) string {
	return base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(n, 10)))
}

// checkETag compares an If-Match value with a configuration's etag: ""
// and "*" match any.
func checkETag(ifMatch string, n int64) error {
	v := strings.Trim(strings.TrimPrefix(strings.TrimSpace(ifMatch), "W/"), `"`)
	if v == "" || v == "*" || v == ETagString(n) {
		return nil
	}
	return herd.Errorf(herd.ErrPreconditionFailed, "the configuration's etag is %q, not %q", ETagString(n), v)
}

// Put creates a configuration (no If-Match) or changes one (If-Match:
// its etag, or *). Its content cannot change (as in Azure): create
// another configuration. The configuration is then applied in the
// background.
func (s *Service) Put(ctx context.Context, id string, body []byte, ifMatch string) (*herd.Configuration, error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	st, err := parse(id, body)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	now := s.now()
	var r Record
	if strings.TrimSpace(ifMatch) == "" {
		r, err = s.store.CreateConfiguration(ctx, Record{ID: id, Body: b, Created: now, Updated: now}, MaxConfigurations)
	} else {
		r, err = s.store.UpdateConfiguration(ctx, id, func(cur *Record) error {
			if err := checkETag(ifMatch, cur.ETag); err != nil {
				return err
			}
			var old stored
			if err := json.Unmarshal(cur.Body, &old); err != nil {
				return err
			}
			if !sameJSON(old.Content, st.Content) {
				return invalid("the content of configuration %q cannot change: create another configuration (and delete this one)", id)
			}
			cur.Body, cur.Updated = b, now
			return nil
		})
	}
	if err != nil {
		return nil, err
	}
	if err := s.reload(ctx, true); err != nil {
		s.log.Error("configurations", "op", "reload", "err", err)
	}
	s.announce()
	return s.view(ctx, r)
}

// sameJSON compares two values by their JSON encodings (map keys sorted).
func sameJSON(a, b any) bool {
	x, err1 := canonical(a)
	y, err2 := canonical(b)
	return err1 == nil && err2 == nil && x == y
}

func canonical(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var g any
	if err := dec.Decode(&g); err != nil {
		return "", err
	}
	out, err := json.Marshal(g)
	return string(out), err
}

// Get returns a configuration with its metrics.
func (s *Service) Get(ctx context.Context, id string) (*herd.Configuration, error) {
	if ValidID(id) != nil {
		return nil, herd.Errorf(herd.ErrConfigurationNotFound, "configuration %q does not exist", id)
	}
	r, err := s.store.Configuration(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.view(ctx, r)
}

// List returns up to top configurations (0: all) with their metrics.
func (s *Service) List(ctx context.Context, top int) ([]*herd.Configuration, error) {
	rs, err := s.store.Configurations(ctx)
	if err != nil {
		return nil, err
	}
	if top > 0 && len(rs) > top {
		rs = rs[:top]
	}
	out := make([]*herd.Configuration, 0, len(rs))
	for _, r := range rs {
		c, err := s.view(ctx, r)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Delete removes a configuration; the devices keep the desired
// properties it set (as in Azure), and a configuration of lower priority
// that selects them applies in its place.
func (s *Service) Delete(ctx context.Context, id, ifMatch string) error {
	if ValidID(id) != nil {
		return herd.Errorf(herd.ErrConfigurationNotFound, "configuration %q does not exist", id)
	}
	if err := s.store.DeleteConfiguration(ctx, id, func(r Record) error { return checkETag(ifMatch, r.ETag) }); err != nil {
		return err
	}
	if err := s.reload(ctx, true); err != nil {
		s.log.Error("configurations", "op", "reload", "err", err)
	}
	s.announce()
	return nil
}

// OnAnnounce has fn told after a configuration was created, changed or
// deleted here: in a cluster, the node that applies configurations may
// be another (it calls Reload). Set it before the service is used.
func (s *Service) OnAnnounce(fn func()) { s.onAnnounce = fn }

func (s *Service) announce() {
	if s.onAnnounce != nil {
		s.onAnnounce()
	}
}

// Reload reads the configurations again and applies them all: they
// changed in the store on another node.
func (s *Service) Reload(ctx context.Context) {
	if err := s.reload(ctx, true); err != nil && ctx.Err() == nil {
		s.log.Error("configurations", "op", "reload", "err", err)
	}
}

// view is a configuration as the API shows it, its metrics counted now:
// targetedCount the devices its condition selects, appliedCount those of
// them that no configuration of higher priority selects (counted as the
// targeted less those a higher one also selects, so that a device a
// higher condition is undefined for is not taken as selected by it).
func (s *Service) view(ctx context.Context, r Record) (*herd.Configuration, error) {
	c, err := compile(r)
	if err != nil {
		return nil, err
	}
	out := c.c
	out.SystemMetrics = herd.ConfigurationMetrics{Results: map[string]int64{"targetedCount": 0, "appliedCount": 0},
		Queries: map[string]string{}}
	if c.cond != nil {
		where := "*"
		if c.cond.Where != nil {
			where = c.cond.Where.String()
		}
		targeted, err := s.count(ctx, c.cond.Where)
		if err != nil {
			return nil, err
		}
		out.SystemMetrics.Queries["targetedCount"] = "SELECT deviceId FROM devices WHERE " + where
		applied := targeted
		if higher := s.higher(c); len(higher) > 0 && targeted > 0 {
			cond := "(" + strings.Join(higher, ") OR (") + ")"
			if c.cond.Where != nil {
				cond = "(" + where + ") AND (" + cond + ")"
			}
			both, err := s.countText(ctx, countQuery(nil)+" WHERE "+cond)
			if err != nil {
				return nil, err
			}
			applied -= both
		}
		out.SystemMetrics.Results["targetedCount"], out.SystemMetrics.Results["appliedCount"] = targeted, applied
	}
	for name, text := range out.Metrics.Queries {
		cq, err := metricQuery(text)
		if err == nil {
			out.Metrics.Results[name], err = s.countText(ctx, cq)
		}
		if err != nil {
			return nil, fmt.Errorf("metric %q of configuration %q: %w", name, r.ID, err)
		}
	}
	return &out, nil
}

// higher returns the conditions of the configurations that win over c
// ("*" for one that selects every device is written as a condition that
// always holds).
func (s *Service) higher(c *compiled) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, o := range s.active {
		if o.c.ID == c.c.ID {
			break
		}
		if o.cond == nil {
			continue
		}
		if o.cond.Where == nil {
			out = append(out, "true")
			continue
		}
		out = append(out, o.cond.Where.String())
	}
	return out
}

func (s *Service) count(ctx context.Context, where query.Expr) (int64, error) {
	return s.countText(ctx, countQuery(where))
}

func (s *Service) countText(ctx context.Context, text string) (int64, error) {
	res, err := s.queries.Run(ctx, text, 1, "")
	if err != nil {
		return 0, err
	}
	if len(res.Items) == 0 {
		return 0, nil
	}
	b, err := json.Marshal(res.Items[0])
	if err != nil {
		return 0, err
	}
	var row struct{ N int64 }
	if err := json.Unmarshal(b, &row); err != nil {
		return 0, err
	}
	return row.N, nil
}

// reload reads the configurations into the applier's order (winners
// first); with all, every configuration is applied again.
func (s *Service) reload(ctx context.Context, all bool) error {
	rs, err := s.store.Configurations(ctx)
	if err != nil {
		return err
	}
	var list []*compiled
	for _, r := range rs {
		c, err := compile(r)
		if err != nil {
			s.log.Error("configuration cannot be applied", "configuration", r.ID, "err", err)
			continue
		}
		list = append(list, c)
	}
	sort.SliceStable(list, func(i, j int) bool {
		a, b := list[i].c, list[j].c
		if a.Priority != b.Priority {
			return a.Priority > b.Priority
		}
		if !a.CreatedTimeUTC.Equal(b.CreatedTimeUTC.Time) {
			return a.CreatedTimeUTC.After(b.CreatedTimeUTC.Time)
		}
		return a.ID < b.ID
	})
	s.mu.Lock()
	s.active = list
	if all {
		s.full = true
	}
	s.mu.Unlock()
	s.poke()
	return nil
}

func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Changed tells the applier that a device was created or its twin
// written: the configurations are checked against it again. It does not
// block.
func (s *Service) Changed(deviceID string) {
	s.mu.Lock()
	if len(s.active) == 0 {
		s.mu.Unlock()
		return // nothing to apply: the common case costs a lock
	}
	s.devices[deviceID] = struct{}{}
	s.mu.Unlock()
	s.poke()
}

// Run applies configurations until ctx ends: every configuration to its
// devices at start and after each change of configurations, and the
// configurations to each device that changed.
func (s *Service) Run(ctx context.Context) error {
	if err := s.reload(ctx, true); err != nil && ctx.Err() == nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		}
		s.mu.Lock()
		full, devices := s.full, s.devices
		s.full, s.devices = false, map[string]struct{}{}
		s.mu.Unlock()
		if full {
			if err := s.applyAll(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("apply configurations", "op", "apply", "err", err)
				s.mu.Lock()
				s.full = true // again after a pause
				s.mu.Unlock()
				if !sleep(ctx, time.Second) {
					return nil
				}
				s.poke()
			}
			continue
		}
		for id := range devices {
			if ctx.Err() != nil {
				return nil
			}
			if err := s.applyTo(ctx, id); err != nil && !herd.IsCode(err, herd.ErrDeviceNotFound) && ctx.Err() == nil {
				s.log.Error("apply configurations", "op", "apply", "device_id", id, "err", err)
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// applyAll walks each configuration's devices (winners first) and applies
// what wins on each.
func (s *Service) applyAll(ctx context.Context) error {
	s.mu.Lock()
	list := s.active
	s.mu.Unlock()
	for _, c := range list {
		if c.cond == nil {
			continue
		}
		text := "SELECT deviceId FROM devices"
		if c.cond.Where != nil {
			text += " WHERE " + c.cond.Where.String()
		}
		cont := ""
		for {
			res, err := s.queries.Run(ctx, text, query.MaxPageSize, cont)
			if err != nil {
				return err
			}
			for _, it := range res.Items {
				b, _ := json.Marshal(it)
				var row struct {
					DeviceID string `json:"deviceId"`
				}
				if json.Unmarshal(b, &row) != nil || row.DeviceID == "" {
					continue
				}
				if err := s.applyTo(ctx, row.DeviceID); err != nil && !herd.IsCode(err, herd.ErrDeviceNotFound) {
					return err
				}
			}
			if cont = res.Continuation; cont == "" {
				break
			}
		}
	}
	return nil
}

// applyTo applies the winning configuration to one device, in one twin
// transaction, unless its content is there already.
func (s *Service) applyTo(ctx context.Context, deviceID string) error {
	s.mu.Lock()
	list := s.active
	s.mu.Unlock()
	if len(list) == 0 {
		return nil
	}
	var applied string
	wrote, err := s.twins.UpdateIf(ctx, deviceID, func(t *herd.Twin) (twin.Patch, bool, error) {
		doc, err := document(t)
		if err != nil {
			return twin.Patch{}, false, err
		}
		for _, c := range list {
			if c.cond == nil || !c.cond.Match(doc) {
				continue
			}
			if c.holds(doc) {
				return twin.Patch{}, false, nil
			}
			applied = c.c.ID
			return c.patch, true, nil
		}
		return twin.Patch{}, false, nil
	})
	if wrote {
		s.log.Debug("configuration applied", "configuration", applied, "device_id", deviceID)
	}
	return err
}

// holds says whether a twin document has the configuration's content.
func (c *compiled) holds(doc map[string]any) bool {
	for i, p := range c.paths {
		// The query evaluator's own path lookup (undefined when missing).
		v := query.Eval(&query.Path{Segs: append([]string{"properties", "desired"}, p...)}, doc)
		if !query.Defined(v) || !sameJSON(v, c.vals[i]) {
			return false
		}
	}
	return true
}

// document is a twin as the query language sees it.
func document(t *herd.Twin) (map[string]any, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}
