package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/herd-iot/herd"
)

// configurationCommand is herd configuration: automatic device
// configurations (docs/configurations.md).
func configurationCommand(e *env) *cobra.Command {
	var cf clientFlags
	cmd := group(&cobra.Command{
		Use:     "configuration",
		Aliases: []string{"config"},
		Short:   "Manage automatic device configurations: desired properties for every device a condition selects, now and later",
		Long: `Manage automatic device configurations. A configuration sets desired
properties on every device its target condition (over tags and deviceId)
selects: those there when it is created, and each device created or
retagged later. Of the configurations that select a device, the highest
priority applies (on a tie, the newest).

  herd configuration create chiller --desired '{"chiller-water":{"temperature":66}}' \
      --target "tags.building = 43" --priority 10 --metric pending="SELECT deviceId FROM devices WHERE …"
  herd configuration show chiller          the configuration and its device counts
  herd configuration list
  herd configuration update chiller --target "tags.building IN [43, 44]" --priority 20
  herd configuration delete chiller        devices keep what it set

The content of a configuration cannot change (as in Azure): create another.`,
	})
	cf.register(cmd)

	var (
		desired, target string
		priority        int
		labels, metrics []string
	)
	build := func(id string, withContent bool) (herd.Configuration, error) {
		c := herd.Configuration{ID: id, TargetCondition: target, Priority: priority}
		if withContent {
			var d map[string]json.RawMessage
			if err := json.Unmarshal([]byte(desired), &d); err != nil || len(d) == 0 {
				return c, fmt.Errorf(`--desired: give the desired properties as a JSON object, e.g. '{"fw":"2.0"}'`)
			}
			c.Content.DeviceContent = map[string]json.RawMessage{}
			for k, v := range d {
				c.Content.DeviceContent["properties.desired."+k] = v
			}
		}
		for _, l := range labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				return c, fmt.Errorf("--label %q: write KEY=VALUE", l)
			}
			if c.Labels == nil {
				c.Labels = map[string]string{}
			}
			c.Labels[k] = v
		}
		for _, m := range metrics {
			k, v, ok := strings.Cut(m, "=")
			if !ok {
				return c, fmt.Errorf("--metric %q: write NAME=QUERY", m)
			}
			if c.Metrics.Queries == nil {
				c.Metrics.Queries = map[string]string{}
			}
			c.Metrics.Queries[k] = v
		}
		return c, nil
	}
	flags := func(c *cobra.Command) {
		c.Flags().StringVar(&target, "target", "", `which devices: a condition over tags and deviceId, e.g. "tags.building = 43" ("*" for every device; empty for none)`)
		c.Flags().IntVar(&priority, "priority", 0, "the configuration's priority: the highest of those selecting a device applies")
		c.Flags().StringArrayVar(&labels, "label", nil, "a label KEY=VALUE (repeatable)")
		c.Flags().StringArrayVar(&metrics, "metric", nil, "a metric NAME=QUERY counting devices, e.g. pending=\"SELECT deviceId FROM devices WHERE properties.reported.fw != '2.0'\" (repeatable)")
	}

	createCmd := &cobra.Command{
		Use:   "create ID --desired JSON --target CONDITION",
		Short: "Create a configuration; the hub applies it to the devices it selects",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := build(args[0], true)
			if err != nil {
				return err
			}
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			out, err := c.CreateConfiguration(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return printConfiguration(e, &cf, out)
		},
	}
	createCmd.Flags().StringVar(&desired, "desired", "", `required: the desired properties to set, as JSON, e.g. '{"fw":"2.0"}'`)
	flags(createCmd)

	var etag string
	updateCmd := &cobra.Command{
		Use:   "update ID [--target CONDITION] [--priority N] [--label K=V] [--metric NAME=QUERY]",
		Short: "Change a configuration's target, priority, labels or metrics (flags not given keep their value)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			cur, err := c.GetConfiguration(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			next, err := build(args[0], false)
			if err != nil {
				return err
			}
			next.Content = cur.Content
			if !cmd.Flags().Changed("target") {
				next.TargetCondition = cur.TargetCondition
			}
			if !cmd.Flags().Changed("priority") {
				next.Priority = cur.Priority
			}
			if !cmd.Flags().Changed("label") {
				next.Labels = cur.Labels
			}
			if !cmd.Flags().Changed("metric") {
				next.Metrics.Queries = cur.Metrics.Queries
			}
			if etag == "" {
				etag = cur.ETag
			}
			out, err := c.UpdateConfiguration(cmd.Context(), next, etag)
			if err != nil {
				return err
			}
			return printConfiguration(e, &cf, out)
		},
	}
	flags(updateCmd)
	updateCmd.Flags().StringVar(&etag, "etag", "", "change it only if its etag is this (default: the etag just read; * for any)")

	showCmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a configuration with its device counts",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			out, err := c.GetConfiguration(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printConfiguration(e, &cf, out)
		},
	}

	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List the configurations",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			list, err := c.ListConfigurations(cmd.Context())
			if err != nil {
				return err
			}
			if cf.output == "json" {
				return printJSON(e, list)
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tPRIORITY\tTARGETED\tAPPLIED\tTARGET")
			for _, c := range list {
				r := c.SystemMetrics.Results
				fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%s\n", c.ID, c.Priority, r["targetedCount"], r["appliedCount"], c.TargetCondition)
			}
			return w.Flush()
		},
	}

	var deleteETag string
	deleteCmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a configuration (devices keep the desired properties it set)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			if err := c.DeleteConfiguration(cmd.Context(), args[0], deleteETag); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "deleted configuration %s\n", args[0])
			return nil
		},
	}
	deleteCmd.Flags().StringVar(&deleteETag, "etag", "", "delete it only if its etag is this")

	cmd.AddCommand(createCmd, updateCmd, showCmd, listCmd, deleteCmd)
	return cmd
}

// printConfiguration prints a configuration as JSON or as a summary.
func printConfiguration(e *env, cf *clientFlags, c *herd.Configuration) error {
	if cf.output == "json" {
		return printJSON(e, c)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	r := c.SystemMetrics.Results
	fmt.Fprintf(w, "Configuration:\t%s\nTarget:\t%s\nPriority:\t%d\nTargeted:\t%d devices\nApplied:\t%d devices\nCreated:\t%s\nUpdated:\t%s\nETag:\t%s\n",
		c.ID, c.TargetCondition, c.Priority, r["targetedCount"], r["appliedCount"],
		timeOf(&c.CreatedTimeUTC), timeOf(&c.LastUpdatedTimeUTC), c.ETag)
	for _, k := range sortedKeys(c.Content.DeviceContent) {
		fmt.Fprintf(w, "Sets:\t%s = %s\n", k, c.Content.DeviceContent[k])
	}
	for _, k := range sortedKeys(c.Labels) {
		fmt.Fprintf(w, "Label:\t%s = %s\n", k, c.Labels[k])
	}
	for _, k := range sortedKeys(c.Metrics.Queries) {
		fmt.Fprintf(w, "Metric:\t%s = %d (%s)\n", k, c.Metrics.Results[k], c.Metrics.Queries[k])
	}
	return w.Flush()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
