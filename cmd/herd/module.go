package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/herd-iot/herd"
)

// moduleCommand is herd module: the module identities of devices.
func moduleCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := group(&cobra.Command{
		Use:   "module",
		Short: "Manage the module identities of devices (IoT Edge modules and others)",
	})
	cf.register(cmd)

	var primary, secondary, managedBy string
	var thumbprints []string
	var byCA bool
	createCmd := &cobra.Command{
		Use:   "create DEVICE-ID MODULE-ID",
		Short: "Register a module of a device (keys are generated unless given, or it uses a certificate)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := createAuth(primary, secondary, thumbprints, byCA)
			if err != nil {
				return err
			}
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			m, err := c.CreateModule(cmd.Context(), herd.Module{DeviceID: args[0], ModuleID: args[1], ManagedBy: managedBy, Authentication: a})
			if err != nil {
				return err
			}
			return printJSON(e, m)
		},
	}
	createCmd.Flags().StringVar(&primary, "primary-key", "", "primary key (base64; default generated)")
	createCmd.Flags().StringVar(&secondary, "secondary-key", "", "secondary key (base64; default generated)")
	createCmd.Flags().StringVar(&managedBy, "managed-by", "", "who manages the module (IoT Edge writes IotEdge)")
	createCmd.Flags().StringSliceVar(&thumbprints, "x509-thumbprint", nil,
		"authenticate with an X.509 certificate of this thumbprint: HEX[,HEX] (primary, secondary; SHA-1 or SHA-256)")
	createCmd.Flags().BoolVar(&byCA, "x509-ca", false, "authenticate with an X.509 certificate issued by a verified CA (herd ca add)")
	createCmd.MarkFlagsMutuallyExclusive("x509-thumbprint", "x509-ca")

	showCmd := &cobra.Command{
		Use:   "show DEVICE-ID MODULE-ID",
		Short: "Show a module",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			m, err := c.GetModule(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return printJSON(e, m)
		},
	}

	listCmd := &cobra.Command{
		Use:   "list DEVICE-ID",
		Short: "List a device's modules",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			ms, err := c.ListModules(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if cf.output == "json" {
				return printJSON(e, ms)
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "MODULE ID\tMANAGED BY\tAUTHENTICATION\tCONNECTION")
			for _, m := range ms {
				by := m.ManagedBy
				if by == "" {
					by = "-"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", m.ModuleID, by, m.Authentication.Type, m.ConnectionState)
			}
			return w.Flush()
		},
	}

	var etag string
	deleteCmd := &cobra.Command{
		Use:   "delete DEVICE-ID MODULE-ID",
		Short: "Delete a module and its twin",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			if err := c.DeleteModule(cmd.Context(), args[0], args[1], etag); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "deleted module %s of %s\n", args[1], args[0])
			return nil
		},
	}
	deleteCmd.Flags().StringVar(&etag, "etag", "", "delete only if the module's etag still matches")

	cmd.AddCommand(createCmd, showCmd, listCmd, deleteCmd)
	return cmd
}
