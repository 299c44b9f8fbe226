package twin

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 123456700, time.UTC)

func mustParse(t *testing.T, body string) Patch {
	t.Helper()
	p, err := ParseService([]byte(body))
	if err != nil {
		t.Fatalf("ParseService(%s): %v", body, err)
	}
	return p
}

func toJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestApplyMergesAndDeletes(t *testing.T) {
	d := NewDoc(t0)
	if _, err := d.Apply(mustParse(t, `{"tags":{"building":43,"loc":{"floor":3,"room":"a"}},"properties":{"desired":{"fw":"1.0","cfg":{"a":1,"b":2}}}}`), false, t0); err != nil {
		t.Fatal(err)
	}
	up, err := d.Apply(mustParse(t, `{"tags":{"loc":{"room":null,"wing":"w"}},"properties":{"desired":{"cfg":{"a":null,"c":{"x":null}}}}}`), false, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := toJSON(t, d.Tags), `{"building":43,"loc":{"floor":3,"wing":"w"}}`; got != want {
		t.Errorf("tags = %s, want %s", got, want)
	}
	if got, want := toJSON(t, d.Desired), `{"cfg":{"b":2,"c":{}},"fw":"1.0"}`; got != want {
		t.Errorf("desired = %s, want %s", got, want)
	}
	if d.DesiredVersion != 3 || up.DesiredVersion != 3 {
		t.Errorf("desired version = %d (update says %d), want 3: +1 per desired write from 1", d.DesiredVersion, up.DesiredVersion)
	}
	if got, want := toJSON(t, up.Desired), `{"$version":3,"cfg":{"a":null,"c":{"x":null}}}`; got != want {
		t.Errorf("notification = %s, want %s (the patch as written, plus $version)", got, want)
	}
	if d.Version != 3 || d.ETag != 3 {
		t.Errorf("version %d etag %d, want 3 and 3", d.Version, d.ETag)
	}
}

func TestApplyMetadata(t *testing.T) {
	d := NewDoc(t0)
	t1 := t0.Add(time.Minute)
	if _, err := d.Apply(mustParse(t, `{"properties":{"desired":{"a":{"b":1,"c":2},"d":true}}}`), false, t1); err != nil {
		t.Fatal(err)
	}
	t2 := t1.Add(time.Minute)
	if _, err := d.Apply(mustParse(t, `{"properties":{"desired":{"a":{"c":null}}}}`), false, t2); err != nil {
		t.Fatal(err)
	}
	s1, s2 := herd.NewTime(t1).String(), herd.NewTime(t2).String()
	want := `{"$lastUpdated":"` + s2 + `","$lastUpdatedVersion":3,` +
		`"a":{"$lastUpdated":"` + s2 + `","$lastUpdatedVersion":3,"b":{"$lastUpdated":"` + s1 + `","$lastUpdatedVersion":2}},` +
		`"d":{"$lastUpdated":"` + s1 + `","$lastUpdatedVersion":2}}`
	if got := toJSON(t, d.DesiredMeta); got != want {
		t.Errorf("desired $metadata =\n %s\nwant\n %s", got, want)
	}
	// Replacing a leaf with an object rebuilds its metadata subtree.
	if _, err := d.Apply(mustParse(t, `{"properties":{"desired":{"d":{"e":1}}}}`), false, t2); err != nil {
		t.Fatal(err)
	}
	if got := toJSON(t, d.DesiredMeta["d"]); got != `{"$lastUpdated":"`+s2+`","$lastUpdatedVersion":4,"e":{"$lastUpdated":"`+s2+`","$lastUpdatedVersion":4}}` {
		t.Errorf("metadata of a replaced leaf = %s", got)
	}
}

func TestReplaceAndNullSections(t *testing.T) {
	d := NewDoc(t0)
	if _, err := d.Apply(mustParse(t, `{"tags":{"a":1,"b":2},"properties":{"desired":{"x":1}}}`), false, t0); err != nil {
		t.Fatal(err)
	}
	up, err := d.Apply(mustParse(t, `{"tags":{"c":3},"properties":{"desired":{"y":{"z":null,"w":2}}}}`), true, t0)
	if err != nil {
		t.Fatal(err)
	}
	if got := toJSON(t, d.Tags); got != `{"c":3}` {
		t.Errorf("replaced tags = %s", got)
	}
	if got := toJSON(t, up.Desired); got != `{"$version":3,"x":null,"y":{"w":2}}` {
		t.Errorf("replace notification = %s, want the whole new desired section and the removed x as null", got)
	}
	up, err = d.Apply(mustParse(t, `{"properties":{"desired":null}}`), false, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Desired) != 0 || d.DesiredVersion != 4 {
		t.Errorf("desired null: desired = %v version %d; want empty, version 4", d.Desired, d.DesiredVersion)
	}
	// A device merges the notification into what it holds: every removed
	// key must be in it as null (Azure's twin_e2e "can null out all
	// desired properties").
	if got := toJSON(t, up.Desired); got != `{"$version":4,"y":null}` {
		t.Errorf("desired null notification = %s, want every removed key as null", got)
	}
	if _, err := d.Apply(mustParse(t, `{"tags":null}`), false, t0); err != nil {
		t.Fatal(err)
	}
	if len(d.Tags) != 0 {
		t.Errorf("tags null left %v", d.Tags)
	}
}

func TestReportedPatch(t *testing.T) {
	d := NewDoc(t0)
	p, err := ParseReported([]byte(`{"fw":"1.2","cfg":{"a":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Apply(p, false, t0); err != nil {
		t.Fatal(err)
	}
	if d.ReportedVersion != 2 || d.DesiredVersion != 1 {
		t.Errorf("reported version %d desired %d; want 2 and 1", d.ReportedVersion, d.DesiredVersion)
	}
	if _, ok := d.ReportedMeta["cfg"].(map[string]any)["$lastUpdatedVersion"]; ok {
		t.Errorf("reported $metadata must not carry $lastUpdatedVersion")
	}
}

func TestParseAndLimitErrors(t *testing.T) {
	long := strings.Repeat("x", MaxStringLength+1)
	deep := `{"a":` + strings.Repeat(`{"a":`, MaxDepth) + `1` + strings.Repeat(`}`, MaxDepth) + `}`
	okDeep := `{"a":` + strings.Repeat(`{"a":`, MaxDepth-1) + `1` + strings.Repeat(`}`, MaxDepth-1) + `}`
	bigTags := map[string]any{}
	for i := 0; i < 100; i++ {
		bigTags[strings.Repeat("k", 10)+string(rune('a'+i%26))+strings.Repeat("z", i)] = strings.Repeat("v", 100)
	}
	cases := []struct {
		name, body string
		code       herd.ErrorCode
	}{
		{"not json", `{"tags":`, herd.ErrIotHubFormatError},
		{"trailing data", `{} {}`, herd.ErrIotHubFormatError},
		{"not an object", `[1]`, herd.ErrArgumentInvalid},
		{"tags not object", `{"tags":5}`, herd.ErrArgumentInvalid},
		{"root desired", `{"desired":{"a":1}}`, herd.ErrArgumentInvalid},
		{"reported from service", `{"properties":{"reported":{"a":1}}}`, herd.ErrArgumentInvalid},
		{"unknown member", `{"tag":{"a":1}}`, herd.ErrArgumentInvalid},
		{"dot in key", `{"tags":{"a.b":1}}`, herd.ErrArgumentInvalid},
		{"dollar in key", `{"tags":{"$a":1}}`, herd.ErrArgumentInvalid},
		{"space in key", `{"tags":{"a b":1}}`, herd.ErrArgumentInvalid},
		{"control in key", `{"tags":{"a\u0001":1}}`, herd.ErrArgumentInvalid},
		{"empty key", `{"tags":{"":1}}`, herd.ErrArgumentInvalid},
		{"long string", `{"tags":{"a":"` + long + `"}}`, herd.ErrArgumentInvalid},
		{"big integer", `{"tags":{"a":4503599627370496}}`, herd.ErrArgumentInvalid},
		{"too deep", `{"tags":` + deep + `}`, herd.ErrArgumentInvalid},
		// Arrays are levels too: the section, then 10 arrays is 11 levels.
		{"arrays too deep", `{"tags":{"a":` + strings.Repeat("[", MaxDepth) + `1` + strings.Repeat("]", MaxDepth) + `}}`, herd.ErrArgumentInvalid},
		{"objects in arrays too deep", `{"properties":{"desired":{"a":` + strings.Repeat(`[{"a":`, MaxDepth/2) + `1` + strings.Repeat(`}]`, MaxDepth/2) + `}}}`, herd.ErrArgumentInvalid},
		{"arrays past SQLite's JSON depth", `{"tags":{"a":` + strings.Repeat("[", 1500) + strings.Repeat("]", 1500) + `}}`, herd.ErrArgumentInvalid},
		{"invalid UTF-8", "{\"tags\":{\"a\":\"\xff\"}}", herd.ErrIotHubFormatError},
		{"tags too big", `{"tags":` + toJSON(t, bigTags) + `}`, herd.ErrArgumentInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := NewDoc(t0)
			before := toJSON(t, d)
			p, err := ParseService([]byte(c.body))
			if err == nil {
				_, err = d.Apply(p, false, t0)
			}
			if got := herd.ErrorCodeOf(err); got != c.code {
				t.Fatalf("error %v (code %q), want code %q", err, got, c.code)
			}
			if toJSON(t, d) != before {
				t.Errorf("a rejected patch changed the document")
			}
		})
	}
	if _, err := ParseService([]byte(`{"tags":` + okDeep + `}`)); err != nil {
		t.Errorf("depth %d must be allowed: %v", MaxDepth, err)
	}
	if _, err := ParseService([]byte(`{"tags":{"a":` + strings.Repeat("[", MaxDepth-1) + `1` + strings.Repeat("]", MaxDepth-1) + `}}`)); err != nil {
		t.Errorf("arrays %d levels deep must be allowed: %v", MaxDepth, err)
	}
	if _, err := ParseReported([]byte("{\"a\":\"\xc3\"}")); herd.ErrorCodeOf(err) != herd.ErrIotHubFormatError {
		t.Errorf("reported patch with invalid UTF-8: %v, want IotHubFormatError", err)
	}
	// Read-only members a client echoes back are ignored.
	p := mustParse(t, `{"deviceId":"d","etag":"x","version":3,"properties":{"desired":{"$version":4,"$metadata":{},"a":1},"reported":{"$version":2}}}`)
	if !p.Desired.Set || len(p.Desired.Value) != 1 || p.Reported.Set {
		t.Errorf("echoed read-only members not ignored: %+v", p)
	}
}

func TestSize(t *testing.T) {
	v := map[string]any{"ab": "cde", "n": json.Number("1"), "b": true, "o": map[string]any{"x": "\u0001y"}}
	// ab:2+3, n:1+8, b:1+4, o:1+(x:1+1)
	if got := Size(v); got != 22 {
		t.Errorf("Size = %d, want 22", got)
	}
}

func TestETagAndIfMatch(t *testing.T) {
	if got := ETagString(7); got != "AAAAAAAAAAc=" {
		t.Errorf("ETagString(7) = %s, want AAAAAAAAAAc= (Azure's form)", got)
	}
	for _, ok := range []string{"", "*", `"*"`, `"AAAAAAAAAAc="`, `W/"AAAAAAAAAAc="`, "AAAAAAAAAAc="} {
		if err := CheckETag(ok, "AAAAAAAAAAc="); err != nil {
			t.Errorf("If-Match %s: %v", ok, err)
		}
	}
	if err := CheckETag(`"abc"`, "AAAAAAAAAAc="); !herd.IsCode(err, herd.ErrPreconditionFailed) {
		t.Errorf("stale etag: %v, want PreconditionFailed", err)
	}
}

func FuzzParseService(f *testing.F) {
	for _, s := range []string{`{"tags":{"a":1}}`, `{"properties":{"desired":{"a":{"b":null}}}}`, `{"tags":null}`, `[]`, `{"a":`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParseService(body)
		if err != nil {
			return
		}
		d := NewDoc(t0)
		before := toJSON(t, d)
		if _, err := d.Apply(p, false, t0); err != nil {
			if toJSON(t, d) != before {
				t.Fatalf("failed Apply changed the doc")
			}
			return
		}
		if Size(d.Tags) > MaxTagsSize || Size(d.Desired) > MaxDesiredSize {
			t.Fatalf("limits exceeded after Apply")
		}
	})
}
