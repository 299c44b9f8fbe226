package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// row is one line of the report.
type row struct {
	what, store, scale, measured, target string
	// n is the number of device operations of a job (0: not a job), for
	// the comparison columns.
	n int
}

// report collects rows and describes the run.
type report struct {
	cfg       *config
	args      []string
	started   time.Time
	loadStart string
	rows      []row
	ratios    []row // issue 17's ratios: Herd against its limits, same run
	notes     []string
}

func newReport(cfg *config, args []string) *report {
	return &report{cfg: cfg, args: args, started: time.Now(), loadStart: loadAvg()}
}

func (r *report) add(rw row) { r.rows = append(r.rows, rw) }

// ratio records a figure measured against its limit (a peer broker, the
// raw store, the round trips themselves) in the same run; the report
// lists them in a table of their own after the figures.
func (r *report) ratio(rw row) { r.ratios = append(r.ratios, rw) }
func (r *report) note(format string, a ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, a...))
}

// Published throttles the figures are compared with.
const (
	azureS1PerSecond = 10   // job device operations per second, S1
	azureS3PerSecond = 50   // per second per unit, S3
	awsPerMinute     = 1000 // AWS IoT Jobs rollout, devices per minute
)

func (r *report) markdown() string {
	var b strings.Builder
	mode := "full run"
	if r.cfg.quick {
		mode = "quick run"
	}
	fmt.Fprintf(&b, "### Performance budget, %s (`go run ./bench`)\n\n", mode)
	fmt.Fprintf(&b, "- Date: %s – %s UTC\n", r.started.UTC().Format("2006-01-02 15:04"), time.Now().UTC().Format("15:04"))
	fmt.Fprintf(&b, "- Machine: %s\n", machine())
	fmt.Fprintf(&b, "- Load average (1, 5, 15 min) at the start: %s; at the end: %s\n", r.loadStart, loadAvg())
	cmd := "go run ./bench"
	if len(r.args) > 0 {
		cmd += " " + strings.Join(r.args, " ")
	}
	fmt.Fprintf(&b, "- Command: `flock /tmp/herd-bench.lock %s`\n\n", cmd)
	fmt.Fprintln(&b, "| what | store | scale | measured | target | same job, Azure IoT Hub S1 (10 ops/s) | Azure S3, 1 unit (50 ops/s) | AWS IoT Jobs (1,000 devices/min) |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|")
	for _, rw := range r.rows {
		s1, s3, aws := "", "", ""
		if rw.n > 0 {
			s1 = human(time.Duration(float64(rw.n) / azureS1PerSecond * float64(time.Second)))
			s3 = human(time.Duration(float64(rw.n) / azureS3PerSecond * float64(time.Second)))
			aws = human(time.Duration(float64(rw.n) / awsPerMinute * float64(time.Minute)))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", rw.what, rw.store, rw.scale, rw.measured, rw.target, s1, s3, aws)
	}
	if len(r.ratios) > 0 {
		fmt.Fprintln(&b)
		fmt.Fprintln(&b, "Against the limits, same run:")
		fmt.Fprintln(&b)
		fmt.Fprintln(&b, "| ratio | store | scale | measured | target |")
		fmt.Fprintln(&b, "|---|---|---|---|---|")
		for _, rw := range r.ratios {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", rw.what, rw.store, rw.scale, rw.measured, rw.target)
		}
	}
	if len(r.notes) > 0 {
		fmt.Fprintln(&b)
		for _, n := range r.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	fmt.Fprintln(&b)
	return b.String()
}

// human prints a long duration in the largest sensible units.
func human(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%.0f s", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%.0f min", d.Minutes())
	case d < 48*time.Hour:
		return fmt.Sprintf("%.1f h", d.Hours())
	}
	return fmt.Sprintf("%.1f days", d.Hours()/24)
}

// seconds prints a short duration.
func seconds(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// count prints n with thousands separators.
func count(n int) string {
	s := fmt.Sprint(n)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}

// machine describes the CPU, memory and Go of this machine.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				var kb int64
				fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
				mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
			}
		}
	}
	return fmt.Sprintf("%s, %d cores%s; %s %s/%s", cpu, runtime.NumCPU(), mem, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
