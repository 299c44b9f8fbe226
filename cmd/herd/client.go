package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/herd-iot/herd/internal/certs"
	"github.com/herd-iot/herd/internal/hub"
	"github.com/herd-iot/herd/sas"
	"github.com/herd-iot/herd/service"
)

// clientFlags are the flags of every command that calls a hub's REST API.
type clientFlags struct {
	connectionString string
	ca               string
	url              string
	data             string
	store            string
	output           string
}

func (f *clientFlags) register(cmd *cobra.Command) {
	p := cmd.PersistentFlags()
	p.StringVar(&f.connectionString, "connection-string", "", "service connection string (default: the iothubowner policy of the hub in --data)")
	p.StringVar(&f.ca, "ca", "", "CA certificate (PEM) to trust (default: ca.pem in --data, if present)")
	p.StringVar(&f.url, "url", "", "base URL of the REST API (default: https://<HostName>, or the address the hub in --data listens on)")
	p.StringVar(&f.data, "data", "herd-data", "data folder of a local hub, used when --connection-string is not given")
	p.StringVar(&f.store, "store", "", "the local hub's store, if not the SQLite database in --data (as herd serve --store)")
	p.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
}

// client builds a service SDK client from the flags, their HERD_*
// environment variables, or the local hub's data folder.
func (f *clientFlags) client(ctx context.Context, cmd *cobra.Command, e *env) (*service.Client, error) {
	if err := bindEnv(cmd, e.lookupEnv); err != nil {
		return nil, err
	}
	if f.output != "table" && f.output != "json" {
		return nil, fmt.Errorf("--output %q: use table or json", f.output)
	}
	var opts []service.Option
	cs, url, ca := f.connectionString, f.url, f.ca
	if cs == "" {
		local, err := localHub(ctx, f.store, f.data)
		if err != nil {
			return nil, fmt.Errorf("no --connection-string (or HERD_CONNECTION_STRING) and no local hub: %w", err)
		}
		cs = local.connectionString
		if url == "" {
			url = local.url
		}
	}
	if ca == "" {
		if p := filepath.Join(f.data, certs.CAFile); fileExists(p) {
			ca = p
		}
	}
	if ca != "" {
		opts = append(opts, service.WithCAFile(ca))
	}
	if url != "" {
		opts = append(opts, service.WithEndpoint(url))
	}
	return service.New(cs, opts...)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// local is what a local hub's data folder says about reaching it.
type local struct {
	connectionString string
	url              string
}

// localHub reads the iothubowner connection string and the REST address
// from a hub's store (its data folder's database, or spec).
func localHub(ctx context.Context, spec, dir string) (*local, error) {
	db, err := openLocal(ctx, spec, dir)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	host, err := db.Setting(ctx, "hostname")
	if err != nil {
		return nil, err
	}
	if host == "" {
		host = hub.Default().Hostname
	}
	// The data folder's own record first: in a cluster the store's
	// setting is the last node's to start, not this folder's node's.
	addr := hub.Listeners(dir)["https_addr"]
	if addr == "" {
		if addr, err = db.Setting(ctx, "https_addr"); err != nil {
			return nil, err
		}
	}
	ps, err := db.Policies(ctx)
	if err != nil {
		return nil, err
	}
	l := &local{}
	for _, p := range ps {
		if p.Name == "iothubowner" {
			l.connectionString = sas.ConnectionString{HostName: host, SharedAccessKeyName: p.Name, SharedAccessKey: p.PrimaryKey}.String()
		}
	}
	if l.connectionString == "" {
		return nil, fmt.Errorf("the hub in %s has no iothubowner policy", dir)
	}
	if _, port, err := net.SplitHostPort(addr); err == nil && port != "443" {
		l.url = "https://" + net.JoinHostPort(host, port)
	}
	return l, nil
}

// printJSON writes v indented.
func printJSON(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
