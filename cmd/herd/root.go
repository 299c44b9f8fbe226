package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// env gives commands what main would otherwise take from the process.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// run executes the herd command line. Tests call it as main does.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "herd",
		Short:         "Herd is a self-hosted IoT hub that speaks Azure IoT Hub's protocols",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		serveCommand(e),
		connectionStringCommand(e),
		tokenCommand(e),
		deviceCommand(e),
		twinCommand(e),
		jobCommand(e),
		queryCommand(e),
		methodCommand(e),
		monitorCommand(e),
		simCommand(e),
		demoCommand(e),
	)
	return root.ExecuteContext(ctx)
}

// bindEnv lets HERD_<FLAG_NAME> stand in for every flag of cmd that was not
// given on the command line (--https-addr ← HERD_HTTPS_ADDR).
func bindEnv(cmd *cobra.Command, getenv func(string) string) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil || f.Name == "help" {
			return
		}
		name := "HERD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" {
			if e := cmd.Flags().Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
			}
		}
	})
	return err
}
