package gateway

import (
	"strings"
	"testing"

	"github.com/herd-iot/herd/internal/bus"
)

func TestParseTopic(t *testing.T) {
	cases := []struct {
		topic string
		want  Topic
		ok    bool
	}{
		{"devices/d1/messages/events/", Topic{Kind: KindTelemetry}, true},
		{"devices/d1/messages/events", Topic{Kind: KindTelemetry}, true},
		{"devices/d1/messages/events/%24.mid=1&a=b", Topic{Kind: KindTelemetry, Bag: "%24.mid=1&a=b"}, true},
		{"devices/d1/messages/eventsX", Topic{}, false},
		{"devices/d2/messages/events/", Topic{}, false},
		{"devices/d1/modules/m/messages/events/", Topic{}, false},
		{"$iothub/twin/GET/?$rid=42", Topic{Kind: KindTwinGet, RID: "42"}, true},
		{"$iothub/twin/GET?$rid=42", Topic{Kind: KindTwinGet, RID: "42"}, true},
		{"$iothub/twin/GET/?$rid=", Topic{}, false},
		{"$iothub/twin/GET/", Topic{}, false},
		{"$iothub/twin/PATCH/properties/reported/?$rid=a-b&x=1", Topic{Kind: KindTwinReported, RID: "a-b"}, true},
		{"$iothub/twin/PATCH/properties/reported/?x=1&$rid=7", Topic{Kind: KindTwinReported, RID: "7"}, true},
		{"$iothub/methods/res/200/?$rid=ff", Topic{Kind: KindMethodResponse, RID: "ff", Status: 200}, true},
		{"$iothub/methods/res/-1?$rid=ff", Topic{Kind: KindMethodResponse, RID: "ff", Status: -1}, true},
		{"$iothub/methods/res/abc/?$rid=ff", Topic{}, false},
		{"$iothub/methods/res//?$rid=ff", Topic{}, false},
		{"$iothub/methods/POST/x/?$rid=1", Topic{}, false},
		{"$iothub/twin/PATCH/properties/desired/?$version=1", Topic{}, false},
		{"", Topic{}, false},
	}
	for _, tc := range cases {
		got, err := ParseTopic("d1", tc.topic)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseTopic(%q) = %+v, %v; want %+v ok=%v", tc.topic, got, err, tc.want, tc.ok)
		}
	}
}

// A module's telemetry topic is its own: devices/{id}/modules/{mid}/….
func TestParseTopicModule(t *testing.T) {
	for topic, ok := range map[string]bool{
		"devices/d1/modules/m1/messages/events/":         true,
		"devices/d1/modules/m1/messages/events/%24.ct=x": true,
		"devices/d1/messages/events/":                    false,
		"devices/d1/modules/m2/messages/events/":         false,
		"devices/d1/modules/m1/messages/eventsX":         false,
		"$iothub/twin/GET/?$rid=1":                       true,
	} {
		if _, err := ParseTopic("d1/m1", topic); (err == nil) != ok {
			t.Errorf("module ParseTopic(%q): %v, want ok=%v", topic, err, ok)
		}
	}
	if _, err := ParseTopic("d1/m1", "devices/d2/modules/m1/messages/events/"); err != errForeign {
		t.Errorf("another device's module topic: %v, want errForeign", err)
	}
	if _, err := ParseFilter("d1/m1", "devices/d1/modules/m1/inputs/#"); err == nil || err == errForeign {
		t.Errorf("module inputs: %v, want not supported (not foreign)", err)
	}
	if _, err := ParseFilter("d1/m1", "devices/d1/modules/m2/inputs/#"); err != errForeign {
		t.Errorf("another module's inputs: %v, want errForeign", err)
	}
	if f, err := ParseFilter("d1/m1", "$iothub/methods/POST/#"); err != nil || f != bus.Methods {
		t.Errorf("module methods: %v %v", f, err)
	}
}

func TestParseFilter(t *testing.T) {
	good := map[string]bus.Feature{
		"$iothub/methods/POST/#":                  bus.Methods,
		"$iothub/twin/res/#":                      bus.TwinResponses,
		"$iothub/twin/PATCH/properties/desired/#": bus.Desired,
		"devices/d1/messages/devicebound/#":       bus.C2D,
	}
	for f, want := range good {
		if got, err := ParseFilter("d1", f); err != nil || got != want {
			t.Errorf("ParseFilter(%q) = %v, %v", f, got, err)
		}
	}
	for _, f := range []string{"#", "+", "$iothub/#", "$iothub/methods/#", "devices/d2/messages/devicebound/#", "devices/+/messages/devicebound/#", "devices/d1/#"} {
		if _, err := ParseFilter("d1", f); err == nil {
			t.Errorf("ParseFilter(%q) accepted", f)
		}
	}
}

func TestParseBag(t *testing.T) {
	b, err := ParseBag("%24.mid=dev1-msg-1&%24.ct=application%2Fjson&%24.ce=utf-8&temperatureAlert=false&flag&empty=&sp=a%20b+c&%24.weird=1")
	if err != nil {
		t.Fatal(err)
	}
	wantSys := map[string]string{"$.mid": "dev1-msg-1", "$.ct": "application/json", "$.ce": "utf-8"}
	wantApp := map[string]string{"temperatureAlert": "false", "flag": "", "empty": "", "sp": "a b c", "$.weird": "1"}
	if !equal(b.System, wantSys) || !equal(b.Application, wantApp) {
		t.Fatalf("got %+v", b)
	}
	for _, bad := range []string{"a=%zz", "%zz=1", "=v"} {
		if _, err := ParseBag(bad); err == nil {
			t.Errorf("ParseBag(%q) accepted", bad)
		}
	}
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestParseUsername(t *testing.T) {
	ok := []struct{ user, id string }{
		{"localhost/d1/?api-version=2021-04-12", "d1"},
		{"LocalHost/d1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node)", "d1"},
		{"localhost:8883/d1/?api-version=2021-04-12", "d1"},
		{"localhost/a?b=c/?api-version=2021-04-12", "a?b=c"},
		{"localhost/d1/", "d1"},
	}
	for _, tc := range ok {
		if _, err := ParseUsername(tc.user, "localhost", tc.id); err != nil {
			t.Errorf("ParseUsername(%q, %q): %v", tc.user, tc.id, err)
		}
	}
	bad := []struct{ user, id string }{
		{"localhost/d2/?api-version=2021-04-12", "d1"},
		{"other/d1/?api-version=2021-04-12", "d1"},
		{"localhost/d1?api-version=2021-04-12", "d1"},
		{"localhost/d1/x", "d1"},
		{"localhost", "d1"},
		{"localhost:/d1/", "d1"},
		{"localhost/d1/?a=%zz", "d1"},
	}
	for _, tc := range bad {
		if _, err := ParseUsername(tc.user, "localhost", tc.id); err == nil {
			t.Errorf("ParseUsername(%q, %q) accepted", tc.user, tc.id)
		}
	}
}

func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{"devices/d1/messages/events/%24.mid=1", "$iothub/twin/GET/?$rid=1",
		"$iothub/twin/PATCH/properties/reported/?$rid=x&y", "$iothub/methods/res/200/?$rid=a", "devices/d2/x", "#"} {
		f.Add("d1", s)
	}
	f.Fuzz(func(t *testing.T, id, topic string) {
		tp, err := ParseTopic(id, topic)
		if err != nil {
			return
		}
		switch tp.Kind {
		case KindTelemetry:
			if !strings.HasPrefix(topic, "devices/"+id+"/messages/events") {
				t.Fatalf("telemetry topic %q accepted for device %q", topic, id)
			}
		case KindTwinGet, KindTwinReported, KindMethodResponse:
			if tp.RID == "" || !strings.HasPrefix(topic, "$iothub/") {
				t.Fatalf("request %q parsed as %+v", topic, tp)
			}
		default:
			t.Fatalf("unknown kind for %q", topic)
		}
	})
}

func FuzzParseFilter(f *testing.F) {
	f.Add("d1", "devices/d1/messages/devicebound/#")
	f.Add("d1", "$iothub/methods/POST/#")
	f.Fuzz(func(t *testing.T, id, filter string) {
		feat, err := ParseFilter(id, filter)
		if err == nil && feat == bus.C2D && filter != "devices/"+id+"/messages/devicebound/#" {
			t.Fatalf("filter %q granted C2D of %q", filter, id)
		}
	})
}

func FuzzParseBag(f *testing.F) {
	for _, s := range []string{"%24.mid=1&%24.ct=application%2Fjson&a=b", "a", "a=&b", "%zz", "&&", "k=v=w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseBag(s)
		if err != nil {
			return
		}
		for k := range b.System {
			if !systemKeys[k] {
				t.Fatalf("%q classed as a system property", k)
			}
		}
		for k := range b.Application {
			if k == "" || systemKeys[k] {
				t.Fatalf("application property %q", k)
			}
		}
	})
}

func FuzzParseUsername(f *testing.F) {
	f.Add("localhost/d1/?api-version=2021-04-12", "d1")
	f.Add("localhost/a?b/?x=1", "a?b")
	f.Fuzz(func(t *testing.T, user, id string) {
		if _, err := ParseUsername(user, "localhost", id); err == nil {
			h, rest, _ := strings.Cut(user, "/")
			if !strings.HasPrefix(rest, id+"/") || !strings.HasPrefix(strings.ToLower(h), "localhost") {
				t.Fatalf("%q accepted for %q", user, id)
			}
		}
	})
}

// Forgetting a device's session forgets its modules' sessions too (they
// are deleted with it), and a module's alone leaves the device's.
func TestSessionsForgetModules(t *testing.T) {
	s := newSessions(nil)
	s.mu.Lock()
	s.remember("gw", knownSession{bus.Methods, true})
	s.remember("gw/cam", knownSession{bus.Desired, true})
	s.remember("gw/mic", knownSession{bus.Desired, true})
	s.remember("other/cam", knownSession{bus.Desired, true})
	s.mu.Unlock()
	s.forget("gw/mic")
	if _, ok := s.known["gw/mic"]; ok {
		t.Error("gw/mic's session is still known")
	}
	if _, ok := s.known["gw"]; !ok {
		t.Error("forgetting a module forgot its device's session")
	}
	s.forget("gw")
	for id, want := range map[string]bool{"gw": false, "gw/cam": false, "other/cam": true} {
		if _, ok := s.known[id]; ok != want {
			t.Errorf("%s known: %v, want %v", id, ok, want)
		}
	}
}
