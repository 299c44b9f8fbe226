package query

import (
	"strconv"
	"strings"
)

// Source is the collection a query reads (§7.3).
type Source int

// Sources.
const (
	// Devices is FROM devices: device twins.
	Devices Source = iota
	// DeviceJobs is FROM devices.jobs: per-device job records (§6.5).
	DeviceJobs
	// DeviceModules is FROM devices.modules: module twins (§7.3).
	DeviceModules
)

func (s Source) String() string {
	switch s {
	case DeviceJobs:
		return "devices.jobs"
	case DeviceModules:
		return "devices.modules"
	}
	return "devices"
}

// Kind is the type of a JSON value, with Undefined for a property that
// does not exist.
type Kind uint8

// Kinds of values.
const (
	Undefined Kind = iota
	Null
	False
	True
	Number
	String
	Array
	Object
)

var kindNames = [...]string{"undefined", "null", "false", "true", "number", "string", "array", "object"}

func (k Kind) String() string { return kindNames[k] }

// Query is a parsed query: SELECT [TOP n] … FROM … [WHERE …] [GROUP BY …].
type Query struct {
	// Top caps the number of results when HasTop is set.
	Top    int64
	HasTop bool
	// Star is SELECT *; otherwise Select lists the projections.
	Star    bool
	Select  []*Projection
	From    Source
	Where   Expr // nil: every item
	GroupBy []*Path
}

// Projection is one element of the SELECT list: a path or an aggregate,
// with an optional alias.
type Projection struct {
	Expr  Expr // *Path or *Aggregate
	Alias string
}

// Name is the key of the projection in result rows: the alias, the last
// path segment, or "$n" for the n-th unnamed aggregate (1-based).
func (p *Projection) Name(n int) string {
	if p.Alias != "" {
		return p.Alias
	}
	if path, ok := p.Expr.(*Path); ok {
		return path.Segs[len(path.Segs)-1]
	}
	return "$" + strconv.Itoa(n)
}

// Aggregated reports whether the query computes aggregates or groups.
func (q *Query) Aggregated() bool {
	if len(q.GroupBy) > 0 {
		return true
	}
	for _, p := range q.Select {
		if _, ok := p.Expr.(*Aggregate); ok {
			return true
		}
	}
	return false
}

// Expr is an expression node.
type Expr interface {
	// Position is where the expression starts in the query text.
	Position() Pos
	// String prints the expression in query syntax that parses back to the
	// same tree.
	String() string
	expr()
}

// Path is a property path such as tags.building or
// properties.reported.fw. Segments are canonical: root system fields in
// their canonical casing, devices.jobs fields without the "devices.jobs"
// prefix.
type Path struct {
	Segs []string
	// Jobs says the path names a devices.jobs field.
	Jobs bool
	Pos  Pos
}

// Literal is a constant: a string, number, true, false, null or undefined.
type Literal struct {
	Kind Kind // Undefined, Null, False, True, Number or String
	Str  string
	Num  float64
	Pos  Pos
}

// Unary is NOT x or -x.
type Unary struct {
	Op  string // "NOT" or "-"
	X   Expr
	Pos Pos
}

// Binary is a logical, comparison or arithmetic operation.
type Binary struct {
	Op   string // AND OR = != < <= > >= + - * / %
	L, R Expr
}

// In is x IN [...] or x NIN [...].
type In struct {
	X    Expr
	Not  bool
	List []*Literal
}

// Call is a function call such as IS_DEFINED(x) or STARTSWITH(x, 'a').
type Call struct {
	Name string // canonical upper-case name
	Args []Expr
	Pos  Pos
}

// Aggregate is COUNT(), SUM(x), AVG(x), MIN(x) or MAX(x) in a projection.
type Aggregate struct {
	Func string
	Arg  Expr // nil for COUNT()
	Pos  Pos
}

func (*Path) expr()      {}
func (*Literal) expr()   {}
func (*Unary) expr()     {}
func (*Binary) expr()    {}
func (*In) expr()        {}
func (*Call) expr()      {}
func (*Aggregate) expr() {}

// Position implements Expr.
func (e *Path) Position() Pos { return e.Pos }

// Position implements Expr.
func (e *Literal) Position() Pos { return e.Pos }

// Position implements Expr.
func (e *Unary) Position() Pos { return e.Pos }

// Position implements Expr.
func (e *Binary) Position() Pos { return e.L.Position() }

// Position implements Expr.
func (e *In) Position() Pos { return e.X.Position() }

// Position implements Expr.
func (e *Call) Position() Pos { return e.Pos }

// Position implements Expr.
func (e *Aggregate) Position() Pos { return e.Pos }

// Operator precedence, loosest first.
const (
	precOr = iota + 1
	precAnd
	precNot
	precCompare
	precAdd
	precMul
	precUnary
	precPrimary
)

func precOf(e Expr) int {
	switch e := e.(type) {
	case *Binary:
		return binaryPrec[e.Op]
	case *Unary:
		if e.Op == "NOT" {
			return precNot
		}
		return precUnary
	case *In:
		return precCompare
	case *Literal:
		if e.Kind == Number && (e.Num < 0 || e.Num == 0 && strconv.FormatFloat(e.Num, 'g', -1, 64)[0] == '-') {
			return precUnary
		}
	}
	return precPrimary
}

var binaryPrec = map[string]int{
	"OR": precOr, "AND": precAnd,
	"=": precCompare, "!=": precCompare, "<": precCompare, "<=": precCompare, ">": precCompare, ">=": precCompare,
	"+": precAdd, "-": precAdd, "*": precMul, "/": precMul, "%": precMul,
}

// wrap prints e, in parentheses if its precedence is below min.
func wrap(e Expr, min int) string {
	if precOf(e) < min {
		return "(" + e.String() + ")"
	}
	return e.String()
}

// isIdent reports whether s can be written as a bare path segment.
func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if i == 0 && !isIdentStart(r) || !isIdentPart(r) {
			return false
		}
	}
	return true
}

func (e *Path) String() string {
	var b strings.Builder
	if e.Jobs {
		b.WriteString("devices.jobs")
	}
	for i, s := range e.Segs {
		first := i == 0 && !e.Jobs
		switch {
		case isIdent(s) && !(first && keywords[strings.ToUpper(s)]):
			if !first {
				b.WriteByte('.')
			}
			b.WriteString(s)
		default:
			b.WriteString("[" + quoteString(s) + "]")
		}
	}
	return b.String()
}

func (e *Literal) String() string {
	switch e.Kind {
	case Null:
		return "null"
	case True:
		return "true"
	case False:
		return "false"
	case Number:
		return strconv.FormatFloat(e.Num, 'g', -1, 64)
	case String:
		return quoteString(e.Str)
	}
	return "undefined"
}

func (e *Unary) String() string {
	if e.Op == "NOT" {
		return "NOT " + wrap(e.X, precNot)
	}
	return "-" + wrap(e.X, precPrimary)
}

func (e *Binary) String() string {
	p := binaryPrec[e.Op]
	return wrap(e.L, p) + " " + e.Op + " " + wrap(e.R, p+1)
}

func (e *In) String() string {
	op := " IN "
	if e.Not {
		op = " NIN "
	}
	return wrap(e.X, precCompare+1) + op + listString(e.List)
}

func listString(l []*Literal) string {
	parts := make([]string, len(l))
	for i, x := range l {
		parts[i] = x.String()
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func (e *Call) String() string {
	parts := make([]string, len(e.Args))
	for i, a := range e.Args {
		parts[i] = a.String()
	}
	return e.Name + "(" + strings.Join(parts, ", ") + ")"
}

func (e *Aggregate) String() string {
	if e.Arg == nil {
		return e.Func + "()"
	}
	return e.Func + "(" + e.Arg.String() + ")"
}

// String prints the query in a form that parses back to the same tree.
func (q *Query) String() string {
	var b strings.Builder
	b.WriteString("SELECT ")
	if q.HasTop {
		b.WriteString("TOP " + strconv.FormatInt(q.Top, 10) + " ")
	}
	if q.Star {
		b.WriteString("*")
	} else {
		for i, p := range q.Select {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(p.Expr.String())
			if p.Alias != "" {
				b.WriteString(" AS ")
				if isIdent(p.Alias) && !keywords[strings.ToUpper(p.Alias)] {
					b.WriteString(p.Alias)
				} else {
					b.WriteString(quoteString(p.Alias))
				}
			}
		}
	}
	b.WriteString(" FROM " + q.From.String())
	if q.Where != nil {
		b.WriteString(" WHERE " + q.Where.String())
	}
	if len(q.GroupBy) > 0 {
		b.WriteString(" GROUP BY ")
		for i, g := range q.GroupBy {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(g.String())
		}
	}
	return b.String()
}
