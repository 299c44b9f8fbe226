package query

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Grouper aggregates rows into groups with a hash table: the work of a
// GroupAggregator dialect's store function (SQLite's herd_aggregate). The
// spec is "<number of keys>;<FUNC>;<FUNC>…" with COUNT, SUM, AVG, MIN or
// MAX; each row gives the keys as (kind name or nil, value) pairs, then one
// value for every aggregate but COUNT (NULL for a value the aggregate
// ignores). The semantics are those of Query.Aggregate.
type Grouper struct {
	nKeys  int
	funcs  []string
	groups map[string]*group
	buf    []byte
}

type group struct {
	keys []any
	aggs []aggState
}

type aggState struct {
	count      int64
	sum        kbn
	nums, strs int64
	minN, maxN float64
	minS, maxS string
}

// NewGrouper parses a spec.
func NewGrouper(spec string) (*Grouper, error) {
	// The store may pass a view of its own memory: keep a copy.
	parts := strings.Split(strings.Clone(spec), ";")
	n, err := strconv.Atoi(parts[0])
	if err != nil || n < 0 {
		return nil, fmt.Errorf("grouper spec %q: bad key count", spec)
	}
	for _, f := range parts[1:] {
		if !aggregates[f] {
			return nil, fmt.Errorf("grouper spec %q: unknown aggregate %s", spec, f)
		}
	}
	return &Grouper{nKeys: n, funcs: parts[1:], groups: map[string]*group{}}, nil
}

// Args is the number of values each row gives.
func (g *Grouper) Args() int {
	n := 2 * g.nKeys
	for _, f := range g.funcs {
		if f != "COUNT" {
			n++
		}
	}
	return n
}

// keyOf normalises one group key given as (kind, value), or as ("json",
// JSON text) by a store function, into the bytes that identify its group
// (numbers by value, strings decoded) and the (kind name, value) pair that
// Unpack decodes.
func keyOf(buf []byte, kind, v any) ([]byte, string, any) {
	if b, ok := v.([]byte); ok {
		v = string(b)
	}
	k, _ := kind.(string)
	if k == "json" {
		text, ok := v.(string)
		switch {
		case !ok || text == "":
			k, v = "", nil
		case text == "null":
			k, v = "null", nil
		case text == "true":
			k, v = "true", nil
		case text == "false":
			k, v = "false", nil
		case text[0] == '"':
			k = "string"
			if strings.IndexByte(text, '\\') < 0 {
				v = text[1 : len(text)-1]
			} else {
				var s string
				if json.Unmarshal([]byte(text), &s) == nil {
					v = s
				}
			}
		case text[0] == '{', text[0] == '[':
			k = "object"
			if text[0] == '[' {
				k = "array"
			}
			// The group is the value, not its spelling: key order and
			// number forms (1, 1.0, 1e0) do not split it. The row shows
			// the first spelling seen.
			buf = append(buf, byte(kindRank[k]))
			buf = appendCanonJSON(buf, text)
			return buf, k, v
		default:
			k = "number"
			if n, err := strconv.ParseInt(text, 10, 64); err == nil {
				v = n
			} else if f, err := strconv.ParseFloat(text, 64); err == nil {
				v = f
			}
		}
	}
	buf = append(buf, byte(kindRank[k]))
	switch x := v.(type) {
	case int64:
		buf = binary.BigEndian.AppendUint64(buf, math.Float64bits(float64(x)))
	case float64:
		buf = binary.BigEndian.AppendUint64(buf, math.Float64bits(x+0)) // -0 groups with 0
	case string:
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(x)))
		buf = append(buf, x...)
	}
	return buf, k, v
}

// appendCanonJSON appends the canonical form of a JSON array or object:
// keys sorted, numbers as their float64 value. Text that does not decode
// is appended as it is.
func appendCanonJSON(buf []byte, text string) []byte {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return append(buf, text...)
	}
	b, err := json.Marshal(canonNumbers(v))
	if err != nil {
		return append(buf, text...)
	}
	return append(buf, b...)
}

// Step adds one row. It keeps copies of the strings it retains, so the
// caller may reuse their memory afterwards.
func (g *Grouper) Step(args []any) error {
	if len(args) != g.Args() {
		return fmt.Errorf("grouper: %d values, want %d", len(args), g.Args())
	}
	id := g.buf[:0]
	for i := 0; i < g.nKeys; i++ {
		id, args[2*i], args[2*i+1] = keyOf(id, args[2*i], args[2*i+1])
	}
	g.buf = id
	gr := g.groups[string(id)]
	if gr == nil {
		gr = &group{keys: make([]any, 2*g.nKeys), aggs: make([]aggState, len(g.funcs))}
		for i, k := range args[:2*g.nKeys] {
			if s, ok := k.(string); ok {
				k = strings.Clone(s) // the store may reuse the memory of args
			}
			gr.keys[i] = k
		}
		g.groups[string(id)] = gr
	}
	next := 2 * g.nKeys
	for i, f := range g.funcs {
		st := &gr.aggs[i]
		st.count++
		if f == "COUNT" {
			continue
		}
		v := args[next]
		next++
		switch v := v.(type) {
		case int64:
			st.number(float64(v))
		case float64:
			st.number(v)
		case string:
			st.text(v)
		case []byte:
			st.text(string(v))
		}
	}
	return nil
}

func (st *aggState) number(x float64) {
	st.sum.add(x)
	if st.nums == 0 || x < st.minN {
		st.minN = x
	}
	if st.nums == 0 || x > st.maxN {
		st.maxN = x
	}
	st.nums++
}

func (st *aggState) text(s string) {
	if st.strs == 0 || s < st.minS {
		st.minS = strings.Clone(s)
	}
	if st.strs == 0 || s > st.maxS {
		st.maxS = strings.Clone(s)
	}
	st.strs++
}

func (st *aggState) value(f string) any {
	switch f {
	case "COUNT":
		return st.count
	case "SUM":
		if st.nums > 0 {
			return st.sum.total()
		}
	case "AVG":
		if st.nums > 0 {
			return st.sum.total() / float64(st.nums)
		}
	case "MIN":
		if st.nums > 0 {
			return st.minN
		}
		if st.strs > 0 {
			return st.minS
		}
	case "MAX":
		if st.strs > 0 {
			return st.maxS
		}
		if st.nums > 0 {
			return st.maxN
		}
	}
	return nil
}

var kindRank = map[string]int{"null": 1, "false": 2, "true": 3, "number": 4, "string": 5, "array": 6, "object": 7}

func numberOf(v any) float64 {
	switch v := v.(type) {
	case int64:
		return float64(v)
	case float64:
		return v
	}
	return math.NaN()
}

// compareKeys orders groups by their keys: undefined first, then by kind
// (null, false, true, numbers, strings, arrays, objects), numbers by value
// and everything else by text.
func compareKeys(a, b []any) int {
	for i := 0; i+1 < len(a); i += 2 {
		ka, _ := a[i].(string)
		kb, _ := b[i].(string)
		if c := cmp.Compare(kindRank[ka], kindRank[kb]); c != 0 {
			return c
		}
		if ka == "number" {
			if c := cmp.Compare(numberOf(a[i+1]), numberOf(b[i+1])); c != 0 {
				return c
			}
			continue
		}
		sa, _ := a[i+1].(string)
		sb, _ := b[i+1].(string)
		if c := strings.Compare(sa, sb); c != 0 {
			return c
		}
	}
	return 0
}

// Result returns every group as a JSON array of rows, each row the keys'
// (kind, value) pairs then the aggregates, ordered by the keys. Without
// keys there is always one row, even over no input.
func (g *Grouper) Result() (string, error) {
	groups := make([]*group, 0, len(g.groups))
	for _, gr := range g.groups {
		groups = append(groups, gr)
	}
	if g.nKeys == 0 && len(groups) == 0 {
		groups = append(groups, &group{aggs: make([]aggState, len(g.funcs))})
	}
	slices.SortFunc(groups, func(a, b *group) int { return compareKeys(a.keys, b.keys) })
	rows := make([][]any, len(groups))
	for i, gr := range groups {
		row := append([]any{}, gr.keys...)
		for j, f := range g.funcs {
			row = append(row, gr.aggs[j].value(f))
		}
		rows[i] = row
	}
	b, err := json.Marshal(rows)
	return string(b), err
}
