package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/herd-iot/herd/sas"
)

// tokenCommand prints a SAS token, for curl and other plain HTTP clients.
func tokenCommand(e *env) *cobra.Command {
	var connectionString, data, storeSpec string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Print a SAS token for the REST API (for curl and other HTTP clients)",
		Example: `  curl --cacert herd-data/ca.pem -H "Authorization: $(herd token)" \
    "https://localhost/devices/dev1?api-version=2021-04-12"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd, e.lookupEnv); err != nil {
				return err
			}
			if connectionString == "" {
				l, err := localHub(cmd.Context(), storeSpec, data)
				if err != nil {
					return fmt.Errorf("no --connection-string (or HERD_CONNECTION_STRING) and no local hub: %w", err)
				}
				connectionString = l.connectionString
			}
			cs, err := sas.ParseConnectionString(connectionString)
			if err != nil {
				return err
			}
			expiry := time.Now().Add(ttl)
			var tok string
			switch {
			case cs.ForService() == nil:
				tok, err = sas.ServiceToken(cs.HostName, cs.SharedAccessKeyName, cs.SharedAccessKey, expiry)
			case cs.ForDevice() == nil && cs.SharedAccessKey != "":
				tok, err = sas.DeviceToken(cs.HostName, cs.DeviceID, cs.SharedAccessKeyName, cs.SharedAccessKey, expiry)
			default:
				return fmt.Errorf("the connection string has no key to sign with")
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, tok)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&connectionString, "connection-string", "", "service or device connection string (default: iothubowner of the hub in --data)")
	f.StringVar(&data, "data", "herd-data", "data folder of a local hub")
	f.StringVar(&storeSpec, "store", "", "the local hub's store, if not the SQLite database in --data (as herd serve --store)")
	f.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	return cmd
}
