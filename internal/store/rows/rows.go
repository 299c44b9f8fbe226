// Package rows is the store-neutral form of Herd's tables: which tables a
// hub's data lives in, their columns and what kind of value each holds.
// Both stores export and load rows in this form, which is how
// `herd store copy` moves a hub from one store to another without either
// store knowing the other (internal/store.Copy).
//
// A row is a []any in the order of its table's Columns; each value is nil
// (SQL NULL) or, by the column's Kind, a string (Text, and JSON as its
// text), an int64 (Int) or a bool (Bool).
package rows

import (
	"context"
	"errors"
)

// Kind is what a column holds.
type Kind int

// Column kinds.
const (
	Text Kind = iota // text, compared in byte order
	Int              // a 64-bit integer
	Bool             // true or false (0 or 1 in SQLite)
	JSON             // a JSON document (jsonb in PostgreSQL and, for twin sections, SQLite)
)

// Column is one column of a table.
type Column struct {
	Name string
	Kind Kind
}

// Table is one table of a hub's data.
type Table struct {
	Name    string
	Key     []string // the primary key's columns, the export order
	Columns []Column
}

// Names returns the names of t's columns in order.
func (t *Table) Names() []string {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = c.Name
	}
	return names
}

// Tables are the tables of a hub's data, each after the tables it refers
// to: loading them in this order satisfies the foreign keys. The schema
// migrations' own bookkeeping is not among them (each store has its own).
var Tables = []*Table{
	{Name: "policies", Key: []string{"name"}, Columns: []Column{
		{"name", Text}, {"primary_key", Text}, {"secondary_key", Text}, {"rights", Int},
	}},
	{Name: "settings", Key: []string{"name"}, Columns: []Column{
		{"name", Text}, {"value", Text},
	}},
	{Name: "devices", Key: []string{"device_id"}, Columns: []Column{
		{"device_id", Text}, {"generation_id", Text}, {"etag", Int}, {"status", Text},
		{"status_reason", Text}, {"status_updated_time", Text}, {"auth_type", Text},
		{"primary_key", Text}, {"secondary_key", Text}, {"primary_thumbprint", Text},
		{"secondary_thumbprint", Text}, {"iot_edge", Bool}, {"device_scope", Text},
		{"parent_scopes", JSON}, {"connection_state", Text}, {"connection_state_updated_time", Text},
		{"last_activity_time", Text}, {"c2d_message_count", Int}, {"twin_etag", Int},
		{"twin_version", Int}, {"tags", JSON}, {"desired", JSON}, {"desired_version", Int},
		{"desired_metadata", JSON}, {"reported", JSON}, {"reported_version", Int},
		{"reported_metadata", JSON}, {"conn_node", Text}, {"conn_epoch", Int},
	}},
	{Name: "modules", Key: []string{"device_id", "module_id"}, Columns: []Column{
		{"device_id", Text}, {"module_id", Text}, {"generation_id", Text}, {"etag", Int},
		{"managed_by", Text}, {"auth_type", Text}, {"primary_key", Text}, {"secondary_key", Text},
		{"primary_thumbprint", Text}, {"secondary_thumbprint", Text}, {"connection_state", Text},
		{"connection_state_updated_time", Text}, {"last_activity_time", Text}, {"c2d_message_count", Int},
		{"twin_etag", Int}, {"twin_version", Int}, {"tags", JSON}, {"desired", JSON}, {"desired_version", Int},
		{"desired_metadata", JSON}, {"reported", JSON}, {"reported_version", Int}, {"reported_metadata", JSON},
		{"conn_node", Text}, {"conn_epoch", Int},
	}},
	{Name: "device_activity", Key: []string{"device_id"}, Columns: []Column{
		{"device_id", Text}, {"last_activity_time", Text},
	}},
	{Name: "module_activity", Key: []string{"device_id", "module_id"}, Columns: []Column{
		{"device_id", Text}, {"module_id", Text}, {"last_activity_time", Text},
	}},
	{Name: "device_sessions", Key: []string{"device_id"}, Columns: []Column{
		{"device_id", Text}, {"subscriptions", Int},
	}},
	{Name: "module_sessions", Key: []string{"device_id", "module_id"}, Columns: []Column{
		{"device_id", Text}, {"module_id", Text}, {"subscriptions", Int},
	}},
	{Name: "jobs", Key: []string{"job_id"}, Columns: []Column{
		{"job_id", Text}, {"type", Text}, {"status", Text}, {"query_condition", Text},
		{"created_time", Text}, {"start_time", Text}, {"end_time", Text}, {"started_time", Text},
		{"max_execution_seconds", Int}, {"request", Text}, {"failure_reason", Text},
		{"status_message", Text}, {"device_count", Int}, {"succeeded_count", Int},
		{"failed_count", Int}, {"running_count", Int}, {"pending_count", Int},
		{"herd", Text}, {"wave", Int}, {"continuous", Bool},
		{"lease_node", Text}, {"lease_epoch", Int}, {"lease_until", Text},
	}},
	{Name: "device_jobs", Key: []string{"job_id", "device_id"}, Columns: []Column{
		{"job_id", Text}, {"device_id", Text}, {"job_type", Text}, {"status", Text},
		{"start_time", Text}, {"end_time", Text}, {"created_time", Text},
		{"last_updated_time", Text}, {"outcome", Text}, {"error_code", Text},
		{"error_description", Text}, {"attempts", Int}, {"retry_at", Text},
	}},
	{Name: "ca_certificates", Key: []string{"name"}, Columns: []Column{
		{"name", Text}, {"certificate", Text}, {"thumbprint", Text}, {"verified", Bool},
		{"verification_code", Text}, {"created_time", Text}, {"updated_time", Text},
		{"etag", Int},
	}},
	{Name: "configurations", Key: []string{"id"}, Columns: []Column{
		{"id", Text}, {"body", Text}, {"created_time", Text}, {"updated_time", Text}, {"etag", Int},
	}},
}

// Source is a store whose rows can be read out.
type Source interface {
	// CountRows returns how many rows t holds.
	CountRows(ctx context.Context, t *Table) (int64, error)
	// ExportRows calls fn with every row of t in primary-key order, from
	// one consistent snapshot of t. fn may keep nothing of row past the
	// call. An error from fn stops the export and is returned.
	ExportRows(ctx context.Context, t *Table, fn func(row []any) error) error
}

// Sink is a store that rows can be loaded into.
type Sink interface {
	// LoadRows runs fill in one transaction and commits if it returns
	// nil, so that a load that fails leaves the store as it was. Unless
	// replace is set, a store that holds devices, jobs, CA certificates
	// or policies fails with ErrNotEmpty before fill runs; with replace,
	// every table is emptied first. Settings are overwritten row by row
	// (a new hub writes its own). fill calls put with batches of rows of
	// one table at a time, the tables in the order of Tables.
	LoadRows(ctx context.Context, replace bool, fill func(put func(t *Table, batch [][]any) error) error) error
}

// ErrNotEmpty is the error of Sink.LoadRows into a store that already
// holds a hub's data.
var ErrNotEmpty = errors.New("the target store is not empty")
