package herd

// NodeState is what a node's lease says of it (GET /cluster).
type NodeState string

// The states of a node.
const (
	// NodeAlive: its lease runs.
	NodeAlive NodeState = "alive"
	// NodeLost: its lease lapsed without the node stopping (killed, cut
	// off, frozen).
	NodeLost NodeState = "lost"
	// NodeStopped: the node ended its lease when it shut down.
	NodeStopped NodeState = "stopped"
)

// Node is one `herd serve` among the nodes of a store, as GET /cluster
// shows it. Herd's own: Azure IoT Hub has no such resource.
type Node struct {
	NodeID string    `json:"nodeId"`
	State  NodeState `json:"state"`
	// StartedTime is when the node started; RenewedTime when it last
	// renewed its lease, which runs until LeaseUntil.
	StartedTime Time `json:"startedTime"`
	RenewedTime Time `json:"renewedTime"`
	LeaseUntil  Time `json:"leaseUntil"`
	// StoppedTime is when it shut down (the zero time unless stopped).
	StoppedTime Time `json:"stoppedTime"`
	// RESTAddress and MQTTAddress are where its listeners are bound.
	RESTAddress string `json:"restAddress"`
	MQTTAddress string `json:"mqttAddress,omitempty"`
	// Version is its herd version.
	Version string `json:"version"`
	// ConnectedDevices is how many devices were connected to it at its
	// last renewal.
	ConnectedDevices int64 `json:"connectedDevices"`
	// Leader says that it led the cluster at its last renewal: it
	// applied the configurations (one node at a time does). RunningJobs
	// is how many jobs it was running then: each job runs on the node
	// that holds its lease (ClusterStatus.Jobs).
	Leader      bool `json:"leader"`
	RunningJobs int  `json:"runningJobs"`
}

// ClusterStatus is GET /cluster: the node that answered and every node of
// its store, in node id order.
type ClusterStatus struct {
	NodeID string  `json:"nodeId"`
	Nodes  []*Node `json:"nodes"`
	// Jobs are the jobs that have not ended, in start time order, each
	// with the node that runs it.
	Jobs []*ClusterJob `json:"jobs"`
}

// ClusterJob is a job that has not ended, as GET /cluster shows it.
type ClusterJob struct {
	JobID  string    `json:"jobId"`
	Type   JobType   `json:"type"`
	Status JobStatus `json:"status"`
	// NodeID is the node that runs the job: in a cluster, the one that
	// holds its lease until LeaseUntil, taken at epoch LeaseEpoch (a
	// node that takes it raises the epoch). "" when no node runs it now:
	// it is not due, paused, or its node was lost and no other has taken
	// it yet.
	NodeID     string `json:"nodeId,omitempty"`
	LeaseUntil Time   `json:"leaseUntil"`
	LeaseEpoch int64  `json:"leaseEpoch,omitempty"`
}
