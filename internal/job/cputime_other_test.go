//go:build !unix

package job_test

import "time"

// cpuTime is not measured on this system: the benchmarks report 0 CPU.
func cpuTime() time.Duration { return 0 }
