package query

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/herd-iot/herd"
)

// This file is the reference evaluator: it interprets a query over JSON
// documents in memory (decoded with json.Decoder.UseNumber, or built from
// Go values). It defines the language's semantics (docs/query.md); the SQL
// compiler must agree with it, which the differential test checks.

// undefinedValue stands for a property that does not exist.
type undefinedValue struct{}

var undef any = undefinedValue{}

// kindOf returns the kind of a decoded JSON value.
func kindOf(v any) Kind {
	switch v := v.(type) {
	case undefinedValue:
		return Undefined
	case nil:
		return Null
	case bool:
		if v {
			return True
		}
		return False
	case json.Number, float64, int, int64:
		return Number
	case string:
		return String
	case []any:
		return Array
	case map[string]any:
		return Object
	}
	return Undefined
}

func isPrimitive(k Kind) bool { return k >= Null && k <= String }

// num returns a number value as float64.
func num(v any) float64 {
	switch v := v.(type) {
	case json.Number:
		f, _ := strconv.ParseFloat(string(v), 64)
		return f
	case float64:
		return v
	case int:
		return float64(v)
	case int64:
		return float64(v)
	}
	return math.NaN()
}

// lookup follows segs through nested objects.
func lookup(doc map[string]any, segs []string) any {
	var cur any = doc
	for _, s := range segs {
		m, ok := cur.(map[string]any)
		if !ok {
			return undef
		}
		if cur, ok = m[s]; !ok {
			return undef
		}
	}
	return cur
}

func truth(v any) bool { b, ok := v.(bool); return ok && b }

// class groups the kinds that compare with each other: true and false are
// one class, booleans.
func class(k Kind) Kind {
	if k == False {
		return True
	}
	return k
}

// compare applies a comparison operator. Comparisons are defined between
// two primitives of the same class (null, boolean, number, string); any
// other pair — an undefined operand, an object or array, two kinds that
// differ — gives undefined, as does ordering nulls or booleans. So in
// three-valued logic NOT and != leave out twins that lack the property
// or hold another kind.
func compare(op string, a, b any) any {
	ka, kb := kindOf(a), kindOf(b)
	if !isPrimitive(ka) || !isPrimitive(kb) || class(ka) != class(kb) {
		return undef
	}
	var c int // -1, 0, 1: a against b
	switch class(ka) {
	case Null:
	case True:
		if ka != kb {
			c = 1 // only = and != use it
		}
	case Number:
		x, y := num(a), num(b)
		switch {
		case x < y:
			c = -1
		case x > y:
			c = 1
		case x != y:
			return undef // NaN
		}
	case String:
		c = strings.Compare(a.(string), b.(string))
	}
	switch op {
	case "=":
		return c == 0
	case "!=":
		return c != 0
	}
	if class(ka) == Null || class(ka) == True {
		return undef // not ordered
	}
	switch op {
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	case ">=":
		return c >= 0
	}
	return undef
}

// and3, or3 and not3 are Kleene's three-valued logic over true, false and
// undefined; a value that is not a boolean counts as undefined.
func and3(a, b any) any {
	x, xok := a.(bool)
	y, yok := b.(bool)
	switch {
	case xok && !x || yok && !y:
		return false
	case xok && yok:
		return true
	}
	return undef
}

func or3(a, b any) any {
	x, xok := a.(bool)
	y, yok := b.(bool)
	switch {
	case xok && x || yok && y:
		return true
	case xok && yok:
		return false
	}
	return undef
}

func not3(a any) any {
	if x, ok := a.(bool); ok {
		return !x
	}
	return undef
}

// arith applies an arithmetic operator; anything but two numbers, a zero
// divisor or a NaN result gives undefined.
func arith(op string, a, b any) any {
	if kindOf(a) != Number || kindOf(b) != Number {
		return undef
	}
	x, y := num(a), num(b)
	var r float64
	switch op {
	case "+":
		r = x + y
	case "-":
		r = x - y
	case "*":
		r = x * y
	case "/":
		if y == 0 {
			return undef
		}
		r = x / y
	case "%":
		if y == 0 {
			return undef
		}
		r = math.Mod(x, y)
	}
	if math.IsNaN(r) {
		return undef
	}
	return r
}

func literalValue(l *Literal) any {
	switch l.Kind {
	case Null:
		return nil
	case True:
		return true
	case False:
		return false
	case Number:
		return l.Num
	case String:
		return l.Str
	}
	return undef
}

// asciiCase maps ASCII letters only, as SQLite's lower() and upper() do.
func asciiCase(s string, upper bool) string {
	b := []byte(s)
	for i, c := range b {
		if upper && c >= 'a' && c <= 'z' {
			b[i] = c - 32
		} else if !upper && c >= 'A' && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return string(b)
}

// Eval evaluates an expression over a document. Undefined results are
// returned as a private sentinel; use Defined to test for it.
func Eval(e Expr, doc map[string]any) any {
	switch e := e.(type) {
	case *Path:
		return lookup(doc, e.Segs)
	case *Literal:
		return literalValue(e)
	case *Unary:
		x := Eval(e.X, doc)
		if e.Op == "NOT" {
			return not3(x)
		}
		if kindOf(x) != Number {
			return undef
		}
		return -num(x)
	case *Binary:
		switch e.Op {
		case "AND":
			return and3(Eval(e.L, doc), Eval(e.R, doc))
		case "OR":
			return or3(Eval(e.L, doc), Eval(e.R, doc))
		case "+", "-", "*", "/", "%":
			return arith(e.Op, Eval(e.L, doc), Eval(e.R, doc))
		}
		return compare(e.Op, Eval(e.L, doc), Eval(e.R, doc))
	case *In:
		// IN and NIN test a defined primitive (else undefined) against
		// the constants: found among them by = or not.
		x := Eval(e.X, doc)
		if !isPrimitive(kindOf(x)) {
			return undef
		}
		found := false
		for _, l := range e.List {
			found = found || compare("=", x, literalValue(l)) == true
		}
		return found != e.Not
	case *Call:
		return call(e, doc)
	}
	return undef
}

func call(e *Call, doc map[string]any) any {
	a := Eval(e.Args[0], doc)
	k := kindOf(a)
	switch e.Name {
	case "IS_DEFINED":
		return k != Undefined
	case "IS_NULL":
		return k == Null
	case "IS_BOOL":
		return k == True || k == False
	case "IS_NUMBER":
		return k == Number
	case "IS_STRING":
		return k == String
	case "IS_OBJECT":
		return k == Object
	case "IS_ARRAY":
		return k == Array
	case "IS_PRIMITIVE":
		return isPrimitive(k)
	case "LOWER", "UPPER":
		if k != String {
			return undef
		}
		return asciiCase(a.(string), e.Name == "UPPER")
	case "LENGTH":
		if k != String {
			return undef
		}
		return float64(utf8.RuneCountInString(a.(string)))
	}
	b := Eval(e.Args[1], doc)
	if k != String || kindOf(b) != String {
		return undef
	}
	s, t := a.(string), b.(string)
	switch e.Name {
	case "STARTSWITH":
		return strings.HasPrefix(s, t)
	case "ENDSWITH":
		return strings.HasSuffix(s, t)
	case "CONTAINS":
		return strings.Contains(s, t)
	}
	return false
}

// Defined reports whether an Eval result is a value (not undefined).
func Defined(v any) bool { return kindOf(v) != Undefined }

// Match reports whether doc satisfies the query's WHERE clause.
func (q *Query) Match(doc map[string]any) bool {
	return q.Where == nil || truth(Eval(q.Where, doc))
}

// Item is the result a query returns for one twin it selected: the twin
// itself for SELECT *, else its projection row (Project over the twin as
// JSON, numbers kept exact).
func (q *Query) Item(t *herd.Twin) (any, error) {
	if q.Star {
		return t, nil
	}
	b, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	return q.Project(doc), nil
}

// Project builds the result row of a non-aggregated projection query for
// one document: each projection's name and value, undefined ones left out.
func (q *Query) Project(doc map[string]any) map[string]any {
	row := map[string]any{}
	for i, p := range q.Select {
		if v := Eval(p.Expr, doc); Defined(v) {
			row[p.Name(i+1)] = v
		}
	}
	return row
}

// Aggregate computes the rows of an aggregated query (aggregates and/or
// GROUP BY) over documents that already passed Match, in memory. It is the
// reference for the SQL that the store runs; rows come in no particular
// order and TOP is not applied.
func (q *Query) Aggregate(docs []map[string]any) []map[string]any {
	type group struct {
		keys []any
		docs []map[string]any
	}
	groups := map[string]*group{}
	var order []string
	for _, d := range docs {
		keys := make([]any, len(q.GroupBy))
		var id strings.Builder
		for i, g := range q.GroupBy {
			keys[i] = lookup(d, g.Segs)
			id.WriteString(groupKey(keys[i]))
			id.WriteByte(0)
		}
		g := groups[id.String()]
		if g == nil {
			g = &group{keys: keys}
			groups[id.String()] = g
			order = append(order, id.String())
		}
		g.docs = append(g.docs, d)
	}
	if len(q.GroupBy) == 0 && len(groups) == 0 {
		groups[""] = &group{}
		order = append(order, "")
	}
	rows := make([]map[string]any, 0, len(groups))
	for _, id := range order {
		g := groups[id]
		row := map[string]any{}
		unnamed := 0
		for _, p := range q.Select {
			var v any
			switch e := p.Expr.(type) {
			case *Path:
				for i, gb := range q.GroupBy {
					if gb.String() == e.String() {
						v = g.keys[i]
					}
				}
			case *Aggregate:
				if p.Alias == "" {
					unnamed++
				}
				v = aggregate(e, g.docs)
			}
			if Defined(v) {
				row[p.Name(unnamed)] = v
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// groupKey identifies a value for grouping: numbers by numeric value,
// also inside arrays and objects ({"n":1} and {"n":1.0} are one group),
// everything else by kind and JSON text.
func groupKey(v any) string {
	k := kindOf(v)
	switch k {
	case Undefined:
		return "u"
	case Number:
		return "n" + strconv.FormatFloat(num(v), 'g', -1, 64)
	}
	b, _ := json.Marshal(canonNumbers(v))
	return string(rune('a'+k)) + string(b)
}

// canonNumbers returns v with every number, at any depth, as a float64,
// so that equal numbers marshal alike whatever their JSON spelling.
func canonNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = canonNumbers(e)
		}
		return m
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = canonNumbers(e)
		}
		return a
	case json.Number, float64, int, int64:
		return num(x) + 0 // -0 groups with 0
	}
	return v
}

// aggregate computes one aggregate over a group: COUNT counts documents;
// SUM and AVG add the numbers (other values are ignored; no numbers gives
// undefined); MIN and MAX order numbers before strings and ignore other
// kinds.
func aggregate(a *Aggregate, docs []map[string]any) any {
	if a.Func == "COUNT" {
		return float64(len(docs))
	}
	var (
		sum        kbn
		n          int
		minN, maxN float64
		minS, maxS string
		nums, strs int
	)
	for _, d := range docs {
		v := Eval(a.Arg, d)
		switch kindOf(v) {
		case Number:
			x := num(v)
			sum.add(x)
			n++
			if nums == 0 || x < minN {
				minN = x
			}
			if nums == 0 || x > maxN {
				maxN = x
			}
			nums++
		case String:
			s := v.(string)
			if strs == 0 || s < minS {
				minS = s
			}
			if strs == 0 || s > maxS {
				maxS = s
			}
			strs++
		}
	}
	switch a.Func {
	case "SUM":
		if n == 0 {
			return undef
		}
		return sum.total()
	case "AVG":
		if n == 0 {
			return undef
		}
		return sum.total() / float64(n)
	case "MIN":
		switch {
		case nums > 0:
			return minN
		case strs > 0:
			return minS
		}
	case "MAX":
		switch {
		case strs > 0:
			return maxS
		case nums > 0:
			return maxN
		}
	}
	return undef
}

// kbn is Kahan-Babuska-Neumaier compensated summation, which SQLite's
// sum() also uses for floating-point input.
type kbn struct{ s, c float64 }

func (k *kbn) add(x float64) {
	t := k.s + x
	if math.Abs(k.s) >= math.Abs(x) {
		k.c += (k.s - t) + x
	} else {
		k.c += (x - t) + k.s
	}
	k.s = t
}

func (k *kbn) total() float64 { return k.s + k.c }
