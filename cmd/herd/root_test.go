package main

import (
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// TestUnknownCommand: a mistyped command, at the top or under a group,
// fails with "unknown command" and a suggestion; a group alone prints its
// help and succeeds.
func TestUnknownCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"device", "creat"}, []string{`unknown command "creat" for "herd device"`, `did you mean "create"?`}},
		{[]string{"device", "creat", "dev1"}, []string{`unknown command "creat" for "herd device"`, `"create"`}},
		{[]string{"job", "wach", "j1"}, []string{`unknown command "wach" for "herd job"`, `"watch"`}},
		{[]string{"twin", "shwo"}, []string{`unknown command "shwo" for "herd twin"`, `"show"`}},
		{[]string{"method", "invok"}, []string{`unknown command "invok" for "herd method"`, `"invoke"`}},
		{[]string{"devcie"}, []string{`unknown command "devcie" for "herd"`, `did you mean "device"?`}},
		{[]string{"device", "frobnicate"}, []string{`unknown command "frobnicate" for "herd device"`, "herd device --help"}},
	} {
		out, err := runCLI(t, noEnv, tc.args...)
		if err == nil {
			t.Errorf("%v: no error; output:\n%s", tc.args, out)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %q lacks %q", tc.args, err, w)
			}
		}
	}
	for _, args := range [][]string{{"device"}, {"job"}, {}} {
		out, err := runCLI(t, noEnv, args...)
		if err != nil || !strings.Contains(out, "Available Commands:") {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
}

// TestVersion: herd version (and herd --version) names the build.
func TestVersion(t *testing.T) {
	re := regexp.MustCompile(`^herd \S+ ` + regexp.QuoteMeta(runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH) + `( rev [0-9a-f]+( \(modified\))?)?\n$`)
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := runCLI(t, noEnv, args...)
		if err != nil || !re.MatchString(out) {
			t.Errorf("%v: %v %q; want %s", args, err, out, re)
		}
	}
}

func TestDescribeBuild(t *testing.T) {
	platform := runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
	for _, tc := range []struct {
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{nil, false, "(devel) " + platform},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true, "(devel) " + platform},
		{&debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "11bb224c0a1f5e3d9b7a6c5d4e3f2a1b0c9d8e7f"}, {Key: "vcs.modified", Value: "false"}}},
			true, "v1.2.3 " + platform + " rev 11bb224c0a1f"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261126070940-11bb224c0a1f+dirty"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "11bb224c0a1f5e3d9b7a6c5d4e3f2a1b0c9d8e7f"}, {Key: "vcs.modified", Value: "true"}}},
			true, "v0.0.0-20261126070940-11bb224c0a1f+dirty " + platform + " rev 11bb224c0a1f (modified)"},
	} {
		if got := describeBuild(tc.bi, tc.ok); got != tc.want {
			t.Errorf("describeBuild(%+v) = %q, want %q", tc.bi, got, tc.want)
		}
	}
}
