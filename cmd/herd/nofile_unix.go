//go:build unix

package main

import "syscall"

// openFileLimit returns how many files this process may hold open (the
// soft RLIMIT_NOFILE, which Go raises to the hard limit at start-up) and
// whether the system says.
func openFileLimit() (uint64, bool) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, false
	}
	return uint64(l.Cur), true
}
