package main

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/herd-iot/herd"
)

func twinCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "twin",
		Short: "Read and update device twins",
	}
	cf.register(cmd)

	showCmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a device's twin",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			t, err := c.GetTwin(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(e, t)
		},
	}

	var tags, desired, etag string
	var replace bool
	updateCmd := &cobra.Command{
		Use:   "update ID",
		Short: "Merge tags and/or desired properties into a twin (null deletes a key)",
		Example: `  herd twin update dev1 --tags '{"building":43}'
  herd twin update dev1 --desired '{"floor":3,"old":null}' --etag AAAAAAAAAAE=`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tags == "" && desired == "" {
				return fmt.Errorf("give --tags and/or --desired")
			}
			var p herd.TwinPatch
			if tags != "" {
				if err := decodeObject("--tags", tags, &p.Tags); err != nil {
					return err
				}
			}
			if desired != "" {
				p.Properties = &herd.PatchProperties{}
				if err := decodeObject("--desired", desired, &p.Properties.Desired); err != nil {
					return err
				}
			}
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			update := c.UpdateTwin
			if replace {
				update = c.ReplaceTwin
			}
			t, err := update(cmd.Context(), args[0], p, etag)
			if err != nil {
				return err
			}
			return printJSON(e, t)
		},
	}
	updateCmd.Flags().StringVar(&tags, "tags", "", "tags to merge, as a JSON object")
	updateCmd.Flags().StringVar(&desired, "desired", "", "desired properties to merge, as a JSON object")
	updateCmd.Flags().StringVar(&etag, "etag", "", "update only if the twin's etag still matches")
	updateCmd.Flags().BoolVar(&replace, "replace", false, "replace tags and desired properties instead of merging")

	cmd.AddCommand(showCmd, updateCmd)
	return cmd
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
