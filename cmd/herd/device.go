package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/herd-iot/herd"
)

func deviceCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := group(&cobra.Command{
		Use:   "device",
		Short: "Manage device identities in the registry",
	})
	cf.register(cmd)

	var create herd.Device
	var status, primary, secondary string
	var edge bool
	createCmd := &cobra.Command{
		Use:   "create ID",
		Short: "Register a device (keys are generated unless given)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			create.DeviceID = args[0]
			create.Status = herd.DeviceStatus(status)
			create.Authentication.SymmetricKey = herd.SymmetricKey{PrimaryKey: primary, SecondaryKey: secondary}
			create.Capabilities.IoTEdge = edge
			d, err := c.CreateDevice(cmd.Context(), create)
			if err != nil {
				return err
			}
			return printJSON(e, d)
		},
	}
	createCmd.Flags().StringVar(&status, "status", "enabled", "enabled or disabled")
	createCmd.Flags().StringVar(&primary, "primary-key", "", "primary key (base64; default generated)")
	createCmd.Flags().StringVar(&secondary, "secondary-key", "", "secondary key (base64; default generated)")
	createCmd.Flags().BoolVar(&edge, "edge", false, "mark the device as an IoT Edge device")

	showCmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a device",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			d, err := c.GetDevice(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(e, d)
		},
	}

	var top int
	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List devices in id order (at most 1000; use `herd query` for more)",
		Long: `List devices in id order, at most --top (1000 at most, the hub's limit).
When there are more devices than it shows, it says so on stderr; herd query
"SELECT * FROM devices" lists every device, page by page.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if top < 1 || top > maxListDevices {
				return fmt.Errorf("--top %d: give 1 to %d (the hub lists at most %d devices; herd query \"SELECT * FROM devices\" lists them all)", top, maxListDevices, maxListDevices)
			}
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			ds, err := c.ListDevices(cmd.Context(), top)
			if err != nil {
				return err
			}
			if cf.output == "json" {
				err = printJSON(e, ds)
			} else {
				w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "DEVICE ID\tSTATUS\tCONNECTION\tLAST ACTIVITY")
				for _, d := range ds {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", d.DeviceID, d.Status, d.ConnectionState, activity(d.LastActivityTime))
				}
				err = w.Flush()
			}
			if err != nil || len(ds) < top {
				return err
			}
			// As many as asked for: there may be more.
			shown := fmt.Sprintf("showing the first %d devices, there may be more", len(ds))
			if st, serr := c.RegistryStatistics(cmd.Context()); serr == nil {
				if st.TotalDeviceCount <= int64(len(ds)) {
					return nil
				}
				shown = fmt.Sprintf("showing the first %d of %d devices", len(ds), st.TotalDeviceCount)
			}
			how := `herd query "SELECT * FROM devices" lists them all`
			if top < maxListDevices {
				how = fmt.Sprintf("--top %d shows more, %s", maxListDevices, how)
			}
			fmt.Fprintf(e.stderr, "%s; %s\n", shown, how)
			return nil
		},
	}
	listCmd.Flags().IntVar(&top, "top", maxListDevices, fmt.Sprintf("list at most this many devices (1 to %d)", maxListDevices))

	var etag string
	deleteCmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a device and its twin",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			if err := c.DeleteDevice(cmd.Context(), args[0], etag); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "deleted %s\n", args[0])
			return nil
		},
	}
	deleteCmd.Flags().StringVar(&etag, "etag", "", "delete only if the device's etag still matches")

	cmd.AddCommand(createCmd, showCmd, listCmd, deleteCmd)
	return cmd
}

// maxListDevices is the most devices GET /devices returns (Azure's limit
// too).
const maxListDevices = 1000

func activity(t herd.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.String()
}
