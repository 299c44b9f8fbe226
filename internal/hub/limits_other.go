//go:build !unix

package hub

// openFileLimit returns 0: the system has no per-process open-file limit
// like Unix's RLIMIT_NOFILE (Windows bounds handles far above what one hub
// holds), so there is no default device-connection bound.
func openFileLimit() int { return 0 }
