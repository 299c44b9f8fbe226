package ui

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

// funcs are the template helpers.
var funcs = template.FuncMap{
	"json":    prettyJSON,
	"compact": compactJSON,
	"clip":    clip,
	"when":    when,
	"num":     num,
	"current": func(path, prefix string) bool {
		if prefix == Prefix {
			return path == Prefix
		}
		return strings.HasPrefix(path, prefix)
	},
	"pathEscape": url.PathEscape,
	"add":        func(a, b int64) int64 { return a + b },
	"list":       func(v ...any) []any { return v },
	"seconds":    seconds,
	"rollout":    rolloutText,
	"statusClass": func(s any) string {
		return "status-" + strings.ToLower(fmt.Sprint(s))
	},
}

// prettyJSON indents a value as JSON ("" for nil).
func prettyJSON(v any) string {
	if v == nil {
		return ""
	}
	if raw, ok := v.(json.RawMessage); ok {
		var b bytes.Buffer
		if json.Indent(&b, raw, "", "  ") == nil {
			return b.String()
		}
		return string(raw)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// compactJSON writes a value as one line of JSON, cut after max runes.
func compactJSON(v any, max int) string {
	if v == nil {
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	s := string(b)
	if r := []rune(s); len(r) > max {
		return string(r[:max]) + "…"
	}
	return s
}

// clip cuts a string after max runes.
func clip(s string, max int) string {
	if r := []rune(s); len(r) > max {
		return string(r[:max]) + "…"
	}
	return s
}

// when formats a time in UTC, or "never" for the zero time.
func when(v any) string {
	var t time.Time
	switch x := v.(type) {
	case herd.Time:
		t = x.Time
	case *herd.Time:
		if x != nil {
			t = x.Time
		}
	case time.Time:
		t = x
	}
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// num writes a count with thousands separators.
func num(v any) string {
	var n int64
	switch x := v.(type) {
	case int:
		n = int64(x)
	case int64:
		n = x
	default:
		return fmt.Sprint(v)
	}
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// seconds writes a duration given in seconds for people.
func seconds(v float64) string {
	switch {
	case math.IsInf(v, 0) || math.IsNaN(v) || v < 0:
		return "unknown"
	case v < 1:
		return fmt.Sprintf("%.0f ms", math.Ceil(v*1000))
	case v < 120:
		return fmt.Sprintf("%.1f s", v)
	}
	return (time.Duration(v) * time.Second).Round(time.Second).String()
}

// diffRow compares one desired property with what the device reported at
// the same path.
type diffRow struct {
	Path, Desired, Reported string
	// State is "applied" (the device reports the same value), "pending"
	// (it reports another value or none) or "reported" (reported only).
	State string
}

// maxDiffRows bounds the comparison table (a desired section holds at most
// 32 KB).
const maxDiffRows = 500

// twinDiff compares the leaves of desired and reported properties
// ($metadata and $version left out): a desired value is applied when the
// device reports the same value at the same path, as devices that
// acknowledge their configuration do.
func twinDiff(desired, reported map[string]any) (rows []diffRow, pending int) {
	d, r := map[string]string{}, map[string]string{}
	flatten("", desired, d)
	flatten("", reported, r)
	paths := make([]string, 0, len(d)+len(r))
	for p := range d {
		paths = append(paths, p)
	}
	for p := range r {
		if _, ok := d[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		dv, inD := d[p]
		rv, inR := r[p]
		row := diffRow{Path: p, Desired: dv, Reported: rv}
		switch {
		case !inD:
			row.State = "reported"
		case inR && dv == rv:
			row.State = "applied"
		default:
			row.State = "pending"
			pending++
		}
		if len(rows) < maxDiffRows {
			rows = append(rows, row)
		}
	}
	return rows, pending
}

// flatten writes the leaves of a JSON object by dotted path; objects are
// walked, everything else (arrays included) is a leaf in compact JSON.
func flatten(prefix string, m map[string]any, out map[string]string) {
	for k, v := range m {
		if prefix == "" && (k == "$metadata" || k == "$version") {
			continue
		}
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
			flatten(p, sub, out)
			continue
		}
		b, _ := json.Marshal(v)
		out[p] = string(b)
	}
}

// section returns a twin section without $metadata and $version, as the
// editor shows it.
func section(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if k != "$metadata" && k != "$version" {
			out[k] = v
		}
	}
	return out
}

// version returns a section's $version (0 when absent).
func version(m map[string]any) int64 {
	switch v := m["$version"].(type) {
	case float64:
		return int64(v)
	case int64:
		return v
	case json.Number:
		n, _ := v.Int64()
		return n
	}
	return 0
}

// quote writes a string constant of the query language.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// pathEscape escapes a device or job id for a URL path.
func pathEscape(id string) string { return url.PathEscape(id) }

// rolloutText describes a job's rollout in words ("600 devices a minute;
// waves 1%, 10%, 100%, pausing between them").
func rolloutText(ro *herd.Rollout) string {
	var parts []string
	if e := ro.Exponential; e != nil {
		t := fmt.Sprintf("from %d devices a minute, times %s each %d that succeed", e.BaseRatePerMinute,
			strconv.FormatFloat(e.IncrementFactor, 'f', -1, 64), e.RateIncreaseCriteria.NumberOfSucceededDevices)
		if ro.MaxPerMinute > 0 {
			t += fmt.Sprintf(", up to %d", ro.MaxPerMinute)
		}
		parts = append(parts, t)
	} else if ro.MaxPerMinute > 0 {
		parts = append(parts, fmt.Sprintf("%d devices a minute", ro.MaxPerMinute))
	}
	if len(ro.Waves) > 0 {
		var pct []string
		for _, w := range ro.Waves {
			pct = append(pct, strconv.FormatFloat(w.Percent, 'f', -1, 64)+"%")
		}
		t := "waves " + strings.Join(pct, ", ")
		if ro.PauseBetweenWaves {
			t += ", pausing between them"
		}
		parts = append(parts, t)
	}
	return strings.Join(parts, "; ")
}
