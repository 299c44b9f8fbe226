package query

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Aggregation is a compiled aggregate query: SQL whose rows Decode turns
// into result rows.
type Aggregation struct {
	SQL     SQL
	columns []aggColumn
}

type aggColumn struct {
	name string
	// key columns are (kind, value) pairs; aggregates one value.
	key bool
	fn  string
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
	var sel, group []string
	keyCols := map[string][2]string{}
	for _, g := range q.GroupBy {
		o := c.path(g)
		v, err := c.groupValue(o, g)
		if err != nil {
			return nil, err
		}
		k := c.kindExpr(o)
		keyCols[g.String()] = [2]string{k, v}
		group = append(group, k, v)
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
	if len(group) > 0 {
		text += " GROUP BY " + strings.Join(group, ", ") + " ORDER BY " + strings.Join(group, ", ")
	}
	if q.HasTop {
		text += " LIMIT " + c.bind(q.Top)
	}
	a.SQL = c.finish(text)
	return a, nil
}

func tableOf(s Source) string {
	if s == DeviceJobs {
		return "device_jobs"
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
	isNum := coalesced(c.is(o, Kinds(Number)))
	isStr := coalesced(c.is(o, Kinds(String)))
	n := "CASE WHEN " + isNum + " THEN " + o.num + " END"
	s := "CASE WHEN " + isStr + " THEN " + o.str + " END"
	if isNum == "0" {
		n = "NULL"
	}
	if isStr == "0" {
		s = "NULL"
	}
	switch e.Func {
	case "SUM":
		return "sum(" + c.d.Real(n) + ")"
	case "AVG":
		return "avg(" + n + ")"
	case "MIN":
		return "COALESCE(min(" + n + "), min(" + s + "))"
	}
	return "COALESCE(max(" + s + "), max(" + n + "))"
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
