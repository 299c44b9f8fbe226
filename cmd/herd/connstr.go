package main

import (
	"context"
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/sas"
)

func connectionStringCommand(e *env) *cobra.Command {
	var data, storeSpec, policy, device, module, hostname string
	cmd := &cobra.Command{
		Use:   "connection-string",
		Short: "Print a policy's or a device's connection string",
		Long: `Print the connection string of a shared access policy (default
iothubowner) or, with --device, of a device (with --module too, of one of
its modules), read from a hub's data folder.

A device that authenticates with an X.509 certificate (selfSigned or
certificateAuthority) gets x509=true instead of a key: the program gives
the SDK its certificate and key (Node: client.setOptions({cert, key})).

When the hub's MQTT over TLS listens on a port other than 8883 (the port
devices dial), a device's connection string names it:
GatewayHostName=<hostname>:<port>, as herd serve prints. The Node.js device
SDK and Herd's Go device SDK dial it; other SDKs dial 8883 regardless.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd, e.lookupEnv); err != nil {
				return err
			}
			ctx := cmd.Context()
			db, err := openLocal(ctx, storeSpec, data)
			if err != nil {
				return err
			}
			defer db.Close()
			host := hostname
			if host == "" {
				if host, err = db.Setting(ctx, "hostname"); err != nil {
					return err
				}
			}
			if host == "" {
				host = "localhost"
			}
			if module != "" && device == "" {
				return fmt.Errorf("--module names a module of --device; give both")
			}
			if device != "" {
				d, err := db.Device(ctx, device)
				if err != nil {
					return err
				}
				gateway, err := mqttGateway(ctx, db, host)
				if err != nil {
					return err
				}
				a := d.Authentication
				out := sas.ConnectionString{HostName: host, GatewayHostName: gateway, DeviceID: d.DeviceID}
				if module != "" {
					m, err := db.Module(ctx, device, module)
					if err != nil {
						return err
					}
					a, out.ModuleID = m.Authentication, m.ModuleID
				}
				out.SharedAccessKey = a.SymmetricKey.PrimaryKey
				if t := a.Type; t == herd.AuthSelfSigned || t == herd.AuthCertificateAuthority {
					out.SharedAccessKey, out.X509 = "", true // the device brings its certificate
				}
				fmt.Fprintln(e.stdout, out.String())
				return nil
			}
			ps, err := db.Policies(ctx)
			if err != nil {
				return err
			}
			for _, p := range ps {
				if p.Name == policy {
					fmt.Fprintln(e.stdout, sas.ConnectionString{HostName: host, SharedAccessKeyName: p.Name,
						SharedAccessKey: p.PrimaryKey}.String())
					return nil
				}
			}
			return fmt.Errorf("--policy %q: no such shared access policy (the hub has iothubowner, service, device, registryRead, registryReadWrite)", policy)
		},
	}
	f := cmd.Flags()
	f.StringVar(&data, "data", "herd-data", "the hub's data folder")
	f.StringVar(&storeSpec, "store", "", "the hub's store, if not the SQLite database in --data (as herd serve --store)")
	f.StringVar(&policy, "policy", "iothubowner", "shared access policy")
	f.StringVar(&device, "device", "", "print this device's connection string instead")
	f.StringVar(&module, "module", "", "with --device: print the connection string of this module of the device")
	f.StringVar(&hostname, "hostname", "", "HostName to write (default: the hub's --hostname)")
	return cmd
}

// mqttGateway is a device connection string's GatewayHostName for the hub
// whose store db is: host with the port of its MQTT over TLS listener when
// that is not 8883, else "" (also when MQTT is off, or the hub never ran).
func mqttGateway(ctx context.Context, db hub.Store, host string) (string, error) {
	addr, err := db.Setting(ctx, "mqtt_addr")
	if err != nil {
		return "", err
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "8883" {
		return "", nil
	}
	return net.JoinHostPort(host, port), nil
}
