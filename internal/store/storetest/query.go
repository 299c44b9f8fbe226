package storetest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/twin"
)

// The differential tests: the reference evaluator (query.Query.Match and
// Aggregate over the twin documents GET /twins/{id} returns, and over the
// devices.jobs records) and the SQL the store compiles in its own dialect
// must select the same devices and compute the same aggregates, for
// thousands of generated queries over generated twins. HERD_QUERY_SEED
// replays a failure's seed.

// queryTests are the differential tests, run by Run.
var queryTests = []struct {
	name string
	fn   func(*testing.T, Store)
}{
	{"Differential", testDifferential},
	{"DifferentialAggregates", testDifferentialAggregates},
	{"DifferentialDeviceJobs", testDifferentialDeviceJobs},
}

var (
	genKeys    = []string{"a", "b", "c", "n", "Name", `q"k`, "k[1", "group"}
	genStrings = []string{"", "a", "A", "b", "ab", "abc", "1", "0", "1.2", "true", "null", "{x", "[1]", "é", "Ünï", "a'b", "<a>", "t\tab", "q\"uote"}
	genNumbers = []string{"0", "1", "-1", "2", "3", "0.5", "1.0", "-2.5", "43", "1e3", "0x10"}
)

func genValue(r *rand.Rand, depth int) any {
	switch r.Intn(12) {
	case 0, 1:
		return json.Number(genNumbers[r.Intn(len(genNumbers)-1)]) // no hex in JSON
	case 2:
		return json.Number(fmt.Sprint(r.Intn(7) - 3))
	case 3, 4:
		return genStrings[r.Intn(len(genStrings))]
	case 5:
		return r.Intn(2) == 0
	case 6:
		return nil
	case 7:
		arr := []any{}
		for range r.Intn(3) {
			arr = append(arr, genValue(r, 3))
		}
		return arr
	default:
		if depth >= 3 {
			return genStrings[r.Intn(len(genStrings))]
		}
		return genObject(r, depth+1)
	}
}

func genObject(r *rand.Rand, depth int) map[string]any {
	m := map[string]any{}
	for _, k := range genKeys {
		if r.Intn(3) == 0 {
			m[k] = genValue(r, depth)
		}
	}
	return m
}

func genDevice(r *rand.Rand, i int, now time.Time) registry.Op {
	d := &herd.Device{
		DeviceID:     fmt.Sprintf("dev-%03d", i),
		GenerationID: "g",
		Status:       []herd.DeviceStatus{herd.DeviceEnabled, herd.DeviceDisabled}[r.Intn(2)],
		Authentication: herd.Authentication{Type: herd.AuthSAS,
			SymmetricKey: herd.SymmetricKey{PrimaryKey: "p", SecondaryKey: "s"}},
		Capabilities: herd.Capabilities{IoTEdge: r.Intn(2) == 0},
	}
	if r.Intn(2) == 0 {
		s := genStrings[r.Intn(len(genStrings))]
		d.StatusReason = &s
	}
	doc := twin.NewDoc(now)
	doc.Tags, doc.Desired, doc.Reported = genObject(r, 1), genObject(r, 1), genObject(r, 1)
	doc.DesiredVersion = int64(r.Intn(4) + 1)
	doc.Version = int64(r.Intn(4) + 1)
	doc.ETag = int64(r.Intn(3) + 1)
	for _, k := range genKeys[:3] {
		if r.Intn(2) == 0 {
			doc.ReportedMeta[k] = map[string]any{"$lastUpdated": fmt.Sprintf("2024-0%d-01T00:00:00.0000000Z", r.Intn(9)+1)}
		}
	}
	return registry.Op{Kind: registry.OpCreate, DeviceID: d.DeviceID, Device: d, Twin: doc}
}

// gen generates query text; jobs makes it use devices.jobs paths.
type gen struct {
	*rand.Rand
	jobs bool
}

// genPath returns a random path over the twin.
func genPath(r *gen) string {
	if r.jobs {
		return []string{"devices.jobs.jobId", "jobId", "devices.jobs.deviceId", "devices.jobs.status",
			"devices.jobs.jobType", "devices.jobs.createdTimeUtc", "devices.jobs.createdDateTimeUtc",
			"devices.jobs.startTimeUtc", "devices.jobs.endTimeUtc", "devices.jobs.lastUpdatedDateTimeUtc",
			"devices.jobs.outcome", "devices.jobs.outcome.deviceMethodResponse",
			"devices.jobs.outcome.deviceMethodResponse.status", "devices.jobs.outcome.deviceMethodResponse.payload.a",
			"devices.jobs.error", "devices.jobs.error.code", "devices.jobs.error.description", "devices.jobs.attempts"}[r.Intn(18)]
	}
	key := func() string {
		k := genKeys[r.Intn(len(genKeys))]
		if k == "group" || strings.ContainsAny(k, `"[`) {
			if r.Intn(2) == 0 {
				return "['" + strings.ReplaceAll(k, "'", `\'`) + "']"
			}
			if k == "group" {
				return ".group"
			}
			return "['" + k + "']"
		}
		return "." + k
	}
	switch r.Intn(14) {
	case 0:
		return []string{"deviceId", "DeviceID", "status", "statusReason", "moduleId", "etag", "deviceEtag",
			"connectionState", "lastActivityTime", "authenticationType", "modelId"}[r.Intn(11)]
	case 1:
		return []string{"version", "cloudToDeviceMessageCount", "properties.desired.$version",
			"properties.reported.$version", "capabilities.iotEdge", "x509Thumbprint.primaryThumbprint"}[r.Intn(6)]
	case 2:
		return []string{"tags", "properties.desired", "capabilities", "properties.reported.$metadata.a.$lastUpdated",
			"properties.reported.$metadata.b", "properties.desired.$metadata.$lastUpdated"}[r.Intn(6)]
	}
	p := []string{"tags", "properties.desired", "properties.reported"}[r.Intn(3)]
	for range 1 + r.Intn(3) {
		p += key()
	}
	return p
}

func genLiteral(r *gen) string {
	switch r.Intn(8) {
	case 0, 1, 2:
		return genNumbers[r.Intn(len(genNumbers))]
	case 3, 4, 5:
		s := genStrings[r.Intn(len(genStrings))]
		return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
	case 6:
		return []string{"true", "false"}[r.Intn(2)]
	}
	return []string{"null", "undefined"}[r.Intn(2)]
}

func genOperand(r *gen, depth int) string {
	switch r.Intn(10) {
	case 0, 1, 2, 3:
		return genPath(r)
	case 4, 5, 6:
		return genLiteral(r)
	case 7:
		if depth > 0 {
			op := []string{"+", "-", "*", "/", "%"}[r.Intn(5)]
			return "(" + genOperand(r, depth-1) + " " + op + " " + genOperand(r, depth-1) + ")"
		}
	case 8:
		return []string{"LOWER", "UPPER", "LENGTH"}[r.Intn(3)] + "(" + genPath(r) + ")"
	case 9:
		if depth > 0 {
			return "(" + genCond(r, depth-1) + ")"
		}
	}
	return genPath(r)
}

func genCond(r *gen, depth int) string {
	n := r.Intn(10)
	if depth <= 0 && n >= 7 {
		n = r.Intn(7)
	}
	switch n {
	case 0, 1, 2:
		op := []string{"=", "!=", "<>", "<", "<=", ">", ">="}[r.Intn(7)]
		return genOperand(r, depth) + " " + op + " " + genOperand(r, depth)
	case 3:
		var list []string
		for range r.Intn(4) {
			list = append(list, genLiteral(r))
		}
		op := []string{" IN ", " NIN "}[r.Intn(2)]
		return genOperand(r, depth) + op + "[" + strings.Join(list, ", ") + "]"
	case 4:
		f := []string{"IS_DEFINED", "IS_NULL", "IS_BOOL", "IS_NUMBER", "IS_STRING", "IS_OBJECT", "IS_ARRAY", "IS_PRIMITIVE"}[r.Intn(8)]
		return f + "(" + genOperand(r, depth) + ")"
	case 5:
		f := []string{"STARTSWITH", "ENDS_WITH", "CONTAINS", "starts_with", "ENDSWITH"}[r.Intn(5)]
		return f + "(" + genOperand(r, depth) + ", " + genOperand(r, depth) + ")"
	case 6:
		return genPath(r)
	case 7:
		return "NOT " + genCond(r, depth-1)
	case 8:
		return "(" + genCond(r, depth-1) + " AND " + genCond(r, depth-1) + ")"
	}
	return "(" + genCond(r, depth-1) + " OR " + genCond(r, depth-1) + ")"
}

// loadTwins creates n generated devices and returns their twin documents
// as GET /twins/{id} shows them.
func loadTwins(t testing.TB, db Store, r *rand.Rand, n int) []map[string]any {
	t.Helper()
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var ops []registry.Op
	for i := range n {
		ops = append(ops, genDevice(r, i, now))
	}
	res, err := db.ApplyDevices(ctx, ops)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	for i, op := range ops {
		if res[i].Err != nil {
			t.Fatalf("create %s: %v", op.DeviceID, res[i].Err)
		}
		dev, doc, err := db.Twin(ctx, op.DeviceID)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(twin.View(dev, doc))
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		docs = append(docs, m)
	}
	return docs
}

// runAll pages through every result of q with the given page size, as
// POST /devices/query does.
func runAll(t testing.TB, db Store, q *query.Query, size int) ([]any, error) {
	svc := query.NewService(db)
	var all []any
	token := ""
	for range 10000 {
		res, err := svc.Run(context.Background(), q.String(), size, token)
		if err != nil {
			return nil, err
		}
		if len(res.Items) > size {
			t.Fatalf("%s: page of %d items, asked for %d", q, len(res.Items), size)
		}
		all = append(all, res.Items...)
		if res.Continuation == "" {
			return all, nil
		}
		token = res.Continuation
	}
	t.Fatalf("%s: paging did not end", q)
	return nil, nil
}

func testDifferential(t *testing.T, db Store) {
	seed := testSeed()
	r := rand.New(rand.NewSource(seed))
	g := &gen{Rand: r}
	docs := loadTwins(t, db, r, 150)
	queries, parsed, matchedSome := 2000, 0, 0
	if testing.Short() {
		queries = 500
	}
	for i := 0; i < queries; i++ {
		top := -1
		text := "SELECT * FROM devices WHERE " + genCond(g, 3)
		if r.Intn(4) == 0 {
			top = r.Intn(20)
			text = fmt.Sprintf("SELECT TOP %d%s", top, strings.TrimPrefix(text, "SELECT"))
		}
		q, err := query.Parse(text)
		if err != nil {
			continue
		}
		parsed++
		want := map[string]bool{}
		for _, d := range docs {
			if q.Match(d) {
				want[d["deviceId"].(string)] = true
			}
		}
		items, err := runAll(t, db, q, 1+r.Intn(200))
		if err != nil {
			if strings.Contains(err.Error(), "cannot be addressed") {
				continue
			}
			t.Fatalf("seed %d: %s: %v", seed, text, err)
		}
		got := map[string]bool{}
		last := ""
		for _, it := range items {
			id := it.(*herd.Twin).DeviceID
			if id <= last {
				t.Fatalf("seed %d: %s: %s after %s: pages are not in device id order", seed, q, id, last)
			}
			last = id
			got[id] = true
		}
		if len(want) > 0 {
			matchedSome++
		}
		if top >= 0 {
			if len(got) != min(top, len(want)) {
				t.Fatalf("seed %d: %s: %d results, want %d", seed, q, len(got), min(top, len(want)))
			}
			for id := range got {
				if !want[id] {
					t.Fatalf("seed %d: %s: SQL also returns %s", seed, q, id)
				}
			}
			continue
		}
		for id := range want {
			if !got[id] {
				t.Fatalf("seed %d: %s\nSQL misses %s:\n%s", seed, q, id, docJSON(docs, id))
			}
		}
		for id := range got {
			if !want[id] {
				t.Fatalf("seed %d: %s\nSQL also returns %s:\n%s", seed, q, id, docJSON(docs, id))
			}
		}
	}
	t.Logf("seed %d: %d of %d generated queries parsed, %d matched some twins", seed, parsed, queries, matchedSome)
	if parsed < queries/2 || matchedSome < parsed/10 {
		t.Fatalf("the generator is too weak: %d parsed, %d matched", parsed, matchedSome)
	}
}

func docJSON(docs []map[string]any, id string) string {
	for _, d := range docs {
		if d["deviceId"] == id {
			b, _ := json.MarshalIndent(map[string]any{"tags": d["tags"], "properties": d["properties"],
				"statusReason": d["statusReason"], "capabilities": d["capabilities"], "etag": d["etag"], "version": d["version"]}, "", " ")
			return string(b)
		}
	}
	return ""
}

func testDifferentialAggregates(t *testing.T, db Store) {
	seed := testSeed()
	r := rand.New(rand.NewSource(seed))
	g := &gen{Rand: r}
	docs := loadTwins(t, db, r, 150)
	rounds := 400
	if testing.Short() {
		rounds = 100
	}
	for range rounds {
		var sel, group []string
		for i := range r.Intn(3) {
			p := genPath(g)
			if p == "properties.desired" || p == "capabilities" {
				continue
			}
			group = append(group, p)
			sel = append(sel, fmt.Sprintf("%s AS k%d", p, i))
		}
		for i := range 1 + r.Intn(3) {
			f := []string{"COUNT", "SUM", "AVG", "MIN", "MAX"}[r.Intn(5)]
			arg := ""
			if f != "COUNT" {
				arg = genPath(g)
			}
			sel = append(sel, fmt.Sprintf("%s(%s) AS a%d", f, arg, i))
		}
		text := "SELECT " + strings.Join(sel, ", ") + " FROM devices"
		if r.Intn(2) == 0 {
			text += " WHERE " + genCond(g, 2)
		}
		if len(group) > 0 {
			text += " GROUP BY " + strings.Join(group, ", ")
		}
		q, err := query.Parse(text)
		if err != nil {
			continue
		}
		var matched []map[string]any
		for _, d := range docs {
			if q.Match(d) {
				matched = append(matched, d)
			}
		}
		want := q.Aggregate(matched)
		items, err := runAll(t, db, q, 1+r.Intn(20))
		if err != nil {
			if strings.Contains(err.Error(), "cannot be") {
				continue
			}
			t.Fatalf("seed %d: %s: %v", seed, text, err)
		}
		var got []map[string]any
		for _, it := range items {
			got = append(got, it.(map[string]any))
		}
		if msg := sameRows(want, got); msg != "" {
			t.Fatalf("seed %d: %s\n%s", seed, q, msg)
		}
	}
}

// sameRows compares result rows as multisets, numbers within a relative
// 1e-9 (summation order differs).
func sameRows(want, got []map[string]any) string {
	norm := func(rows []map[string]any) []string {
		var out []string
		for _, r := range rows {
			b, _ := json.Marshal(roundNumbers(r))
			out = append(out, string(b))
		}
		sort.Strings(out)
		return out
	}
	w, g := norm(want), norm(got)
	if strings.Join(w, "\n") != strings.Join(g, "\n") {
		return fmt.Sprintf("reference:\n%s\nSQL:\n%s", strings.Join(w, "\n"), strings.Join(g, "\n"))
	}
	return ""
}

func roundNumbers(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, x := range v {
			out[k] = roundNumbers(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = roundNumbers(x)
		}
		return out
	case json.Number:
		f, _ := v.Float64()
		return roundNumbers(f)
	case int64:
		return roundNumbers(float64(v))
	case float64:
		if v == 0 || math.IsInf(v, 0) {
			return v
		}
		e := math.Pow(10, math.Floor(math.Log10(math.Abs(v)))-9)
		return math.Round(v/e) * e
	}
	return v
}

// testDifferentialDeviceJobs runs generated queries over devices.jobs
// records that the job Store methods wrote: every status, outcomes with
// and without payloads, errors with and without descriptions, and
// different timestamps.
func testDifferentialDeviceJobs(t *testing.T, db Store) {
	seed := testSeed()
	r := rand.New(rand.NewSource(seed))
	ctx := context.Background()
	ids := make([]string, 120)
	for i := range ids {
		ids[i] = fmt.Sprintf("dev-%03d", i)
	}
	create(t, db, ids...)
	at := func() time.Time { return t0.Add(time.Duration(1+r.Intn(9)) * 24 * time.Hour) }
	for j := range 4 {
		jid := fmt.Sprintf("job-%d", j)
		var targets []string
		for i := j; i < len(ids); i += 4 {
			targets = append(targets, "'"+ids[i]+"'")
		}
		cond := mustParse("deviceId IN [" + strings.Join(targets, ", ") + "]")
		if j == 3 {
			twinJob(t, db, jid, `{"etag":"*","tags":{"j":3}}`)
			if _, err := db.StartJob(ctx, jid, cond, at()); err != nil {
				t.Fatal(err)
			}
			p, err := twin.ParseService([]byte(`{"tags":{"j":3}}`))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.ApplyTwinBatch(ctx, jid, p, "", 10, at()); err != nil {
				t.Fatal(err)
			}
			continue
		}
		methodJob(t, db, jid)
		if _, err := db.StartJob(ctx, jid, cond, at()); err != nil {
			t.Fatal(err)
		}
		pending, err := db.PendingDevices(ctx, jid, "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		var claim, offline []string
		for _, id := range pending {
			switch r.Intn(4) {
			case 0: // stays pending
			case 1:
				offline = append(offline, id)
			default:
				claim = append(claim, id)
			}
		}
		var outs []job.Outcome
		for _, id := range offline {
			e := &herd.DeviceJobError{Code: "DeviceNotOnline"}
			if r.Intn(2) == 0 {
				e.Description = "Timed out waiting for device to connect."
			}
			o := job.Outcome{DeviceID: id, Status: herd.DeviceJobFailed, Error: e, FromPending: true}
			if r.Intn(3) == 0 { // back to pending, one attempt made
				o.RetryAt = at().Add(time.Minute)
			}
			outs = append(outs, o)
		}
		if _, err := db.ClaimDevices(ctx, jid, claim, at()); err != nil {
			t.Fatal(err)
		}
		for _, id := range claim {
			switch r.Intn(5) {
			case 0: // stays running
			case 1:
				outs = append(outs, job.Outcome{DeviceID: id, Status: herd.DeviceJobFailed, Error: &herd.DeviceJobError{Code: "GatewayTimeout", Description: "Timed out waiting for the response from device."}})
			default:
				res := []*herd.MethodResult{{Status: 200, Payload: json.RawMessage(`{"a":1}`)}, {Status: 500, Payload: json.RawMessage(`null`)},
					{Status: 200, Payload: json.RawMessage(`{"a":"1"}`)}}[r.Intn(3)]
				outs = append(outs, job.Outcome{DeviceID: id, Status: herd.DeviceJobCompleted, Response: res})
			}
		}
		if err := db.FinishDevices(ctx, jid, outs, at()); err != nil {
			t.Fatal(err)
		}
		if j == 2 {
			if _, err := db.CancelJob(ctx, jid, at()); err != nil { // pending → canceled
				t.Fatal(err)
			}
		}
	}
	all, err := query.Parse("SELECT * FROM devices.jobs")
	if err != nil {
		t.Fatal(err)
	}
	items, err := runAll(t, db, all, 50)
	if err != nil || len(items) != 120 {
		t.Fatalf("SELECT * FROM devices.jobs: %d items, %v", len(items), err)
	}
	var docs []map[string]any
	statuses := map[string]bool{}
	for _, it := range items {
		b, _ := json.Marshal(it.(*herd.DeviceJob))
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		statuses[m["status"].(string)] = true
		docs = append(docs, m)
	}
	if len(statuses) < 5 {
		t.Fatalf("seed %d: the records cover only the statuses %v", seed, sortedKeys(statuses))
	}
	g := &gen{Rand: r, jobs: true}
	matchedSome := 0
	for range 1000 {
		text := "SELECT * FROM devices.jobs WHERE " + genCond(g, 2)
		q, err := query.Parse(text)
		if err != nil {
			continue // a generated type error
		}
		want := map[string]bool{}
		for _, d := range docs {
			if q.Match(d) {
				want[d["jobId"].(string)+"/"+d["deviceId"].(string)] = true
			}
		}
		items, err := runAll(t, db, q, 1+r.Intn(40))
		if err != nil {
			t.Fatalf("seed %d: %s: %v", seed, q, err)
		}
		got := map[string]bool{}
		for _, it := range items {
			j := it.(*herd.DeviceJob)
			got[j.JobID+"/"+j.DeviceID] = true
		}
		if len(want) > 0 {
			matchedSome++
		}
		if fmt.Sprint(sortedKeys(want)) != fmt.Sprint(sortedKeys(got)) {
			t.Fatalf("seed %d: %s\nreference: %v\nSQL:       %v", seed, q, sortedKeys(want), sortedKeys(got))
		}
	}
	if matchedSome < 100 {
		t.Fatalf("the generator is too weak: %d queries matched", matchedSome)
	}
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// testSeed is HERD_QUERY_SEED when set (to replay a failure), else the
// time.
func testSeed() int64 {
	if s, err := strconv.ParseInt(os.Getenv("HERD_QUERY_SEED"), 10, 64); err == nil {
		return s
	}
	return time.Now().UnixNano()
}

// QueryFuzzer runs every query that parses against the store: the
// compiled SQL must run without error and select what the reference
// evaluator selects. The seed corpus is the query package's golden
// queries; a store's package calls it from its own fuzz target.
func QueryFuzzer(f *testing.F, db Store) {
	file, err := os.Open("../../query/testdata/valid.txt") // from internal/store/<store>
	if err != nil {
		f.Fatal(err)
	}
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			f.Add(line)
		}
	}
	file.Close()
	docs := loadTwins(f, db, rand.New(rand.NewSource(7)), 60)
	f.Fuzz(func(t *testing.T, text string) {
		q, err := query.Parse(text)
		if err != nil {
			return
		}
		items, err := runAll(t, db, q, 7)
		if err != nil {
			if herd.ErrorCodeOf(err) == herd.ErrInternal {
				t.Fatalf("%s: %v", q, err)
			}
			return
		}
		if q.Aggregated() {
			var matched []map[string]any
			for _, d := range docs {
				if q.Match(d) {
					matched = append(matched, d)
				}
			}
			want := q.Aggregate(matched)
			if q.HasTop && int64(len(want)) > q.Top {
				return // which groups TOP keeps is the store's order
			}
			var got []map[string]any
			for _, it := range items {
				got = append(got, it.(map[string]any))
			}
			if msg := sameRows(want, got); msg != "" {
				t.Fatalf("%s\n%s", q, msg)
			}
			return
		}
		if q.From != query.Devices {
			return
		}
		n := 0
		for _, d := range docs {
			if q.Match(d) {
				n++
			}
		}
		if q.HasTop {
			n = min(n, int(q.Top))
		}
		if len(items) != n {
			t.Fatalf("%s: SQL returned %d items, the evaluator %d", q, len(items), n)
		}
	})
}
