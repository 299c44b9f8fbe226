package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/herd-iot/herd"
)

func twinCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := group(&cobra.Command{
		Use:   "twin",
		Short: "Read and update device twins (and module twins, with --module)",
	})
	cf.register(cmd)

	var showModule string
	showCmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a device's twin (or, with --module, one of its module twins)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			get := c.GetTwin
			if showModule != "" {
				get = func(ctx context.Context, id string) (*herd.Twin, error) { return c.GetModuleTwin(ctx, id, showModule) }
			}
			t, err := get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(e, t)
		},
	}

	showCmd.Flags().StringVar(&showModule, "module", "", "show this module's twin")
	var pf patchFlags
	var etag, module string
	var replace bool
	updateCmd := &cobra.Command{
		Use:   "update ID",
		Short: "Merge tags and/or desired properties into a twin (null deletes a key)",
		Example: `  herd twin update dev1 --tags '{"building":43}'
  herd twin update dev1 --desired '{"floor":3,"old":null}' --etag AAAAAAAAAAE=`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := pf.patch()
			if err != nil {
				return err
			}
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			update := c.UpdateTwin
			if replace {
				update = c.ReplaceTwin
			}
			if module != "" {
				write := c.UpdateModuleTwin
				if replace {
					write = c.ReplaceModuleTwin
				}
				update = func(ctx context.Context, id string, p herd.TwinPatch, etag string) (*herd.Twin, error) {
					return write(ctx, id, module, p, etag)
				}
			}
			t, err := update(cmd.Context(), args[0], p, etag)
			if err != nil {
				return err
			}
			return printJSON(e, t)
		},
	}
	pf.register(updateCmd)
	updateCmd.Flags().StringVar(&etag, "etag", "", "update only if the twin's etag still matches")
	updateCmd.Flags().BoolVar(&replace, "replace", false, "replace tags and desired properties instead of merging")
	updateCmd.Flags().StringVar(&module, "module", "", "update this module's twin instead of the device's")

	cmd.AddCommand(showCmd, updateCmd)
	return cmd
}

// patchFlags are the --tags and --desired flags of a twin change.
type patchFlags struct{ tags, desired string }

func (f *patchFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.tags, "tags", "", "tags to merge, as a JSON object (null deletes a key)")
	cmd.Flags().StringVar(&f.desired, "desired", "", "desired properties to merge, as a JSON object (null deletes a key)")
}

// patch builds the twin patch the flags describe.
func (f *patchFlags) patch() (herd.TwinPatch, error) {
	var p herd.TwinPatch
	if f.tags == "" && f.desired == "" {
		return p, fmt.Errorf("give --tags and/or --desired")
	}
	if f.tags != "" {
		if err := decodeObject("--tags", f.tags, &p.Tags); err != nil {
			return p, err
		}
	}
	if f.desired != "" {
		p.Properties = &herd.PatchProperties{}
		if err := decodeObject("--desired", f.desired, &p.Properties.Desired); err != nil {
			return p, err
		}
	}
	return p, nil
}

// decodeObject parses a flag's JSON object, keeping numbers exact.
func decodeObject(flag, s string, out *map[string]any) error {
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	if err := dec.Decode(out); err != nil || *out == nil {
		return fmt.Errorf("%s: not a JSON object: %s", flag, s)
	}
	return nil
}
