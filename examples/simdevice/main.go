// Command simdevice is a simulated door lock: the device program of Azure
// IoT Hub's "Schedule and broadcast jobs" tutorial, written on Herd's Go
// device SDK (github.com/herd-iot/herd/device). Its partner is
// examples/schedulejob, which schedules jobs that reach it.
//
// simdevice connects to the hub with a device identity over MQTT on TLS,
// answers the direct method lockDoor — it prints "Locking Door!" and
// replies 200 with {"Response":"lockDoor called successfully"} — and
// prints every change of its desired properties. It runs until it is
// interrupted (Ctrl-C or SIGTERM), reconnecting by itself if the
// connection drops.
//
// Flags, each of which an environment variable can stand in for (a flag
// on the command line wins):
//
//	--connection-string  IOTHUB_DEVICE_CONNECTION_STRING  the device's connection string
//	--ca                 HERD_CA                          PEM file of CA certificates to trust
//	                                                      besides the system's (a Herd hub's ca.pem)
//	--address            HERD_DEVICE_ADDRESS              host:port of the hub's MQTT-over-TLS
//	                                                      listener (default: the connection
//	                                                      string's GatewayHostName, else its
//	                                                      HostName on port 8883)
//
// Against a hub started with `herd serve` in the current folder (the
// README's "The jobs tutorial in Go" shows the whole session):
//
//	herd device create myDeviceId
//	export IOTHUB_DEVICE_CONNECTION_STRING="$(herd connection-string --device myDeviceId)"
//	go run ./examples/simdevice --ca herd-data/ca.pem
//
// A hub whose MQTT listener is not on port 8883 (herd serve --mqtt-addr
// :18883) is reached with --address localhost:18883, or by adding
// ";GatewayHostName=localhost:18883" to the connection string. The SDK
// speaks Azure IoT Hub's MQTT dialect, so the program is meant to run
// against Azure too, with the device's connection string from the Azure
// portal and no --ca (not tested here).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/herd-iot/herd/device"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "simdevice:", err)
		os.Exit(1)
	}
}

// lockDoorResponse is the payload of simdevice's answer to lockDoor.
type lockDoorResponse struct {
	Response string `json:"Response"`
}

// run connects the device and serves it until ctx ends. main only calls
// run; tests call it too.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	opts := []device.Option{device.WithLogger(slog.New(slog.NewTextHandler(stderr, nil)))}
	if cfg.ca != "" {
		opts = append(opts, device.WithCAFile(cfg.ca))
	}
	if cfg.address != "" {
		opts = append(opts, device.WithAddress(cfg.address))
	}
	c, err := device.New(cfg.connectionString, opts...)
	if err != nil {
		return err // it names the connection string's or the CA's problem
	}
	out := &printer{w: stdout}

	// Handlers are registered before Connect, so the first connection
	// already subscribes to methods and desired-property changes.
	c.OnMethod("lockDoor", func(ctx context.Context, payload json.RawMessage) (int, any) {
		out.printf("Locking Door!\n")
		out.printf("  lockDoor payload: %s; answering 200 {\"Response\":\"lockDoor called successfully\"}\n", compact(payload))
		return 200, lockDoorResponse{Response: "lockDoor called successfully"}
	})
	c.OnDesiredChange(func(patch map[string]any, version int64) {
		b, err := json.Marshal(patch)
		if err != nil {
			b = fmt.Appendf(nil, "%v", patch)
		}
		out.printf("Desired properties changed (version %d): %s\n", version, b)
	})

	if err := c.Connect(ctx); err != nil {
		c.Close()
		return err
	}
	out.printf("Device %s connected. Waiting for the lockDoor method and desired-property updates (Ctrl-C to stop).\n", c.DeviceID())
	<-ctx.Done()
	c.Close()
	out.printf("Disconnected.\n")
	return nil
}

// config is simdevice's configuration, from flags and the environment.
type config struct {
	connectionString string
	ca               string
	address          string
}

// parseFlags reads the command line, then lets each flag's environment
// variable stand in for a flag that was not given.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("simdevice", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.connectionString, "connection-string", "", "the device's connection string, HostName=…;DeviceId=…;SharedAccessKey=… (env IOTHUB_DEVICE_CONNECTION_STRING)")
	fs.StringVar(&c.ca, "ca", "", "PEM `file` of CA certificates to trust besides the system's, such as herd-data/ca.pem (env HERD_CA)")
	fs.StringVar(&c.address, "address", "", "`host:port` of the hub's MQTT-over-TLS listener (env HERD_DEVICE_ADDRESS; default: GatewayHostName or HostName, port 8883)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: simdevice [flags]\n\nA simulated door lock that answers the lockDoor direct method and prints desired-property changes.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (simdevice takes flags only; see -help)", fs.Arg(0))
	}
	if err := fromEnv(fs, getenv, map[string]string{
		"connection-string": "IOTHUB_DEVICE_CONNECTION_STRING",
		"ca":                "HERD_CA",
		"address":           "HERD_DEVICE_ADDRESS",
	}); err != nil {
		return c, err
	}
	if c.connectionString == "" {
		return c, errors.New("no device connection string: give --connection-string or set IOTHUB_DEVICE_CONNECTION_STRING (`herd connection-string --device ID` prints one)")
	}
	return c, nil
}

// fromEnv sets every flag of fs that the command line did not set from
// its environment variable in env, if that is not empty.
func fromEnv(fs *flag.FlagSet, getenv func(string) string, env map[string]string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name, ok := env[f.Name]
		if !ok || given[f.Name] || err != nil {
			return
		}
		if v := getenv(name); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", name, e)
			}
		}
	})
	return err
}

// compact returns JSON without insignificant white space, or the bytes as
// they are if they are not JSON.
func compact(b []byte) []byte {
	if len(b) == 0 {
		return []byte("null")
	}
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}

// printer serialises the lines that handlers on different goroutines
// print.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format, args...)
}
