// Command schedulejob is the back-end program of Azure IoT Hub's "Schedule
// and broadcast jobs" tutorial, written on Herd's Go service SDK
// (github.com/herd-iot/herd/service). Its partner is examples/simdevice,
// the device the jobs reach.
//
// schedulejob checks through the registry that the device exists, then
// schedules two jobs whose query condition selects that device
// (deviceId = '<id>'):
//
//   - a method job that calls lockDoor with the payload {"lockTime":"10m"}
//     and waits up to 60 s for each device's answer;
//   - a twin job that sets the desired properties {"building":43,"floor":3}.
//
// It then reports each job's status and statistics as they change until
// both have ended, and prints each device's record (for the method job,
// the device's answer). It exits with status 1 if a job did not complete
// or a device failed — a method job fails on a device that is not
// connected, so start simdevice first.
//
// Flags, each of which an environment variable can stand in for (a flag
// on the command line wins):
//
//	--connection-string  IOTHUB_CONNECTION_STRING  a service connection string whose policy may read
//	                                               the registry and connect to the service
//	                                               (iothubowner; `service` alone cannot read devices)
//	--device-id          IOTHUB_DEVICE_ID          the device the jobs target
//	--ca                 HERD_CA                   PEM file of CA certificates to trust besides the
//	                                               system's (a Herd hub's ca.pem)
//	--url                HERD_URL                  base URL of the hub's REST API (default
//	                                               https://<HostName>, port 443)
//	--method-job-id, --twin-job-id                 the jobs' ids (default: lockdoor-… and desired-…
//	                                               with 26 random characters)
//	--max-execution-time                           each job's deadline (default 5m)
//
// Against a hub started with `herd serve` in the current folder, with
// simdevice running in another terminal (the README's "The jobs tutorial
// in Go" shows the whole session):
//
//	export IOTHUB_CONNECTION_STRING="$(herd connection-string)"
//	go run ./examples/schedulejob --ca herd-data/ca.pem --device-id myDeviceId
//
// A hub whose REST API is not on port 443 (herd serve --https-addr :8443)
// is reached with --url https://localhost:8443. The SDK speaks Azure IoT
// Hub's REST API, so the program is meant to run against Azure too, with
// the hub's iothubowner connection string and no --ca or --url (not tested
// here).
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/service"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "schedulejob:", err)
		os.Exit(1)
	}
}

// The tutorial's two operations.
const (
	methodName            = "lockDoor"
	methodPayload         = `{"lockTime":"10m"}`
	methodResponseTimeout = 60 // seconds
)

// desired is what the twin job writes into the desired properties.
func desired() map[string]any { return map[string]any{"building": 43, "floor": 3} }

// run schedules the two jobs and follows them to the end. main only calls
// run; tests call it too.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	var opts []service.Option
	if cfg.ca != "" {
		opts = append(opts, service.WithCAFile(cfg.ca))
	}
	if cfg.url != "" {
		opts = append(opts, service.WithEndpoint(cfg.url))
	}
	c, err := service.New(cfg.connectionString, opts...)
	if err != nil {
		return err // it names the connection string's or the CA's problem
	}

	d, err := c.GetDevice(ctx, cfg.deviceID)
	if herd.IsCode(err, herd.ErrDeviceNotFound) {
		return fmt.Errorf("device %q is not in the hub's registry (create it with `herd device create %s`)", cfg.deviceID, cfg.deviceID)
	}
	if err != nil {
		return fmt.Errorf("look up device %q: %w", cfg.deviceID, err)
	}
	fmt.Fprintf(stdout, "Device %s is in the registry (%s, %s).\n", d.DeviceID, d.Status, d.ConnectionState)

	condition := "deviceId = " + quote(cfg.deviceID)
	jobOpts := service.JobOptions{MaxExecutionTime: cfg.maxExecution}
	req := herd.MethodRequest{MethodName: methodName, Payload: json.RawMessage(methodPayload), ResponseTimeoutInSeconds: methodResponseTimeout}
	if _, err := c.ScheduleDeviceMethod(ctx, cfg.methodJobID, condition, req, jobOpts); err != nil {
		return fmt.Errorf("schedule the %s job: %w", methodName, err)
	}
	fmt.Fprintf(stdout, "Scheduled job %s: call %s with %s where %s.\n", cfg.methodJobID, methodName, methodPayload, condition)

	patch := herd.TwinPatch{Properties: &herd.PatchProperties{Desired: desired()}}
	if _, err := c.ScheduleTwinUpdate(ctx, cfg.twinJobID, condition, patch, jobOpts); err != nil {
		return fmt.Errorf("schedule the twin job (the %s job %s is scheduled): %w", methodName, cfg.methodJobID, err)
	}
	want, _ := json.Marshal(desired())
	fmt.Fprintf(stdout, "Scheduled job %s: set desired properties %s where %s.\n", cfg.twinJobID, want, condition)

	errMethod := follow(ctx, c, stdout, cfg.methodJobID)
	if ctx.Err() != nil {
		return interrupted(cfg)
	}
	errTwin := follow(ctx, c, stdout, cfg.twinJobID)
	if ctx.Err() != nil {
		return interrupted(cfg)
	}
	if err := errors.Join(errMethod, errTwin); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Both jobs completed.\n")
	return nil
}

// interrupted explains that stopping schedulejob does not stop its jobs.
func interrupted(cfg config) error {
	return fmt.Errorf("interrupted: jobs %s and %s go on running on the hub (follow them with `herd job watch ID`)", cfg.methodJobID, cfg.twinJobID)
}

// follow prints a job's status and statistics whenever they change until
// the job has ended, then its device records. It fails if the job did not
// complete or a device failed.
func follow(ctx context.Context, c *service.Client, stdout io.Writer, jobID string) error {
	last := ""
	j, err := c.WaitJob(ctx, jobID, func(j *herd.Job) {
		if line := progress(j); line != last {
			fmt.Fprintln(stdout, line)
			last = line
		}
	})
	if err != nil {
		return fmt.Errorf("follow job %s: %w", jobID, err)
	}
	if err := printDevices(ctx, c, stdout, jobID); err != nil {
		return err
	}
	switch s := j.DeviceJobStatistics; {
	case j.Status != herd.JobCompleted:
		return fmt.Errorf("job %s ended %s: %s", jobID, j.Status, j.FailureReason)
	case s != nil && s.FailedCount > 0 && j.Type == herd.JobDeviceMethod:
		return fmt.Errorf("job %s: %d of %d devices failed (a method reaches only connected devices: is simdevice running?)", jobID, s.FailedCount, s.DeviceCount)
	case s != nil && s.FailedCount > 0:
		return fmt.Errorf("job %s: %d of %d devices failed", jobID, s.FailedCount, s.DeviceCount)
	case s == nil || s.DeviceCount == 0:
		return fmt.Errorf("job %s selected no device", jobID)
	}
	return nil
}

// progress is the line that reports a job's state.
func progress(j *herd.Job) string {
	s := j.DeviceJobStatistics
	if s == nil {
		return fmt.Sprintf("Job %s: %s", j.JobID, j.Status)
	}
	return fmt.Sprintf("Job %s: %s, %d device(s): %d succeeded, %d failed, %d running, %d pending",
		j.JobID, j.Status, s.DeviceCount, s.SucceededCount, s.FailedCount, s.RunningCount, s.PendingCount)
}

// printDevices prints the job's record of each device it targeted, read
// with a devices.jobs query.
func printDevices(ctx context.Context, c *service.Client, stdout io.Writer, jobID string) error {
	q := "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = " + quote(jobID)
	for page, err := range c.Query(ctx, q) {
		if err != nil {
			return fmt.Errorf("device records of job %s: %w", jobID, err)
		}
		djs, err := page.DeviceJobs()
		if err != nil {
			return fmt.Errorf("device records of job %s: %w", jobID, err)
		}
		for _, dj := range djs {
			line := fmt.Sprintf("  %s: %s", dj.DeviceID, dj.Status)
			if o := dj.Outcome; o != nil && o.DeviceMethodResponse != nil {
				line += fmt.Sprintf(", %s answered %d %s", methodName, o.DeviceMethodResponse.Status, o.DeviceMethodResponse.Payload)
			}
			if e := dj.Error; e != nil {
				line += fmt.Sprintf(": %s %s", e.Code, e.Description)
			}
			fmt.Fprintln(stdout, line)
		}
	}
	return nil
}

// quote writes s as a string literal of the IoT Hub query language.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// config is schedulejob's configuration, from flags and the environment.
type config struct {
	connectionString string
	deviceID         string
	ca               string
	url              string
	methodJobID      string
	twinJobID        string
	maxExecution     time.Duration
}

// parseFlags reads the command line, then lets each flag's environment
// variable stand in for a flag that was not given.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("schedulejob", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.connectionString, "connection-string", "", "service connection string, HostName=…;SharedAccessKeyName=…;SharedAccessKey=…, with registry read and service connect rights, such as iothubowner's (env IOTHUB_CONNECTION_STRING)")
	fs.StringVar(&c.deviceID, "device-id", "", "`id` of the device the jobs target (env IOTHUB_DEVICE_ID)")
	fs.StringVar(&c.ca, "ca", "", "PEM `file` of CA certificates to trust besides the system's, such as herd-data/ca.pem (env HERD_CA)")
	fs.StringVar(&c.url, "url", "", "base `URL` of the hub's REST API, for a hub not on port 443 (env HERD_URL; default https://<HostName>)")
	fs.StringVar(&c.methodJobID, "method-job-id", "", "`id` of the lockDoor job (default: lockdoor- and 26 random characters)")
	fs.StringVar(&c.twinJobID, "twin-job-id", "", "`id` of the twin job (default: desired- and 26 random characters)")
	fs.DurationVar(&c.maxExecution, "max-execution-time", 5*time.Minute, "each job's deadline, counted from its start")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: schedulejob --device-id ID [flags]\n\nSchedules a lockDoor method job and a desired-properties twin job on one device and follows both to the end.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (schedulejob takes flags only; see -help)", fs.Arg(0))
	}
	if err := fromEnv(fs, getenv, map[string]string{
		"connection-string": "IOTHUB_CONNECTION_STRING",
		"device-id":         "IOTHUB_DEVICE_ID",
		"ca":                "HERD_CA",
		"url":               "HERD_URL",
	}); err != nil {
		return c, err
	}
	switch {
	case c.connectionString == "":
		return c, errors.New("no service connection string: give --connection-string or set IOTHUB_CONNECTION_STRING (`herd connection-string` prints iothubowner's)")
	case c.deviceID == "":
		return c, errors.New("no device: give --device-id or set IOTHUB_DEVICE_ID")
	case c.maxExecution < time.Second:
		return c, fmt.Errorf("--max-execution-time %s: must be at least 1s", c.maxExecution)
	}
	if c.methodJobID == "" {
		c.methodJobID = newJobID("lockdoor")
	}
	if c.twinJobID == "" {
		c.twinJobID = newJobID("desired")
	}
	if c.methodJobID == c.twinJobID {
		return c, fmt.Errorf("--method-job-id and --twin-job-id are both %q: two jobs need two ids", c.methodJobID)
	}
	return c, nil
}

// newJobID returns prefix, a dash and 26 random lower-case letters and
// digits: a job id Azure accepts (at most 64 letters, digits and dashes)
// that no earlier run has used.
func newJobID(prefix string) string { return prefix + "-" + strings.ToLower(rand.Text()) }

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
