package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/auth"
	"github.com/herd-iot/herd/service"
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
	var thumbprints []string
	var edge, byCA bool
	createCmd := &cobra.Command{
		Use:   "create ID",
		Short: "Register a device (keys are generated unless given, or it uses a certificate)",
		Long: `Register a device. By default it authenticates with SAS tokens signed with
its symmetric keys, generated unless --primary-key and --secondary-key give
them. With --x509-thumbprint it authenticates with a self-signed (or any)
X.509 certificate whose SHA-1 or SHA-256 thumbprint (hex) is one of the one
or two given; with --x509-ca with a certificate whose common name is the
device id, issued by a CA certificate registered and verified with the hub
(herd ca add). herd cert device issues such certificates for trying it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			auth, err := createAuth(primary, secondary, thumbprints, byCA)
			if err != nil {
				return err
			}
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			create.DeviceID = args[0]
			create.Status = herd.DeviceStatus(status)
			create.Authentication = auth
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
	createCmd.Flags().StringSliceVar(&thumbprints, "x509-thumbprint", nil,
		"authenticate with an X.509 certificate of this thumbprint: HEX[,HEX] (primary, secondary; SHA-1 or SHA-256)")
	createCmd.Flags().BoolVar(&byCA, "x509-ca", false, "authenticate with an X.509 certificate (CN = device id) issued by a verified CA (herd ca add)")
	createCmd.MarkFlagsMutuallyExclusive("x509-thumbprint", "x509-ca")

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

	cmd.AddCommand(createCmd, showCmd, listCmd, deleteCmd,
		deviceStatusCommand(e, &cf, herd.DeviceDisabled), deviceStatusCommand(e, &cf, herd.DeviceEnabled),
		regenerateKeyCommand(e, &cf))
	return cmd
}

// deviceStatusCommand is herd device disable or enable: it sets the
// device's status and status reason (an enable without --reason clears
// it).
func deviceStatusCommand(e *env, cf *clientFlags, status herd.DeviceStatus) *cobra.Command {
	verb := "disable"
	short := "Disable a device: it can no longer connect (a connected device is disconnected)"
	if status == herd.DeviceEnabled {
		verb = "enable"
		short = "Enable a disabled device (clears its status reason unless --reason gives one)"
	}
	var reason string
	cmd := &cobra.Command{
		Use:   verb + " ID [--reason TEXT]",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			d, err := updateDevice(cmd.Context(), c, args[0], func(d *herd.Device) error {
				d.Status = status
				d.StatusReason = nil
				if reason != "" {
					d.StatusReason = &reason
				}
				return nil
			})
			if err != nil {
				return err
			}
			if cf.output == "json" {
				return printJSON(e, d)
			}
			fmt.Fprintf(e.stdout, "%sd %s\n", verb, d.DeviceID)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (the device's statusReason, at most 128 characters)")
	return cmd
}

// regenerateKeyCommand is herd device regenerate-key: new random keys
// (32 bytes, base64) for the device's primary key, secondary key or both.
func regenerateKeyCommand(e *env, cf *clientFlags) *cobra.Command {
	var primary, secondary, both bool
	cmd := &cobra.Command{
		Use:   "regenerate-key ID --primary|--secondary|--both",
		Short: "Give a device new random symmetric keys and print it (its old connection strings stop working)",
		Long: `Give a device new random symmetric keys (32 random bytes, base64): the
primary, the secondary or both. Connection strings and tokens made with a
replaced key stop working; print the new one with herd connection-string
--device ID. Rotating one key at a time lets devices move to the other key
first.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !primary && !secondary && !both {
				return fmt.Errorf("which key? give --primary, --secondary or --both")
			}
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			d, err := updateDevice(cmd.Context(), c, args[0], func(d *herd.Device) error {
				if t := d.Authentication.Type; t != herd.AuthSAS && t != "" {
					return fmt.Errorf("device %s uses %s authentication: it has no symmetric keys", d.DeviceID, t)
				}
				// New keys must be sent: an update with an empty key keeps
				// the current one (only a create generates keys).
				k := &d.Authentication.SymmetricKey
				if primary || both {
					k.PrimaryKey = auth.NewKey()
				}
				if secondary || both {
					k.SecondaryKey = auth.NewKey()
				}
				return nil
			})
			if err != nil {
				return err
			}
			return printJSON(e, d)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&primary, "primary", false, "replace the primary key")
	f.BoolVar(&secondary, "secondary", false, "replace the secondary key")
	f.BoolVar(&both, "both", false, "replace both keys")
	cmd.MarkFlagsMutuallyExclusive("primary", "secondary", "both")
	return cmd
}

// updateDevice reads a device, changes it and writes it back
// (PUT /devices/{id}) on the condition that nobody changed it in between
// (If-Match with the etag it read), so that no concurrent change is lost.
func updateDevice(ctx context.Context, c *service.Client, id string, change func(*herd.Device) error) (*herd.Device, error) {
	d, err := c.GetDevice(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := change(d); err != nil {
		return nil, err
	}
	out, err := c.UpdateDevice(ctx, *d, d.ETag)
	if herd.IsCode(err, herd.ErrPreconditionFailed) {
		return nil, fmt.Errorf("device %s changed while this command updated it; run it again: %w", id, err)
	}
	return out, err
}

// createAuth is the authentication of herd device create: SAS keys (given
// or to be generated), selfSigned thumbprints, or certificateAuthority.
func createAuth(primary, secondary string, thumbprints []string, byCA bool) (herd.Authentication, error) {
	keys := primary != "" || secondary != ""
	switch {
	case keys && (len(thumbprints) > 0 || byCA):
		return herd.Authentication{}, fmt.Errorf("--primary-key and --secondary-key are for SAS devices; a device with --x509-thumbprint or --x509-ca has no keys")
	case len(thumbprints) > 2:
		return herd.Authentication{}, fmt.Errorf("--x509-thumbprint takes one or two thumbprints (primary,secondary), not %d", len(thumbprints))
	case len(thumbprints) > 0:
		a := herd.Authentication{Type: herd.AuthSelfSigned}
		a.X509Thumbprint.PrimaryThumbprint = &thumbprints[0]
		if len(thumbprints) == 2 {
			a.X509Thumbprint.SecondaryThumbprint = &thumbprints[1]
		}
		return a, nil
	case byCA:
		return herd.Authentication{Type: herd.AuthCertificateAuthority}, nil
	}
	return herd.Authentication{Type: herd.AuthSAS, SymmetricKey: herd.SymmetricKey{PrimaryKey: primary, SecondaryKey: secondary}}, nil
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
