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
that answered is marked with *. JOBS names the one node that runs the
hub's jobs and applies its configurations, with the jobs it was running
(as of its last renewal, every third of the lease).`,
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
				if n.RunsJobs && n.State == herd.NodeAlive {
					jobs = fmt.Sprintf("runs them (%d running)", n.RunningJobs)
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", id, n.State, n.ConnectedDevices, jobs, n.StartedTime, until,
					dash(n.RESTAddress), dash(n.MQTTAddress), dash(n.Version))
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
