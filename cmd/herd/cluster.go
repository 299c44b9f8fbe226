package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/herd-iot/herd"
)

// clusterCommand is herd cluster: the nodes serving a hub's store.
func clusterCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := group(&cobra.Command{
		Use:   "cluster",
		Short: "The nodes (herd serve processes) of a hub's store",
	})
	cf.register(cmd)
	statusCmd := &cobra.Command{
		Use:   "status",
		Short: "List the nodes with their state (alive, lost, stopped), lease, connected devices and addresses",
		Long: `List the nodes that serve the hub's store, as GET /cluster returns them: each
node renews a lease every few seconds while it runs (alive), ends it when it
shuts down (stopped), and is lost when its lease lapsed without a stop (the
process was killed or cut off). Nodes gone for a day are forgotten. The node
that answered is marked with *. JOBS says how many jobs each node was
running and which node leads the cluster (applies the configurations), as
of its last renewal, every third of the lease.

Below the nodes, the jobs that have not ended, each with the node that runs
it: in a cluster, each job runs on the node that holds its lease, renewed
every third of the node lease; when that node is lost, another takes the
job over once the lease lapses, at a higher epoch.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			st, err := c.Cluster(cmd.Context())
			if err != nil {
				return err
			}
			if cf.output == "json" {
				return printJSON(e, st)
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NODE\tSTATE\tDEVICES\tJOBS\tSTARTED\tLEASE UNTIL\tREST\tMQTT\tVERSION")
			for _, n := range st.Nodes {
				id := n.NodeID
				if id == st.NodeID {
					id += " *"
				}
				until := n.LeaseUntil.String()
				if n.State == herd.NodeStopped {
					until = "stopped " + n.StoppedTime.String()
				}
				jobs := "-"
				if n.State == herd.NodeAlive {
					jobs = fmt.Sprintf("%d running", n.RunningJobs)
					if n.Leader {
						jobs += ", leads"
					}
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", id, n.State, n.ConnectedDevices, jobs, n.StartedTime, until,
					dash(n.RESTAddress), dash(n.MQTTAddress), dash(n.Version))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if len(st.Jobs) == 0 {
				return nil
			}
			fmt.Fprintln(e.stdout)
			w = tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "JOB\tTYPE\tSTATUS\tNODE\tLEASE UNTIL\tEPOCH")
			for _, j := range st.Jobs {
				until, epoch := "-", "-"
				if !j.LeaseUntil.IsZero() {
					until, epoch = j.LeaseUntil.String(), fmt.Sprint(j.LeaseEpoch)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", j.JobID, j.Type, j.Status, dash(j.NodeID), until, epoch)
			}
			return w.Flush()
		},
	}
	cmd.AddCommand(statusCmd)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
