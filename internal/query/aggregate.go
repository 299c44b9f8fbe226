package query

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Aggregation is a compiled aggregate query: SQL whose rows Decode turns
// into result rows, or, when Packed, SQL returning one value that Unpack
// turns into all the result rows.
type Aggregation struct {
	SQL     SQL
	columns []aggColumn
	// packed: SQL is one call of the dialect's GroupAggregate; the column
	// of a projection is then the index of its group key or aggregate.
	packed bool
	nKeys  int
}

type aggColumn struct {
	name string
	// key columns are (kind, value) pairs; aggregates one value.
	key bool
	fn  string
	// index of the key (in GROUP BY order) or aggregate (packed only)
	index int
}

// GroupAggregator is implemented by dialects whose store aggregates groups
// (queries with GROUP BY) in one pass with a hash table, through a function that takes a spec
// (NewGrouper), the group keys as (kind, value) pairs and one value per
// aggregate other than COUNT, and returns every result row as JSON
// (Grouper.Result). SQLite's own GROUP BY sorts the rows first, which
// costs seconds over a million twins.
type GroupAggregator interface {
	GroupAggregate(spec string, args []string) string
	// GroupKey is how the function receives the group key at path in
	// doc: a (kind, value) pair of SQL expressions. The kind is a Kind
	// name, or "json" with the value's JSON text (NULL when undefined),
	// which costs one lookup per row instead of two.
	GroupKey(doc, path string) (kind, value string)
}

// JSONGrouper is implemented by dialects that group by a JSON value
// itself, whose equality compares numbers by value (PostgreSQL's jsonb):
// group is the grouping expression, value its JSON text (NULL where the
// property is missing), which the result row decodes.
type JSONGrouper interface {
	JSONGroupKey(doc, path string) (group, value string)
}

// CompileAggregate compiles a query with aggregates and/or GROUP BY over
// the devices table into one statement returning one row per group,
// ordered by the group keys, at most TOP rows.
func CompileAggregate(d Dialect, q *Query) (a *Aggregation, err error) {
	if !q.Aggregated() {
		return nil, fmt.Errorf("query: %s has no aggregates", q)
	}
	c := newCompiler(d, q.From, "")
	where, err := c.where(q)
	if err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			ce, ok := r.(*Error)
			if !ok {
				panic(r)
			}
			err = ce
		}
	}()
	a = &Aggregation{}
	if ga, ok := d.(GroupAggregator); ok && len(q.GroupBy) > 0 {
		return c.packedAggregate(ga, q, a, where)
	}
	var sel, group []string
	keyCols := map[string][2]string{}
	for _, g := range q.GroupBy {
		o := c.path(g)
		if jg, ok := d.(JSONGrouper); ok && o.doc != "" {
			grp, val := jg.JSONGroupKey(o.doc, o.path)
			keyCols[g.String()] = [2]string{"'json'", val}
			group = append(group, grp)
			continue
		}
		v, err := c.groupValue(o, g)
		if err != nil {
			return nil, err
		}
		k := c.kindExpr(o)
		keyCols[g.String()] = [2]string{k, v}
		for _, x := range []string{k, v} {
			if !strings.HasPrefix(x, "'") && x != "NULL" {
				group = append(group, x) // a constant does not group
			}
		}
	}
	unnamed := 0
	for _, p := range q.Select {
		switch e := p.Expr.(type) {
		case *Path:
			kv := keyCols[e.String()]
			sel = append(sel, kv[0], kv[1])
			a.columns = append(a.columns, aggColumn{name: p.Name(0), key: true})
		case *Aggregate:
			if p.Alias == "" {
				unnamed++
			}
			sel = append(sel, c.aggregate(e))
			a.columns = append(a.columns, aggColumn{name: p.Name(unnamed), fn: e.Func})
		}
	}
	text := "SELECT " + strings.Join(sel, ", ") + " FROM " + tableOf(q.From) + " WHERE " + where
	switch {
	case len(group) > 0:
		text += " GROUP BY " + strings.Join(group, ", ") + " ORDER BY " + strings.Join(group, ", ")
	case len(q.GroupBy) > 0:
		// Grouped by constants only: one group, and none over no rows.
		text += " HAVING count(*) > 0"
	}
	if q.HasTop {
		text += " LIMIT " + c.bind(q.Top)
	}
	a.SQL = c.finish(text)
	return a, nil
}

func tableOf(s Source) string {
	switch s {
	case DeviceJobs:
		return "device_jobs"
	case DeviceModules:
		return "modules"
	}
	return "devices"
}

func (c *compiler) groupValue(o operand, p *Path) (string, error) {
	switch {
	case o.doc != "":
		return c.d.JSONValue(o.doc, o.path), nil
	case o.cond != nil || o.kinds == Kinds(Undefined):
		return "NULL", nil
	case o.num != "":
		return o.num, nil
	case o.str != "":
		return o.str, nil
	}
	return "", errorf(p.Pos, "%s cannot be grouped or aggregated: it is not stored as one value", p)
}

func (c *compiler) aggregate(e *Aggregate) string {
	if e.Func == "COUNT" {
		return "count(*)"
	}
	o := c.path(e.Arg.(*Path))
	isNum := c.is(o, Kinds(Number)).s
	isStr := c.is(o, Kinds(String)).s
	n := "CASE WHEN " + isNum + " THEN " + o.num + " END"
	s := "CASE WHEN " + isStr + " THEN " + o.str + " END"
	if isNum == "FALSE" {
		n = "NULL"
	}
	if isStr == "FALSE" {
		s = "NULL"
	}
	switch e.Func {
	case "SUM":
		return "sum(" + c.d.Real(n) + ")"
	case "AVG":
		return "avg(" + c.d.Real(n) + ")"
	case "MIN":
		return c.d.FirstOf("min("+n+")", "min("+s+")")
	}
	return c.d.FirstOf("max("+s+")", "max("+n+")")
}

// Columns is the number of SQL columns each result row has.
func (a *Aggregation) Columns() int {
	n := 0
	for _, c := range a.columns {
		n++
		if c.key {
			n++
		}
	}
	return n
}

// Decode turns one row of the aggregation's SQL (values as scanned into
// []any) into a result row; undefined values are left out.
func (a *Aggregation) Decode(vals []any) (map[string]any, error) {
	row := map[string]any{}
	i := 0
	for _, col := range a.columns {
		var v any
		if col.key {
			kind, _ := asString(vals[i])
			var err error
			if v, err = decodeKey(kind, vals[i+1]); err != nil {
				return nil, fmt.Errorf("decode %s: %w", col.name, err)
			}
			i += 2
		} else {
			v = vals[i]
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			if v == nil {
				v = undef
			}
			i++
		}
		if Defined(v) {
			row[col.name] = v
		}
	}
	return row, nil
}

func asString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	}
	return "", false
}

func decodeKey(kind string, v any) (any, error) {
	if kind == "json" && v == nil {
		return undef, nil // a JSONGrouper key of a missing property
	}
	switch kind {
	case "":
		return undef, nil
	case "null":
		return nil, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "number":
		switch v := v.(type) {
		case int64, float64:
			return v, nil
		}
		return nil, fmt.Errorf("number stored as %T", v)
	case "string":
		s, ok := asString(v)
		if !ok {
			return nil, fmt.Errorf("string stored as %T", v)
		}
		return s, nil
	}
	s, _ := asString(v)
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}

// packedAggregate compiles the aggregation into one GroupAggregate call.
func (c *compiler) packedAggregate(ga GroupAggregator, q *Query, a *Aggregation, where string) (*Aggregation, error) {
	var args []string
	keyIndex := map[string]int{}
	for i, g := range q.GroupBy {
		o := c.path(g)
		v, err := c.groupValue(o, g)
		if err != nil {
			return nil, err
		}
		k := c.kindExpr(o)
		if o.doc != "" {
			k, v = ga.GroupKey(o.doc, o.path)
		}
		args = append(args, k, v)
		keyIndex[g.String()] = i
	}
	a.packed, a.nKeys = true, len(q.GroupBy)
	spec := []string{strconv.Itoa(len(q.GroupBy))}
	unnamed := 0
	for _, p := range q.Select {
		switch e := p.Expr.(type) {
		case *Path:
			a.columns = append(a.columns, aggColumn{name: p.Name(0), key: true, index: keyIndex[e.String()]})
		case *Aggregate:
			if p.Alias == "" {
				unnamed++
			}
			a.columns = append(a.columns, aggColumn{name: p.Name(unnamed), fn: e.Func, index: len(spec) - 1})
			spec = append(spec, e.Func)
			if e.Func != "COUNT" {
				args = append(args, c.aggregateArg(e))
			}
		}
	}
	text := "SELECT " + ga.GroupAggregate(c.bind(strings.Join(spec, ";")), args) + " FROM " + tableOf(q.From) + " WHERE " + where
	a.SQL = c.finish(text)
	return a, nil
}

// aggregateArg is the value an aggregate reads from each twin: numbers
// for SUM and AVG, numbers and strings for MIN and MAX, NULL otherwise.
func (c *compiler) aggregateArg(e *Aggregate) string {
	o := c.path(e.Arg.(*Path))
	isNum := c.is(o, Kinds(Number))
	isStr := c.is(o, Kinds(String))
	var whens []string
	if isNum.s != "FALSE" {
		whens = append(whens, " WHEN "+isNum.s+" THEN "+o.num)
	}
	if (e.Func == "MIN" || e.Func == "MAX") && isStr.s != "FALSE" {
		whens = append(whens, " WHEN "+isStr.s+" THEN "+o.str)
	}
	if len(whens) == 0 {
		return "NULL"
	}
	return "CASE" + strings.Join(whens, "") + " END"
}

// Packed reports whether the SQL returns all rows as one value for
// Unpack.
func (a *Aggregation) Packed() bool { return a.packed }

// Unpack turns the value of a packed aggregation (Grouper.Result, or ""
// when the function saw no rows) into result rows.
func (a *Aggregation) Unpack(packed string) ([]map[string]any, error) {
	if packed == "" {
		// The function saw no rows: no groups, or without GROUP BY the one
		// row of an empty input.
		if a.nKeys > 0 {
			return []map[string]any{}, nil
		}
		row := map[string]any{}
		for _, col := range a.columns {
			if col.fn == "COUNT" {
				row[col.name] = int64(0)
			}
		}
		return []map[string]any{row}, nil
	}
	dec := json.NewDecoder(strings.NewReader(packed))
	dec.UseNumber()
	var raw [][]any
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("decode aggregation: %w", err)
	}
	rows := make([]map[string]any, 0, len(raw))
	for _, r := range raw {
		for i, v := range r {
			if n, ok := v.(json.Number); ok {
				if x, err := n.Int64(); err == nil {
					r[i] = x
				} else if f, err := n.Float64(); err == nil {
					r[i] = f
				}
			}
		}
		row := map[string]any{}
		for _, col := range a.columns {
			var v any
			if col.key {
				kind, _ := asString(r[2*col.index])
				var err error
				if v, err = decodeKey(kind, r[2*col.index+1]); err != nil {
					return nil, fmt.Errorf("decode %s: %w", col.name, err)
				}
			} else if v = r[2*a.nKeys+col.index]; v == nil {
				v = undef
			}
			if Defined(v) {
				row[col.name] = v
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}
