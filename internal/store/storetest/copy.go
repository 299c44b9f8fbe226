package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"strconv"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/internal/bus"
	"github.com/herd-iot/herd/internal/certauth"
	"github.com/herd-iot/herd/internal/job"
	"github.com/herd-iot/herd/internal/registry"
	"github.com/herd-iot/herd/internal/store/rows"
	"github.com/herd-iot/herd/internal/twin"
)

// Populate fills every table of a new store with a small hub's worth of
// varied data, through the store's own methods: n devices with generated
// twins (nested values, nulls, arrays, odd keys, metadata), persistent
// sessions, the default policies, settings, a finished twin-update job, a
// method job with completed, failed, running and pending devices (method
// payloads of several shapes), a cancelled job and two CA certificates,
// one verified. It is the fixture of the tests of herd store copy.
func Populate(t *testing.T, s Store, n int) {
	t.Helper()
	ctx := context.Background()
	r := rand.New(rand.NewSource(42))
	var ops []registry.Op
	for i := range n {
		op := genDevice(r, i, t0)
		if i%7 == 0 {
			thumb := fmt.Sprintf("%040X", i)
			op.Device.Authentication = herd.Authentication{Type: herd.AuthSelfSigned,
				X509Thumbprint: herd.X509Thumbprint{PrimaryThumbprint: &thumb}}
		}
		if i%5 == 0 {
			op.Device.DeviceScope = "ms-azure-iot-edge://edge-" + strconv.Itoa(i)
			op.Device.ParentScopes = []string{op.Device.DeviceScope}
		}
		ops = append(ops, op)
	}
	res, err := s.ApplyDevices(ctx, ops)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("create %s: %v", ops[i].DeviceID, r.Err)
		}
	}
	if err := s.SetConnectionStates(ctx, []registry.ConnectionChange{
		{DeviceID: ops[0].DeviceID, State: herd.Connected, StateAt: t0.Add(time.Minute), ActivityAt: t0.Add(2 * time.Minute)},
	}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 11 {
		m := &herd.Module{DeviceID: ops[i].DeviceID, ModuleID: "mod-" + strconv.Itoa(i%3), GenerationID: "1", ManagedBy: "IotEdge",
			Authentication: herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{PrimaryKey: auth.NewKey(), SecondaryKey: auth.NewKey()}}}
		doc := twin.NewDoc(t0)
		doc.Tags = map[string]any{"n": float64(i)}
		if _, err := s.CreateModule(ctx, m, doc); err != nil {
			t.Fatal(err)
		}
	}
	var sessions []bus.SessionChange
	for i := 0; i < n; i += 3 {
		sessions = append(sessions, bus.SessionChange{DeviceID: ops[i].DeviceID, Subscriptions: bus.Feature(i % 8)})
	}
	for i := 0; i < n; i += 22 {
		sessions = append(sessions, bus.SessionChange{DeviceID: herd.ModuleIdentity(ops[i].DeviceID, "mod-"+strconv.Itoa(i%3)), Subscriptions: bus.Feature(i % 8)})
	}
	if err := s.SaveSessions(ctx, sessions); err != nil {
		t.Fatal(err)
	}
	if err := s.CreatePolicies(ctx, auth.DefaultPolicies()); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"hostname": "hub.example", "https_addr": "127.0.0.1:443"} {
		if err := s.SetSetting(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}

	at := func(d int) time.Time { return t0.Add(time.Duration(d) * time.Minute) }
	twinJob(t, s, "twin-job", `{"etag":"*","tags":{"wave":{"n":1,"when":null}},"properties":{"desired":{"fw":"2.0"}}}`)
	if _, err := s.StartJob(ctx, "twin-job", mustParse("tags.a != null OR deviceId < 'dev-010'"), at(1)); err != nil {
		t.Fatal(err)
	}
	p, err := twin.ParseService([]byte(`{"tags":{"wave":{"n":1}},"properties":{"desired":{"fw":"2.0"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	for after := ""; ; {
		b, err := s.ApplyTwinBatch(ctx, "twin-job", p, after, 50, at(2))
		if err != nil {
			t.Fatal(err)
		}
		if b.Done {
			break
		}
		after = b.Next
	}

	methodJob(t, s, "method-job")
	if _, err := s.StartJob(ctx, "method-job", mustParse("*"), at(3)); err != nil {
		t.Fatal(err)
	}
	pending, err := s.PendingDevices(ctx, "method-job", "", n)
	if err != nil {
		t.Fatal(err)
	}
	claim := pending[:len(pending)*3/4]
	if _, err := s.ClaimDevices(ctx, "method-job", claim, at(4)); err != nil {
		t.Fatal(err)
	}
	var outs []job.Outcome
	payloads := []string{`{"a":1,"b":[1,2.5,"x"],"c":{"d":null}}`, `null`, `"done"`, `17`, `{"é":"ü","big":12345678901234567890}`}
	for i, id := range claim[:len(claim)*2/3] {
		switch i % 4 {
		case 3:
			outs = append(outs, job.Outcome{DeviceID: id, Status: herd.DeviceJobFailed,
				Error: &herd.DeviceJobError{Code: "GatewayTimeout", Description: "Timed out waiting for the response from device."}})
		default:
			outs = append(outs, job.Outcome{DeviceID: id, Status: herd.DeviceJobCompleted,
				Response: &herd.MethodResult{Status: 200 + i%3, Payload: json.RawMessage(payloads[i%len(payloads)])}})
		}
	}
	if err := s.FinishDevices(ctx, "method-job", outs, at(5)); err != nil {
		t.Fatal(err)
	}

	methodJob(t, s, "cancelled-job")
	if _, err := s.CancelJob(ctx, "cancelled-job", at(6)); err != nil {
		t.Fatal(err)
	}

	createCA(t, s, "root", "other")
	if _, err := s.UpdateCACertificate(ctx, "root", func(ca *certauth.CA) error {
		ca.Verified, ca.VerificationCode, ca.Updated = true, "", t0.Add(time.Hour)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// Dump reads every table of a store (which must be a rows.Source) in the
// store-neutral form, each row as one line of JSON: JSON columns as
// decoded values with their objects' keys sorted and their numbers
// compared by value (PostgreSQL's jsonb normalizes both), every other
// column as it is. Two stores that hold the same hub dump the same.
func Dump(t testing.TB, s Store) map[string][]string {
	t.Helper()
	src, ok := s.(rows.Source)
	if !ok {
		t.Fatalf("%T is not a rows.Source", s)
	}
	out := map[string][]string{}
	for _, tb := range rows.Tables {
		var lines []string
		err := src.ExportRows(context.Background(), tb, func(row []any) error {
			vals := make([]any, len(row))
			for i, c := range tb.Columns {
				vals[i] = row[i]
				if c.Kind == rows.JSON && row[i] != nil {
					s, ok := row[i].(string)
					if !ok {
						return fmt.Errorf("%s.%s: %T, want JSON text", tb.Name, c.Name, row[i])
					}
					v, err := canonicalJSON(s)
					if err != nil {
						return fmt.Errorf("%s.%s: %v", tb.Name, c.Name, err)
					}
					vals[i] = v
				}
			}
			b, err := json.Marshal(vals)
			if err != nil {
				return err
			}
			lines = append(lines, string(b))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		out[tb.Name] = lines
	}
	return out
}

// canonicalJSON decodes s with its numbers as their float64 text, so that
// 1e3 and 1000 (or 1.0 and 1) compare equal.
func canonicalJSON(s string) (any, error) {
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return numbersByValue(v), nil
}

func numbersByValue(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return x.String()
		}
		return json.Number(strconv.FormatFloat(f, 'g', -1, 64))
	case map[string]any:
		for k, e := range x {
			x[k] = numbersByValue(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbersByValue(e)
		}
	}
	return v
}
