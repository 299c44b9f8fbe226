package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/service"
)

func jobCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := group(&cobra.Command{
		Use:   "job",
		Short: "Schedule, watch and cancel jobs: a direct method or a twin update on every device a query selects",
	})
	cf.register(cmd)
	cmd.AddCommand(scheduleMethodCommand(e, &cf), scheduleTwinCommand(e, &cf),
		jobShowCommand(e, &cf), jobListCommand(e, &cf), jobCancelCommand(e, &cf),
		jobPauseCommand(e, &cf), jobResumeCommand(e, &cf), jobWatchCommand(e, &cf))
	return cmd
}

// scheduleFlags are the flags both scheduling commands share.
type scheduleFlags struct {
	query   string
	start   string
	maxTime time.Duration
	wait    bool
	abort   []string
	failed  string
	rate    int64
	ramp    string
	waves   []float64
	pause   bool
	preview bool
	cont    bool
	// Method jobs only.
	retry        []string
	retryBackoff time.Duration
	retryFactor  float64
}

// registerRetry adds the retry flags (method jobs).
func (f *scheduleFlags) registerRetry(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&f.retry, "retry", nil, "call a device again after a failure: TYPE:MAX-ATTEMPTS, TYPE one of Failed, TimedOut, DeviceNotOnline, Any (repeatable; e.g. DeviceNotOnline:5; the first call counts as one attempt)")
	cmd.Flags().DurationVar(&f.retryBackoff, "retry-backoff", 0, "wait this long before a device's first retry (default: 30s; whole seconds)")
	cmd.Flags().Float64Var(&f.retryFactor, "retry-factor", 0, "multiply the wait by this after each retry (default: 2)")
}

func (f *scheduleFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.query, "query", "q", "", `required: which devices, the WHERE part of a twin query, or "*" for every device`)
	cmd.Flags().StringVar(&f.start, "start", "", "when to start: an ISO 8601 time, or a delay such as 10m (default: now)")
	cmd.Flags().DurationVar(&f.maxTime, "max-time", 0, "the job's deadline after its start (default: 1h); devices not done by then fail")
	cmd.Flags().BoolVar(&f.preview, "preview", false, "first show what the job would do (devices, connected, a sample, how long) and, on a terminal, ask before scheduling it; elsewhere only show it")
	cmd.Flags().BoolVar(&f.wait, "wait", false, "watch the job until it ends (like herd job watch); exit non-zero unless every device succeeded")
	cmd.Flags().Int64Var(&f.rate, "rate", 0, "start at most this many devices a minute (the cap of --ramp, if both are given)")
	cmd.Flags().StringVar(&f.ramp, "ramp", "", "ramp the rate up: BASE:FACTOR:EVERY starts at BASE devices a minute and multiplies the rate by FACTOR each time EVERY more devices succeed (e.g. 50:2:1000)")
	cmd.Flags().StringVar(&f.failed, "abort-failed", "", "abort the job once this share of the devices executed failed in any way (e.g. 10%; short for --abort Any:10)")
	cmd.Flags().Float64SliceVar(&f.waves, "waves", nil, "roll out in waves: cumulative percentages of the devices, e.g. 1,10,100 (each wave starts when the one before has finished)")
	cmd.Flags().BoolVar(&f.pause, "pause-between-waves", false, "pause the job after each wave until herd job resume")
	cmd.Flags().BoolVar(&f.cont, "continuous", false, "keep the job running until its deadline (--max-time): a device that starts matching --query later (created, tagged, changed) is targeted too, once")
	cmd.Flags().StringArrayVar(&f.abort, "abort", nil, "abort the job when failures reach a share: TYPE:PERCENT[:MIN-EXECUTED], TYPE one of Failed, TimedOut, DeviceNotOnline, Any (repeatable; e.g. Any:10:100)")
}

// scheduleLong is the help both scheduling commands share.
const scheduleLong = `
--query is required: the job runs on every device its condition selects
when the job starts, so there is no default — write --query "*" to target
every device.

With --wait the command follows the job to its end and exits non-zero if
the job failed or was cancelled, or if any device failed (a job that ran
to its end is "completed" even when some devices failed).`

func (f *scheduleFlags) options(now time.Time) (service.JobOptions, error) {
	if f.query == "" {
		return service.JobOptions{}, fmt.Errorf(`--query is required: the WHERE part of a twin query (--query "tags.building = 43"), or --query "*" for every device`)
	}
	opts := service.JobOptions{MaxExecutionTime: f.maxTime}
	if f.rate != 0 || f.ramp != "" || len(f.waves) > 0 || f.pause {
		ro := &herd.Rollout{MaxPerMinute: f.rate, PauseBetweenWaves: f.pause}
		for _, p := range f.waves {
			ro.Waves = append(ro.Waves, herd.Wave{Percent: p})
		}
		if f.ramp != "" {
			e, err := parseRampFlag(f.ramp)
			if err != nil {
				return opts, err
			}
			ro.Exponential = e
		}
		opts.Herd = &herd.JobOptions{Rollout: ro}
	}
	abort := f.abort
	if f.failed != "" {
		abort = append([]string{"Any:" + f.failed}, abort...)
	}
	for _, a := range abort {
		c, err := parseAbortFlag(a)
		if err != nil {
			return opts, err
		}
		if opts.Herd == nil {
			opts.Herd = &herd.JobOptions{}
		}
		if opts.Herd.Abort == nil {
			opts.Herd.Abort = &herd.AbortPolicy{}
		}
		opts.Herd.Abort.Criteria = append(opts.Herd.Abort.Criteria, c)
	}
	if len(f.retry) > 0 || f.retryBackoff != 0 || f.retryFactor != 0 {
		if len(f.retry) == 0 {
			return opts, fmt.Errorf("--retry-backoff and --retry-factor need --retry TYPE:MAX-ATTEMPTS")
		}
		// Zero figures are left out: the hub's defaults.
		p := &herd.RetryPolicy{BackoffSeconds: f.retryBackoff.Seconds(), BackoffFactor: f.retryFactor}
		for _, v := range f.retry {
			c, err := parseRetryFlag(v)
			if err != nil {
				return opts, err
			}
			p.Criteria = append(p.Criteria, c)
		}
		if opts.Herd == nil {
			opts.Herd = &herd.JobOptions{}
		}
		opts.Herd.Retry = p
	}
	if f.cont {
		if opts.Herd == nil {
			opts.Herd = &herd.JobOptions{}
		}
		opts.Herd.Continuous = true
	}
	if f.start != "" {
		if d, err := time.ParseDuration(strings.TrimPrefix(f.start, "+")); err == nil {
			opts.StartTime = now.Add(d)
		} else if t, err := herd.ParseTime(f.start); err == nil && !t.IsZero() {
			opts.StartTime = t.Time
		} else {
			return opts, fmt.Errorf("--start %q: give an ISO 8601 time (2026-11-26T10:00:00Z) or a delay (10m)", f.start)
		}
	}
	return opts, nil
}

// parseRampFlag reads a --ramp value, BASE:FACTOR:EVERY; the hub checks
// the figures.
func parseRampFlag(v string) (*herd.ExponentialRate, error) {
	bad := fmt.Errorf("--ramp %q: write BASE:FACTOR:EVERY, e.g. 50:2:1000 (start at 50 devices a minute, double the rate each time 1000 more succeed)", v)
	parts := strings.Split(v, ":")
	if len(parts) != 3 {
		return nil, bad
	}
	base, err1 := strconv.ParseInt(parts[0], 10, 64)
	factor, err2 := strconv.ParseFloat(parts[1], 64)
	every, err3 := strconv.ParseInt(parts[2], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, bad
	}
	return &herd.ExponentialRate{BaseRatePerMinute: base, IncrementFactor: factor,
		RateIncreaseCriteria: herd.RateIncreaseCriteria{NumberOfSucceededDevices: every}}, nil
}

// parseAbortFlag reads an --abort value, TYPE:PERCENT[:MIN-EXECUTED]; the
// hub checks the figures.
func parseAbortFlag(v string) (herd.AbortCriterion, error) {
	c := herd.AbortCriterion{MinExecutedDevices: 1}
	parts := strings.Split(v, ":")
	bad := fmt.Errorf("--abort %q: write TYPE:PERCENT[:MIN-EXECUTED], e.g. Any:10 or Failed:5:100 (TYPE: Failed, TimedOut, DeviceNotOnline, Any)", v)
	if len(parts) < 2 || len(parts) > 3 {
		return c, bad
	}
	c.FailureType = herd.FailureType(parts[0])
	p, err := strconv.ParseFloat(strings.TrimSuffix(parts[1], "%"), 64)
	if err != nil {
		return c, bad
	}
	c.ThresholdPercentage = p
	if len(parts) == 3 {
		if c.MinExecutedDevices, err = strconv.ParseInt(parts[2], 10, 64); err != nil {
			return c, bad
		}
	}
	return c, nil
}

// parseRetryFlag reads a --retry value, TYPE:MAX-ATTEMPTS; the hub checks
// the figures.
func parseRetryFlag(v string) (herd.RetryCriterion, error) {
	var c herd.RetryCriterion
	typ, n, ok := strings.Cut(v, ":")
	max, err := strconv.Atoi(n)
	if !ok || err != nil {
		return c, fmt.Errorf("--retry %q: write TYPE:MAX-ATTEMPTS, e.g. DeviceNotOnline:5 (TYPE: Failed, TimedOut, DeviceNotOnline, Any)", v)
	}
	return herd.RetryCriterion{FailureType: herd.FailureType(typ), MaxAttempts: max}, nil
}

// previewFirst shows the preview with --preview and says whether to
// schedule: on a terminal the user is asked; elsewhere nothing is
// scheduled. Without --preview it says yes at once.
func (f *scheduleFlags) previewFirst(ctx context.Context, e *env, cf *clientFlags, id string, get func() (*herd.JobPreview, error)) (bool, error) {
	if !f.preview {
		return true, nil
	}
	p, err := get()
	if err != nil {
		return false, err
	}
	if err := printPreview(e, cf, p); err != nil {
		return false, err
	}
	if !isTerminal(e.stdin) || !isTerminal(e.stdout) {
		fmt.Fprintln(e.stderr, "--preview without a terminal: nothing was scheduled")
		return false, nil
	}
	return confirm(e.stdin, e.stdout, fmt.Sprintf("Schedule job %s on these %d devices? [y/N] ", id, p.DeviceCount)), nil
}

// confirm asks a yes/no question; only y or yes (any case) is yes.
func confirm(r io.Reader, w io.Writer, question string) bool {
	fmt.Fprint(w, question)
	line, _ := bufio.NewReader(r).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}

// printPreview prints a job preview as JSON or as a short summary.
func printPreview(e *env, cf *clientFlags, p *herd.JobPreview) error {
	if cf.output == "json" {
		return printJSON(e, p)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "Devices:\t%d (%d connected, %d not)\nSample:\t%s\nDuration:\tabout %s (at worst %s)\nEstimate:\t%s\n",
		p.DeviceCount, p.ConnectedCount, p.DisconnectedCount, strings.Join(p.SampleDeviceIDs, " "),
		time.Duration(p.EstimatedDurationInSeconds*float64(time.Second)).Round(time.Millisecond),
		time.Duration(p.MaxDurationInSeconds*float64(time.Second)).Round(time.Millisecond), p.Estimate)
	return w.Flush()
}

// after prints a new job, then watches it with --wait.
func (f *scheduleFlags) after(ctx context.Context, e *env, c *service.Client, cf *clientFlags, j *herd.Job) error {
	if !f.wait {
		return printJob(e, cf, j)
	}
	return watch(ctx, e, c, j.JobID)
}

func scheduleMethodCommand(e *env, cf *clientFlags) *cobra.Command {
	var sf scheduleFlags
	var req herd.MethodRequest
	var payload string
	cmd := &cobra.Command{
		Use:   "schedule-method JOB-ID --method NAME",
		Short: "Schedule a direct-method call on every device the query selects",
		Long:  "Schedule a direct-method call on every device the query selects.\n" + scheduleLong,
		Example: `  herd job schedule-method reboot-north --method reboot --payload '{"delay":5}' \
      --query "tags.site = 'north'" --connect-timeout 60 --wait`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.MethodName == "" {
				return fmt.Errorf("--method is required")
			}
			if payload != "" {
				if !json.Valid([]byte(payload)) {
					return fmt.Errorf("--payload: not JSON: %s", payload)
				}
				req.Payload = json.RawMessage(payload)
			}
			opts, err := sf.options(time.Now())
			if err != nil {
				return err
			}
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			ok, err := sf.previewFirst(cmd.Context(), e, cf, args[0], func() (*herd.JobPreview, error) {
				return c.PreviewDeviceMethod(cmd.Context(), args[0], sf.query, req, opts, 0)
			})
			if err != nil || !ok {
				return err
			}
			j, err := c.ScheduleDeviceMethod(cmd.Context(), args[0], sf.query, req, opts)
			if err != nil {
				return err
			}
			return sf.after(cmd.Context(), e, c, cf, j)
		},
	}
	sf.register(cmd)
	sf.registerRetry(cmd)
	cmd.Flags().StringVar(&req.MethodName, "method", "", "the method name")
	cmd.Flags().StringVar(&payload, "payload", "", "the method payload, as JSON (default: null)")
	cmd.Flags().IntVar(&req.ResponseTimeoutInSeconds, "response-timeout", 30, "seconds each device has to answer (5 to 300)")
	cmd.Flags().IntVar(&req.ConnectTimeoutInSeconds, "connect-timeout", 0, "seconds to wait for an offline device to connect (0 to 300; 0 fails offline devices at once)")
	return cmd
}

func scheduleTwinCommand(e *env, cf *clientFlags) *cobra.Command {
	var sf scheduleFlags
	var pf patchFlags
	cmd := &cobra.Command{
		Use:   "schedule-twin JOB-ID [--tags JSON] [--desired JSON]",
		Short: "Schedule a twin update (tags and/or desired properties; null deletes a key) on every device the query selects",
		Long:  "Schedule a twin update (tags and/or desired properties; null deletes a key) on every device the query selects.\n" + scheduleLong,
		Example: `  herd job schedule-twin fw-2 --desired '{"fw":"2.0"}' --query "tags.ring = 'canary'" --wait
  herd job schedule-twin night --tags '{"window":"night"}' --query "*" --start 2026-11-27T02:00:00Z`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := pf.patch()
			if err != nil {
				return err
			}
			opts, err := sf.options(time.Now())
			if err != nil {
				return err
			}
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			ok, err := sf.previewFirst(cmd.Context(), e, cf, args[0], func() (*herd.JobPreview, error) {
				return c.PreviewTwinUpdate(cmd.Context(), args[0], sf.query, p, opts, 0)
			})
			if err != nil || !ok {
				return err
			}
			j, err := c.ScheduleTwinUpdate(cmd.Context(), args[0], sf.query, p, opts)
			if err != nil {
				return err
			}
			return sf.after(cmd.Context(), e, c, cf, j)
		},
	}
	sf.register(cmd)
	pf.register(cmd)
	return cmd
}

func jobShowCommand(e *env, cf *clientFlags) *cobra.Command {
	return jobCallCommand(e, cf, "show JOB-ID", "Show a job: its status and device statistics", (*service.Client).GetJob)
}

// jobCallCommand is a command that makes one call on the job its argument
// names and prints the job the call answers with.
func jobCallCommand(e *env, cf *clientFlags, use, short string,
	call func(*service.Client, context.Context, string) (*herd.Job, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			j, err := call(c, cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJob(e, cf, j)
		},
	}
}

func jobListCommand(e *env, cf *clientFlags) *cobra.Command {
	var typ, status string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List jobs (kept 30 days after they end)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			jobs, err := c.ListJobs(cmd.Context(), service.JobFilter{Type: herd.JobType(typ), Status: herd.JobStatus(status)})
			if err != nil {
				return err
			}
			if cf.output == "json" {
				return printJSON(e, jobs)
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "JOB ID\tTYPE\tSTATUS\tDEVICES\tSUCCEEDED\tFAILED\tRUNNING\tPENDING\tSTART\tEND")
			for _, j := range jobs {
				st := j.DeviceJobStatistics
				if st == nil {
					st = &herd.DeviceJobStatistics{}
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", j.JobID, j.Type, j.Status, st.DeviceCount,
					st.SucceededCount, st.FailedCount, st.RunningCount, st.PendingCount, timeOf(j.StartTime), timeOf(j.EndTime))
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&typ, "type", "", "only jobs of this type: scheduleDeviceMethod or scheduleUpdateTwin")
	cmd.Flags().StringVar(&status, "status", "", "only jobs in this status: queued, scheduled, running, paused, completed, failed or cancelled")
	return cmd
}

func jobCancelCommand(e *env, cf *clientFlags) *cobra.Command {
	return jobCallCommand(e, cf, "cancel JOB-ID", "Cancel a job: pending devices are canceled, running ones finish", (*service.Client).CancelJob)
}

func jobPauseCommand(e *env, cf *clientFlags) *cobra.Command {
	return jobCallCommand(e, cf, "pause JOB-ID", "Pause a job: no more devices start until it is resumed; calls in flight finish, the deadline keeps running", (*service.Client).PauseJob)
}

func jobResumeCommand(e *env, cf *clientFlags) *cobra.Command {
	return jobCallCommand(e, cf, "resume JOB-ID", "Resume a paused job from its pending devices", (*service.Client).ResumeJob)
}

func jobWatchCommand(e *env, cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "watch JOB-ID",
		Short: "Follow a job until it ends, with a live progress bar (plain lines when not on a terminal)",
		Long: `Follow a job until it ends, with a live progress bar (plain lines when not
on a terminal). Exits non-zero if the job failed or was cancelled, or if
any device failed: a job that ran to its end is "completed" even when some
devices failed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			return watch(cmd.Context(), e, c, args[0])
		},
	}
}

func timeOf(t *herd.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

// printJob prints a job as JSON or as a short summary.
func printJob(e *env, cf *clientFlags, j *herd.Job) error {
	if cf.output == "json" {
		return printJSON(e, j)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "Job:\t%s\nType:\t%s\nStatus:\t%s\nQuery:\t%s\nCreated:\t%s\nStart:\t%s\nEnd:\t%s\nMax time:\t%ds\n",
		j.JobID, j.Type, j.Status, j.QueryCondition, timeOf(j.CreatedTime), timeOf(j.StartTime), timeOf(j.EndTime), j.MaxExecutionTimeInSeconds)
	if st := j.DeviceJobStatistics; st != nil {
		fmt.Fprintf(w, "Devices:\t%d (succeeded %d, failed %d, running %d, pending %d)\n",
			st.DeviceCount, st.SucceededCount, st.FailedCount, st.RunningCount, st.PendingCount)
	}
	if j.Herd != nil && j.Herd.Rollout != nil {
		ro := j.Herd.Rollout
		if e := ro.Exponential; e != nil {
			fmt.Fprintf(w, "Rollout:\t%d devices a minute, times %s each %d that succeed", e.BaseRatePerMinute,
				strconv.FormatFloat(e.IncrementFactor, 'f', -1, 64), e.RateIncreaseCriteria.NumberOfSucceededDevices)
			if ro.MaxPerMinute > 0 {
				fmt.Fprintf(w, ", up to %d", ro.MaxPerMinute)
			}
			fmt.Fprintln(w)
		} else if ro.MaxPerMinute > 0 {
			fmt.Fprintf(w, "Rollout:\t%d devices a minute\n", ro.MaxPerMinute)
		}
		if len(ro.Waves) > 0 {
			var pct []string
			for _, wv := range ro.Waves {
				pct = append(pct, strconv.FormatFloat(wv.Percent, 'f', -1, 64)+"%")
			}
			fmt.Fprintf(w, "Waves:\t%s", strings.Join(pct, ", "))
			if ro.PauseBetweenWaves {
				fmt.Fprint(w, ", pausing between waves")
			}
			if hs := j.HerdStatus; hs != nil {
				fmt.Fprintf(w, " (now wave %d of %d)", hs.Wave, hs.Waves)
			}
			fmt.Fprintln(w)
		}
	}
	if j.Herd != nil && j.Herd.Abort != nil {
		for _, c := range j.Herd.Abort.Criteria {
			fmt.Fprintf(w, "Abort:\t%s at %s%% of at least %d executed\n", c.FailureType,
				strconv.FormatFloat(c.ThresholdPercentage, 'f', -1, 64), c.MinExecutedDevices)
		}
	}
	if j.Herd != nil && j.Herd.Retry != nil {
		p := j.Herd.Retry
		for _, c := range p.Criteria {
			fmt.Fprintf(w, "Retry:\t%s up to %d attempts, waiting %ss times %s\n", c.FailureType, c.MaxAttempts,
				strconv.FormatFloat(p.BackoffSeconds, 'f', -1, 64), strconv.FormatFloat(p.BackoffFactor, 'f', -1, 64))
		}
	}
	if j.Herd != nil && j.Herd.Continuous {
		fmt.Fprintln(w, "Continuous:\tuntil its deadline, devices that start matching the query are targeted too")
	}
	if j.StatusMessage != "" {
		fmt.Fprintf(w, "Message:\t%s\n", j.StatusMessage)
	}
	if j.FailureReason != "" {
		fmt.Fprintf(w, "Failure:\t%s\n", j.FailureReason)
	}
	return w.Flush()
}

// isTerminal reports whether w is an interactive terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// watch follows a job until it ends: on a terminal with a progress bar
// (done of total devices, rate, ETA, and the succeeded/failed/pending
// split), otherwise with one plain line per change. It fails if the job
// failed or was cancelled, or if any device failed (canceled devices
// count as failed, docs/jobs.md).
func watch(ctx context.Context, e *env, c *service.Client, id string) error {
	var bar *progressbar.ProgressBar
	last := ""
	j, err := c.WaitJob(ctx, id, func(j *herd.Job) {
		st := jobStats(j)
		desc := jobDescription(j)
		if !isTerminal(e.stdout) {
			if desc != last {
				fmt.Fprintln(e.stdout, jobLine(j))
				last = desc
			}
			return
		}
		if bar == nil && st.DeviceCount > 0 {
			bar = newJobBar(st.DeviceCount, e.stdout, progressbar.OptionFullWidth())
		}
		if bar != nil {
			bar.Describe(desc)
			_ = bar.Set64(st.SucceededCount + st.FailedCount)
		} else if desc != last {
			fmt.Fprintf(e.stdout, "%s  %s\n", j.JobID, desc)
			last = desc
		}
	})
	if bar != nil {
		_ = bar.Exit()
		fmt.Fprintln(e.stdout)
	}
	if err != nil {
		return err
	}
	st := jobStats(j)
	took := max(j.EndTime.Sub(j.StartTime.Time), 0).Round(time.Millisecond)
	fmt.Fprintf(e.stdout, "%s %s: %d devices, %d succeeded, %d failed, in %s\n", j.JobID, j.Status,
		st.DeviceCount, st.SucceededCount, st.FailedCount, took)
	switch {
	case j.Status == herd.JobFailed:
		return fmt.Errorf("job %s failed: %s", j.JobID, j.FailureReason)
	case j.Status == herd.JobCancelled:
		return fmt.Errorf("job %s was cancelled: %d of %d devices did not succeed", j.JobID, st.FailedCount, st.DeviceCount)
	case st.FailedCount > 0:
		return fmt.Errorf("job %s completed, but %d of %d devices failed (their outcomes: herd query \"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '%s' AND devices.jobs.status != 'completed'\")",
			j.JobID, st.FailedCount, st.DeviceCount, j.JobID)
	}
	return nil
}

// jobStats returns a job's statistics (zero before the hub has any).
func jobStats(j *herd.Job) *herd.DeviceJobStatistics {
	if j.DeviceJobStatistics == nil {
		return &herd.DeviceJobStatistics{}
	}
	return j.DeviceJobStatistics
}

// jobDescription is a job's status and device split, as progress shows it.
func jobDescription(j *herd.Job) string {
	st := jobStats(j)
	d := fmt.Sprintf("%s  %d succeeded  %d failed  %d running  %d pending", j.Status, st.SucceededCount, st.FailedCount, st.RunningCount, st.PendingCount)
	if hs := j.HerdStatus; hs != nil {
		d += fmt.Sprintf("  wave %d/%d", hs.Wave, hs.Waves)
	}
	return d
}

// jobLine is a job's progress as one plain line (for output that is not a
// terminal): id, description, devices done and the rate since the job
// started on the hub.
func jobLine(j *herd.Job) string {
	st := jobStats(j)
	done := st.SucceededCount + st.FailedCount
	return fmt.Sprintf("%s  %s  %d/%d devices  %.0f devices/s", j.JobID, jobDescription(j), done, st.DeviceCount, jobRate(j, done))
}

// jobRate is devices done per second since the job started (until it
// ended); 0 before it starts.
func jobRate(j *herd.Job, done int64) float64 {
	if j.StartTime == nil {
		return 0
	}
	end := time.Now()
	if j.EndTime != nil {
		end = j.EndTime.Time
	}
	secs := end.Sub(j.StartTime.Time).Seconds()
	if secs <= 0 {
		return 0
	}
	return float64(done) / max(secs, 0.001)
}

// newJobBar is the progress bar of a job over total devices, written to w
// (herd job watch, herd demo).
func newJobBar(total int64, w io.Writer, extra ...progressbar.Option) *progressbar.ProgressBar {
	return progressbar.NewOptions64(total, append([]progressbar.Option{
		progressbar.OptionSetWriter(w),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("devices"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionThrottle(100 * time.Millisecond),
	}, extra...)...)
}
