package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/herd-iot/herd/internal/query"
	"github.com/herd-iot/herd/service"
)

func queryCommand(e *env) *cobra.Command {
	var cf clientFlags
	var pageSize int
	cmd := &cobra.Command{
		Use:   "query QUERY",
		Short: "Run an IoT Hub query over twins or job records",
		Long: `Run an IoT Hub query (POST /devices/query) and print every result, following
the hub's pages. See docs/query.md for the language.`,
		Example: `  herd query "SELECT * FROM devices WHERE tags.building = 43"
  herd query "SELECT tags.building, COUNT() AS devices FROM devices GROUP BY tags.building"
  herd query "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'fw'" -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client(cmd.Context(), cmd, e)
			if err != nil {
				return err
			}
			var items []json.RawMessage
			itemType := ""
			for page, err := range c.Query(cmd.Context(), args[0], service.WithPageSize(pageSize)) {
				if err != nil {
					return err
				}
				itemType = page.ItemType
				items = append(items, page.Items...)
			}
			if items == nil {
				items = []json.RawMessage{}
			}
			if cf.output == "json" {
				return printJSON(e, items)
			}
			return printQueryTable(e, args[0], itemType, items)
		},
	}
	cf.register(cmd)
	cmd.Flags().IntVar(&pageSize, "page-size", 0, "results per request (the hub's default and maximum is 100)")
	return cmd
}

// printQueryTable prints results as a table: the main twin or job record
// fields, or for projections and aggregates one column per name, in the
// order of the SELECT list.
func printQueryTable(e *env, text, itemType string, items []json.RawMessage) error {
	var rows []map[string]any
	for _, it := range items {
		dec := json.NewDecoder(bytes.NewReader(it))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			return fmt.Errorf("decode result: %w", err)
		}
		rows = append(rows, m)
	}
	var cols []string
	switch itemType {
	case service.ItemTwin:
		cols = []string{"deviceId", "status", "connectionState", "lastActivityTime", "version", "tags"}
	case service.ItemDeviceJob:
		cols = []string{"jobId", "deviceId", "jobType", "status", "endTimeUtc", "error.code"}
	default:
		cols = rawColumns(text, rows)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	heads := make([]string, len(cols))
	for i, c := range cols {
		heads[i] = strings.ToUpper(c)
	}
	fmt.Fprintln(w, strings.Join(heads, "\t"))
	for _, r := range rows {
		cells := make([]string, len(cols))
		for i, c := range cols {
			cells[i] = cell(r, c)
		}
		fmt.Fprintln(w, strings.Join(cells, "\t"))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(e.stderr, "%d result(s)\n", len(rows))
	return err
}

// rawColumns orders the columns of projection rows as the query's SELECT
// list does (the JSON objects themselves carry no order).
func rawColumns(text string, rows []map[string]any) []string {
	var cols []string
	seen := map[string]bool{}
	if q, err := query.Parse(text); err == nil {
		unnamed := 0
		for _, p := range q.Select {
			if _, ok := p.Expr.(*query.Aggregate); ok && p.Alias == "" {
				unnamed++
			}
			name := p.Name(unnamed)
			cols, seen[name] = append(cols, name), true
		}
	}
	var extra []string
	for _, r := range rows {
		for k := range r {
			if !seen[k] {
				extra, seen[k] = append(extra, k), true
			}
		}
	}
	sort.Strings(extra)
	return append(cols, extra...)
}

// cell formats a (dotted) field of a row: strings bare, missing values
// empty, anything else as compact JSON.
func cell(row map[string]any, path string) string {
	var v any = row
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		if v, ok = m[k]; !ok {
			return ""
		}
	}
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}
