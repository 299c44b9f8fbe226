package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

func versionCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print herd's version: module version, Go version, platform and source revision",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(e.stdout, "herd", version())
			return err
		},
	}
}

// version describes this binary from its build information: the module
// version ("(devel)" when the go command could not tell one), the Go
// version and platform, and the VCS revision it was built from, marked
// "(modified)" when the tree had uncommitted changes —
// "v0.0.0-…-11bb224c0a1f go1.26.8 linux/amd64 rev 11bb224c0a1f".
func version() string { return describeBuild(debug.ReadBuildInfo()) }

// describeBuild is version's text for a build's information (ok false
// when the binary has none).
func describeBuild(bi *debug.BuildInfo, ok bool) string {
	v := "(devel)"
	var rev, modified string
	if ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if rev != "" {
		fmt.Fprintf(&b, " rev %.12s", rev)
		if modified == "true" {
			b.WriteString(" (modified)")
		}
	}
	return b.String()
}
