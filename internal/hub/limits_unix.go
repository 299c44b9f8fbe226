//go:build unix

package hub

import (
	"math"
	"syscall"
)

// openFileLimit returns the soft RLIMIT_NOFILE of the process (the Go
// runtime has already raised it to the hard limit at start), or 0 when it
// cannot be read or is unlimited.
func openFileLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	// RLIM_INFINITY is the largest value (or, on some systems, a negative
	// one that converts to a huge unsigned one).
	cur := uint64(rl.Cur)
	if cur > math.MaxInt32 {
		return 0
	}
	return int(cur)
}
