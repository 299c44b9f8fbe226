package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/herd-iot/herd/internal/store"
	"github.com/herd-iot/herd/internal/store/rows"
)

// storeCommand is herd store: moving a hub's data between stores.
func storeCommand(e *env) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "store",
		Short: "Move a hub's data between stores (SQLite, PostgreSQL)",
	})
	cmd.AddCommand(storeCopyCommand(e))
	return cmd
}

func storeCopyCommand(e *env) *cobra.Command {
	var data, from, to string
	var force bool
	cmd := &cobra.Command{
		Use:   "copy --to STORE [--from STORE] [--force]",
		Short: "Copy a hub's registry, twins, policies, CA certificates and job history into another store",
		Long: `Copy everything a hub keeps from one store into another: devices and their
twins (with their etags, versions and $metadata), persistent MQTT sessions,
the shared access policies and their keys, CA certificates, settings, and
jobs with every device's record. The copy is one transaction of the target:
if it fails or is interrupted, the target is left as it was.

A target that already holds a hub (any device, job, policy or CA
certificate) is refused unless --force is given, which replaces everything
in it. Stop the hub before copying: what it changes during the copy may be
missed. Then start it on the new store:

  herd store copy --from sqlite:herd-data/herd.db --to postgres://herd@db:5432/herd
  herd serve --store postgres://herd@db:5432/herd

Keep the data folder: it holds the hub's CA and server certificate, which the
store does not.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd, e.lookupEnv); err != nil {
				return err
			}
			if to == "" {
				return errors.New("give the target store with --to (sqlite:PATH or a postgres:// URL)")
			}
			if sameStore(from, to, data) {
				return fmt.Errorf("--from and --to name the same store (%s)", store.Describe(to, data))
			}
			if _, _, err := store.Parse(to, data); err != nil {
				return err
			}
			ctx := cmd.Context()
			src, err := openLocal(ctx, from, data)
			if err != nil {
				return err
			}
			defer src.Close()
			dst, err := store.Open(ctx, to, data)
			if err != nil {
				return err
			}
			defer dst.Close()
			counts, err := store.CountRows(ctx, src)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "copying %s to %s\n", store.Describe(from, data), store.Describe(to, data))
			var bar *progressbar.ProgressBar
			if isTerminal(e.stdout) {
				bar = progressbar.NewOptions64(counts.Total(),
					progressbar.OptionSetWriter(e.stdout),
					progressbar.OptionShowCount(),
					progressbar.OptionShowIts(),
					progressbar.OptionSetItsString("rows"),
					progressbar.OptionSetPredictTime(true),
					progressbar.OptionSetElapsedTime(true),
					progressbar.OptionFullWidth(),
					progressbar.OptionThrottle(100*time.Millisecond))
			}
			start := time.Now()
			copied, err := store.Copy(ctx, src, dst, force, func(n int) error {
				if bar != nil {
					return bar.Add(n)
				}
				return nil
			})
			if bar != nil {
				_ = bar.Finish()
				fmt.Fprintln(e.stdout)
			}
			if errors.Is(err, rows.ErrNotEmpty) {
				return fmt.Errorf("%s: %w; add --force to replace everything in it", store.Describe(to, data), err)
			}
			if err != nil {
				return fmt.Errorf("copy failed, %s is left as it was: %w", store.Describe(to, data), err)
			}
			secs := time.Since(start).Seconds()
			fmt.Fprintf(e.stdout, "copied %d devices, %d jobs (%d device records), %d policies, %d CA certificates, %d sessions and %d settings in %.1f s\n",
				copied["devices"], copied["jobs"], copied["device_jobs"], copied["policies"], copied["ca_certificates"],
				copied["device_sessions"], copied["settings"], secs)
			fmt.Fprintf(e.stdout, "start the hub on it with: herd serve --data %s --store %s\n", data, storeFlag(to))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&data, "data", "herd-data", "the hub's data folder (--from defaults to its SQLite database)")
	f.StringVar(&from, "from", "", "the store to copy: sqlite:PATH or a postgres:// URL (default: the SQLite database in --data)")
	f.StringVar(&to, "to", "", "the store to copy into: sqlite:PATH or a postgres:// URL")
	f.BoolVar(&force, "force", false, "replace everything in a target that already holds a hub")
	return cmd
}

// sameStore reports whether two --store values name the same database.
func sameStore(a, b, data string) bool {
	ka, wa, errA := store.Parse(a, data)
	kb, wb, errB := store.Parse(b, data)
	if errA != nil || errB != nil || ka != kb {
		return false
	}
	if ka == store.SQLite {
		wa, _ = filepath.Abs(wa)
		wb, _ = filepath.Abs(wb)
	}
	return wa == wb
}

// storeFlag is spec as the hint at the end shows it: quoted for a shell
// when it holds a query string, with its password hidden.
func storeFlag(spec string) string {
	s := store.Redact(spec)
	for _, c := range s {
		if c == '?' || c == '&' || c == ' ' {
			return "'" + s + "'"
		}
	}
	return s
}
