package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/service"
)

// DeviceIDs returns n device ids: prefix followed by a zero-padded index
// (sim-000000, sim-000001, …), the same ids for the same prefix whatever n.
func DeviceIDs(prefix string, n int) []string {
	width := max(6, len(strconv.Itoa(n-1)))
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%0*d", prefix, width, i)
	}
	return ids
}

// TagSpec says which tags each device of a fleet gets: for every tag, its
// values and the share of the fleet that gets each.
type TagSpec []tagShares

type tagShares struct {
	name   string
	values []any
	pct    []float64
}

// ParseTags parses a tag specification:
//
//	building=43:50%,44:50%;ring=canary:10%,prod:90%;site=north
//
// Tags are separated by ";", a tag's values by ","; each value may give
// its share of the devices (the shares of a tag add up to 100 %, a single
// value without a share gets every device). A value that is a JSON number,
// true, false or null is that; anything else is a string.
func ParseTags(spec string) (TagSpec, error) {
	var ts TagSpec
	seen := map[string]bool{}
	for _, part := range strings.Split(spec, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, vals, ok := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || vals == "" {
			return nil, fmt.Errorf("tag %q: write name=value or name=value:50%%,value:50%%", part)
		}
		if seen[name] {
			return nil, fmt.Errorf("tag %q is given twice", name)
		}
		seen[name] = true
		t := tagShares{name: name}
		var total float64
		values := strings.Split(vals, ",")
		for _, v := range values {
			v = strings.TrimSpace(v)
			text, share, hasShare := cutLast(v, ":")
			pct := 100.0
			if hasShare && strings.HasSuffix(share, "%") {
				p, err := strconv.ParseFloat(strings.TrimSuffix(share, "%"), 64)
				if err != nil || p <= 0 || p > 100 {
					return nil, fmt.Errorf("tag %s: share %q: give a percentage between 0 and 100", name, share)
				}
				pct = p
			} else {
				text = v
				if len(values) > 1 {
					return nil, fmt.Errorf("tag %s: value %q has no share: with several values give each one (43:50%%,44:50%%)", name, v)
				}
			}
			t.values = append(t.values, tagValue(text))
			t.pct = append(t.pct, pct)
			total += pct
		}
		if math.Abs(total-100) > 1e-9 {
			return nil, fmt.Errorf("tag %s: the shares add up to %g%%, not 100%%", name, total)
		}
		ts = append(ts, t)
	}
	return ts, nil
}

// cutLast cuts s around the last sep.
func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

func tagValue(s string) any {
	var v any
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	if d.Decode(&v) == nil && !d.More() {
		switch v.(type) {
		case json.Number, bool, nil:
			return v
		}
	}
	return s
}

// For returns the tags of device i of n: the devices are split in order,
// so building=43:50%,44:50% gives the first half 43 and the second 44.
func (ts TagSpec) For(i, n int) map[string]any {
	if len(ts) == 0 {
		return nil
	}
	tags := make(map[string]any, len(ts))
	for _, t := range ts {
		var cum float64
		for k, p := range t.pct {
			cum += p
			// Device i takes the value whose cumulative share covers its
			// position; the last value takes any rounding remainder.
			if k == len(t.pct)-1 || float64(i) < math.Round(cum*float64(n)/100) {
				tags[t.name] = t.values[k]
				break
			}
		}
	}
	return tags
}

// Count returns how many of n devices get the value of tag name.
func (ts TagSpec) Count(name string, value any, n int) int {
	c := 0
	for i := range n {
		if v, ok := ts.For(i, n)[name]; ok && fmt.Sprint(v) == fmt.Sprint(value) {
			c++
		}
	}
	return c
}

// Provisioned says what Provision did.
type Provisioned struct {
	Identities []Identity
	// Created counts the devices registered now; the others existed.
	Created int
}

// Provision returns the identities (ids and primary keys) of the devices
// ids through a hub's registry. With create, devices that do not exist
// are registered in bulk requests of 100 (POST /devices, §2.6) with
// generated keys and their tags; devices that exist keep their keys and
// tags and are read (GET /devices/{id}). Without create, every device is
// read and a missing one is an error. Requests run concurrently, at most
// parallel at a time (default 8).
func Provision(ctx context.Context, c *service.Client, ids []string, tags TagSpec, create bool, parallel int) (*Provisioned, error) {
	if parallel <= 0 {
		parallel = 8
	}
	out := &Provisioned{Identities: make([]Identity, len(ids))}
	exists := make([]bool, len(ids)) // to be read rather than created
	if create {
		created := make([]int, (len(ids)+99)/100)
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(parallel)
		for b := 0; b < len(ids); b += 100 {
			g.Go(func() error {
				end := min(b+100, len(ids))
				batch := make([]herd.ImportDevice, 0, end-b)
				for i := b; i < end; i++ {
					key := auth.NewKey()
					out.Identities[i] = Identity{ID: ids[i], Key: key}
					batch = append(batch, herd.ImportDevice{ID: ids[i], ImportMode: herd.ImportCreate, Status: herd.DeviceEnabled,
						Authentication: &herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{PrimaryKey: key, SecondaryKey: auth.NewKey()}},
						Tags:           tags.For(i, len(ids))})
				}
				res, err := c.BulkDevices(gctx, batch)
				if err != nil {
					return fmt.Errorf("register devices %s…%s: %w", ids[b], ids[end-1], err)
				}
				byID := map[string]int{}
				for i := b; i < end; i++ {
					byID[ids[i]] = i
				}
				for _, e := range res.Errors {
					i, ok := byID[e.DeviceID]
					if !ok || e.ErrorCode != string(herd.ErrDeviceAlreadyExists) {
						return fmt.Errorf("register device %s: %s: %s", e.DeviceID, e.ErrorCode, e.ErrorStatus)
					}
					exists[i] = true
				}
				created[b/100] = end - b - len(res.Errors)
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		for _, n := range created {
			out.Created += n
		}
	} else {
		for i := range exists {
			exists[i] = true
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel * 2)
	for i, ok := range exists {
		if !ok {
			continue
		}
		g.Go(func() error {
			d, err := c.GetDevice(gctx, ids[i])
			if herd.IsCode(err, herd.ErrDeviceNotFound) {
				return fmt.Errorf("device %s is not registered (register the fleet with --create)", ids[i])
			}
			if err != nil {
				return fmt.Errorf("read device %s: %w", ids[i], err)
			}
			if d.Authentication.Type != herd.AuthSAS || d.Authentication.SymmetricKey.PrimaryKey == "" {
				return fmt.Errorf("device %s authenticates with %s, not a symmetric key", ids[i], d.Authentication.Type)
			}
			out.Identities[i] = Identity{ID: d.DeviceID, Key: d.Authentication.SymmetricKey.PrimaryKey}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}
