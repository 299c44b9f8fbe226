//go:build !unix

package main

// openFileLimit reports no limit where the system has no RLIMIT_NOFILE
// (Windows): the demo then connects its devices over sockets.
func openFileLimit() (uint64, bool) { return 0, false }
