package hub

// The device-connection bound. Every device socket holds a file
// descriptor; a process that runs out of them cannot accept, open its
// database files or answer REST, so by default the gateway stops short of
// the open-file limit and refuses further devices cleanly instead (enough
// idle sockets once stopped the whole hub).

// Reserve bounds: what the hub keeps of the open-file limit for everything
// that is not a device socket.
const (
	minReserve = 200
	maxReserve = 2000
)

// MaxConnectionsFor returns the default device-connection bound for an
// open-file limit: the limit less a reserve of a tenth of it, at least 200
// and at most 2000 descriptors, for the database (a writer, readers and a
// checkpointer, each with its WAL and shared-memory files), the listeners,
// REST clients and event streams, and the sockets being refused (at most
// 64). Very low limits keep at least a quarter for devices. For example:
// 256 → 64, 1024 → 824, 4096 → 3687, 20000 → 18000, 1048576 → 1046576.
// A limit of 0 (unknown) gives 0: no bound.
func MaxConnectionsFor(limit int) int {
	if limit <= 0 {
		return 0
	}
	reserve := min(max(limit/10, minReserve), maxReserve)
	return max(limit-reserve, limit/4)
}

// DefaultMaxConnections is MaxConnectionsFor the process's open-file
// limit (RLIMIT_NOFILE, soft), read now; 0 (no bound) where the system has
// no such limit (Windows) or it is unlimited.
func DefaultMaxConnections() int { return MaxConnectionsFor(openFileLimit()) }
