package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// env gives commands what main would otherwise take from the process.
type env struct {
	// lookupEnv is os.LookupEnv or a test's stand-in: it tells a variable
	// set to "" from one not set.
	lookupEnv func(string) (string, bool)
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
}

// run executes the herd command line. Tests call it as main does, with
// their own lookupEnv (os.LookupEnv in main).
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{lookupEnv: lookupEnv, stdin: stdin, stdout: stdout, stderr: stderr}
	root := group(&cobra.Command{
		Use:           "herd",
		Short:         "Herd is a self-hosted IoT hub that speaks Azure IoT Hub's protocols",
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	})
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		serveCommand(e),
		connectionStringCommand(e),
		tokenCommand(e),
		deviceCommand(e),
		moduleCommand(e),
		clusterCommand(e),
		caCommand(e),
		configurationCommand(e),
		certCommand(e),
		twinCommand(e),
		jobCommand(e),
		queryCommand(e),
		methodCommand(e),
		monitorCommand(e),
		simCommand(e),
		demoCommand(e),
		storeCommand(e),
		versionCommand(e),
	)
	return explain(root.ExecuteContext(ctx))
}

// noHubError is a REST call that found nothing listening at the hub's
// address. Its message replaces the dial error; Unwrap keeps it.
type noHubError struct {
	base string // scheme and host of the URL, such as https://localhost
	err  error
}

func (e *noHubError) Error() string {
	return fmt.Sprintf("no hub answers at %s (is `herd serve` running?)", e.base)
}

func (e *noHubError) Unwrap() error { return e.err }

// explain turns a refused connection to the REST API into a noHubError
// (other errors pass unchanged).
func explain(err error) error {
	var ue *url.Error
	if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &ue) {
		return err
	}
	u, perr := url.Parse(ue.URL)
	if perr != nil || u.Host == "" {
		return err
	}
	return &noHubError{base: u.Scheme + "://" + u.Host, err: err}
}

// group makes cmd, a command that only holds subcommands, print its help
// when called alone and refuse anything else as an unknown command, with
// suggestions. (Cobra checks for unknown commands only at the root, and a
// group without a Run prints its help and succeeds: `herd device creat`
// would exit 0.)
func group(cmd *cobra.Command) *cobra.Command {
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		return unknownCommand(cmd, args[0])
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	return cmd
}

// unknownCommand is the error for a subcommand of cmd that does not exist:
// `unknown command "creat" for "herd device"; did you mean "create"?`.
func unknownCommand(cmd *cobra.Command, name string) error {
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	msg := fmt.Sprintf("unknown command %q for %q", name, cmd.CommandPath())
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		quoted := make([]string, len(s))
		for i, n := range s {
			quoted[i] = fmt.Sprintf("%q", n)
		}
		msg += "; did you mean " + strings.Join(quoted, " or ") + "?"
	}
	return fmt.Errorf("%s (`%s --help` lists the commands)", msg, cmd.CommandPath())
}

// bindEnv lets HERD_<FLAG_NAME> stand in for every flag of cmd that was not
// given on the command line (--https-addr ← HERD_HTTPS_ADDR). A variable
// set to "" counts only for the flags where "" means something (allowEmpty:
// --mqtt-addr "" turns MQTT off); for the others an empty variable is
// treated as unset, as the environment of containers and CI jobs often
// holds empty values for settings that were not meant to be set.
func bindEnv(cmd *cobra.Command, lookupEnv func(string) (string, bool)) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil || f.Name == "help" {
			return
		}
		name := envName(f.Name)
		v, ok := lookupEnv(name)
		if !ok || (v == "" && f.Annotations[emptyMeans] == nil) {
			return
		}
		if e := cmd.Flags().Set(f.Name, v); e != nil {
			err = fmt.Errorf("%s=%q: %w", name, v, e)
		}
	})
	return err
}

// envName is the environment variable of a flag: HERD_HTTPS_ADDR for
// --https-addr.
func envName(flag string) string {
	return "HERD_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// emptyMeans is the annotation of flags whose HERD_* variable counts when
// set to "".
const emptyMeans = "herd_env_empty"

// allowEmpty marks flags of fs for which "" is a meaningful value, so that
// their HERD_* variable set to "" counts (HERD_MQTT_ADDR="" turns MQTT off
// as --mqtt-addr "" does).
func allowEmpty(fs *pflag.FlagSet, names ...string) {
	for _, n := range names {
		if err := fs.SetAnnotation(n, emptyMeans, []string{"true"}); err != nil {
			panic(err) // a programming error: no such flag
		}
	}
}
