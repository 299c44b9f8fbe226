package query

import (
	"math"
	"strconv"
	"strings"
)

// SQL is compiled SQL text and the arguments bound to its placeholders.
type SQL struct {
	Text string
	Args []any
}

// frag is a compiled condition. null says it may yield SQL NULL, which
// counts as false except under NOT, where it is coalesced.
type frag struct {
	s    string
	null bool
}

var (
	fTrue  = frag{s: "1"}
	fFalse = frag{s: "0"}
)

// operand is a compiled value: the kinds it may have, SQL for its kind name
// and for its number and string forms, and where it is a path into a JSON
// column, the column and bound path (which dialects use directly).
type operand struct {
	kinds     KindSet
	kind      string // kind name expression; "" when derivable
	num, str  string
	doc, path string
	lit       *Literal
	cond      *frag // boolean results
	// numNull and strNull say num (str) is NULL exactly when the operand
	// is undefined: its kinds are {Undefined, Number} ({Undefined, String}).
	numNull, strNull bool
}

type compiler struct {
	d     Dialect
	alias string
	src   Source
	args  []any
	paths map[string]string // bound JSON paths, reused
	work  int               // bytes of SQL built so far
}

func newCompiler(d Dialect, src Source, alias string) *compiler {
	return &compiler{d: d, src: src, alias: alias, paths: map[string]string{}}
}

// bind records an argument and returns a provisional marker; finish
// replaces the markers that the SQL uses with the dialect's placeholders,
// numbered in order of first use, and drops unused arguments. With
// positional placeholders every marker gets its own argument.
func (c *compiler) bind(v any) string {
	c.args = append(c.args, v)
	return "\x00" + strconv.Itoa(len(c.args)-1) + "\x00"
}

func (c *compiler) finish(text string) SQL {
	var b strings.Builder
	var args []any
	seen := map[int]int{}
	positional := c.d.Placeholder(1) == c.d.Placeholder(2)
	for {
		i := strings.IndexByte(text, 0)
		if i < 0 {
			b.WriteString(text)
			break
		}
		j := strings.IndexByte(text[i+1:], 0) + i + 1
		n, _ := strconv.Atoi(text[i+1 : j])
		num, ok := seen[n]
		if !ok || positional {
			args = append(args, c.args[n])
			num = len(args)
			seen[n] = num
		}
		b.WriteString(text[:i] + c.d.Placeholder(num))
		text = text[j+1:]
	}
	return SQL{Text: b.String(), Args: args}
}

func (c *compiler) col(name string) string {
	if c.alias == "" {
		return name
	}
	return c.alias + "." + name
}

// number returns the bound form of a number: an integer when exact.
func number(f float64) any {
	if f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
		return int64(f)
	}
	return f
}

// CompileCondition compiles the query's WHERE clause into an SQL
// condition over the columns of the source's table (devices or
// device_jobs), qualified with alias if it is not empty. A query without
// WHERE gives a condition that is always true.
func CompileCondition(d Dialect, q *Query, alias string) (SQL, error) {
	c := newCompiler(d, q.From, alias)
	text, err := c.where(q)
	if err != nil {
		return SQL{}, err
	}
	return c.finish(text), nil
}

// CompileJobCondition parses a job's queryCondition (§6.2: the WHERE
// expression alone, "*" for every device) and compiles it into an SQL
// condition over the devices table, as CompileCondition does. Parse errors
// are *Error or *TooLongError.
func CompileJobCondition(d Dialect, queryCondition, alias string) (SQL, error) {
	q, err := ParseCondition(queryCondition)
	if err != nil {
		return SQL{}, err
	}
	return CompileCondition(d, q, alias)
}

func (c *compiler) where(q *Query) (s string, err error) {
	defer func() {
		if r := recover(); r != nil {
			ce, ok := r.(*Error)
			if !ok {
				panic(r)
			}
			err = ce
		}
	}()
	if q.Where == nil {
		return "1 = 1", nil
	}
	f := c.cond(q.Where)
	if f.null {
		return "COALESCE(" + f.s + ", 0) = 1", nil
	}
	if f.s == "1" || f.s == "0" {
		return f.s + " = 1", nil
	}
	return f.s, nil
}

func and(fs ...frag) frag {
	var parts []string
	null := false
	for _, f := range fs {
		switch f.s {
		case "0":
			return fFalse
		case "1":
			continue
		}
		parts = append(parts, f.s)
		null = null || f.null
	}
	switch len(parts) {
	case 0:
		return fTrue
	case 1:
		return frag{parts[0], null}
	}
	return frag{"(" + strings.Join(parts, " AND ") + ")", null}
}

func or(fs ...frag) frag {
	var parts []string
	null := false
	for _, f := range fs {
		switch f.s {
		case "1":
			return fTrue
		case "0":
			continue
		}
		parts = append(parts, f.s)
		null = null || f.null
	}
	switch len(parts) {
	case 0:
		return fFalse
	case 1:
		return frag{parts[0], null}
	}
	return frag{"(" + strings.Join(parts, " OR ") + ")", null}
}

func not(f frag) frag {
	switch f.s {
	case "1":
		return fFalse
	case "0":
		return fTrue
	}
	if f.null {
		return frag{s: "NOT COALESCE(" + f.s + ", 0)"}
	}
	return frag{s: "NOT " + f.s}
}

// maxSQL bounds the compiled SQL: comparisons of comparisons repeat their
// operands, so a short query could otherwise compile to exponential text.
// It bounds the text of every node and, as work, the sum over all nodes.
const maxSQL = 64 << 10

func (c *compiler) limit(e Expr, n int) {
	c.work += n
	if n > maxSQL || c.work > 16*maxSQL {
		panic(errorf(e.Position(), "the query is too complex to run: simplify %s", e))
	}
}

// cond compiles an expression used as a condition: true only for the
// boolean true.
func (c *compiler) cond(e Expr) frag {
	f := c.cond1(e)
	c.limit(e, len(f.s))
	return f
}

func (c *compiler) cond1(e Expr) frag {
	switch e := e.(type) {
	case *Binary:
		switch e.Op {
		case "AND":
			return and(c.cond(e.L), c.cond(e.R))
		case "OR":
			return or(c.cond(e.L), c.cond(e.R))
		case "=":
			return c.eq(c.value(e.L), c.value(e.R))
		case "!=":
			a, b := c.value(e.L), c.value(e.R)
			return and(c.is(a, primitiveKinds), c.is(b, primitiveKinds), not(c.eq(a, b)))
		case "<", "<=", ">", ">=":
			a, b := c.value(e.L), c.value(e.R)
			return or(
				and(c.is(a, Kinds(Number)), c.is(b, Kinds(Number)), frag{s: a.num + " " + e.Op + " " + b.num}),
				and(c.is(a, Kinds(String)), c.is(b, Kinds(String)), frag{s: a.str + " " + e.Op + " " + b.str}))
		}
	case *Unary:
		if e.Op == "NOT" {
			return not(c.cond(e.X))
		}
	case *In:
		return c.in(e)
	case *Call:
		if functions[e.Name].boolean {
			return c.call(e)
		}
	case *Literal:
		if e.Kind == True {
			return fTrue
		}
		return fFalse
	}
	return c.is(c.value(e), Kinds(True))
}

// is tests an operand's kind.
func (c *compiler) is(o operand, set KindSet) frag {
	switch {
	case o.kinds&set == 0:
		return fFalse
	case o.kinds&^set == 0:
		return fTrue
	case o.doc != "":
		return frag{c.d.JSONKindIn(o.doc, o.path, set), true}
	case o.numNull || o.strNull:
		v := o.num + o.str
		if set.Has(Undefined) {
			return frag{s: v + " IS NULL"}
		}
		return frag{s: v + " IS NOT NULL"}
	case o.cond != nil:
		if set.Has(True) {
			return *o.cond
		}
		return not(*o.cond)
	}
	var names []string
	for k := Null; k <= Object; k++ {
		if set.Has(k) && o.kinds.Has(k) {
			names = append(names, "'"+k.String()+"'")
		}
	}
	var f frag
	if len(names) > 0 {
		f = frag{o.kind + " IN (" + strings.Join(names, ", ") + ")", o.kinds.Has(Undefined)}
	} else {
		f = fFalse
	}
	if set.Has(Undefined) && o.kinds.Has(Undefined) {
		return or(frag{s: o.kind + " IS NULL"}, f)
	}
	return f
}

func (c *compiler) eq(a, b operand) frag {
	if a.lit != nil && b.doc != "" {
		a, b = b, a
	}
	if a.doc != "" && b.lit != nil {
		if s := c.d.JSONEqual(a.doc, a.path, b.lit, b.num+b.str); s != "" {
			return frag{s, true}
		}
	}
	var parts []frag
	for _, k := range []Kind{Null, False, True} {
		parts = append(parts, and(c.is(a, Kinds(k)), c.is(b, Kinds(k))))
	}
	if a.kinds.Has(Number) && b.kinds.Has(Number) {
		parts = append(parts, and(c.is(a, Kinds(Number)), c.is(b, Kinds(Number)), frag{s: a.num + " = " + b.num}))
	}
	if a.kinds.Has(String) && b.kinds.Has(String) {
		parts = append(parts, and(c.is(a, Kinds(String)), c.is(b, Kinds(String)), frag{s: a.str + " = " + b.str}))
	}
	return or(parts...)
}

func (c *compiler) in(e *In) frag {
	x := c.value(e.X)
	var nums, strs []string
	var kinds KindSet
	for _, l := range e.List {
		switch l.Kind {
		case Number:
			nums = append(nums, c.bind(number(l.Num)))
		case String:
			strs = append(strs, c.bind(l.Str))
		case Null, True, False:
			kinds |= Kinds(l.Kind)
		}
	}
	parts := []frag{}
	if kinds != 0 {
		parts = append(parts, c.is(x, kinds))
	}
	if len(nums) > 0 {
		parts = append(parts, and(c.is(x, Kinds(Number)), frag{s: x.num + " IN (" + strings.Join(nums, ", ") + ")"}))
	}
	if len(strs) > 0 {
		parts = append(parts, and(c.is(x, Kinds(String)), frag{s: x.str + " IN (" + strings.Join(strs, ", ") + ")"}))
	}
	f := or(parts...)
	if e.Not {
		return and(c.is(x, primitiveKinds), not(f))
	}
	return f
}

var isKinds = map[string]KindSet{
	"IS_DEFINED": definedKinds, "IS_NULL": Kinds(Null), "IS_BOOL": Kinds(True, False),
	"IS_NUMBER": Kinds(Number), "IS_STRING": Kinds(String), "IS_OBJECT": Kinds(Object),
	"IS_ARRAY": Kinds(Array), "IS_PRIMITIVE": primitiveKinds,
}

func (c *compiler) call(e *Call) frag {
	a := c.value(e.Args[0])
	if set, ok := isKinds[e.Name]; ok {
		return c.is(a, set)
	}
	b := c.value(e.Args[1])
	return and(c.is(a, Kinds(String)), c.is(b, Kinds(String)), frag{s: c.d.Func(e.Name, a.str, b.str)})
}

// value compiles an expression used as a value.
func (c *compiler) value(e Expr) operand {
	o := c.value1(e)
	c.limit(e, len(o.kind)+len(o.num)+len(o.str))
	return o
}

func (c *compiler) value1(e Expr) operand {
	switch e := e.(type) {
	case *Path:
		return c.path(e)
	case *Literal:
		o := operand{kinds: Kinds(e.Kind), lit: e}
		switch e.Kind {
		case Number:
			o.num = c.bind(number(e.Num))
		case String:
			o.str = c.bind(e.Str)
		}
		return o
	case *Unary:
		if e.Op == "-" {
			x := c.numOrNull(c.value(e.X))
			if x == "NULL" {
				return operand{kinds: Kinds(Undefined)}
			}
			return c.arith("(-(" + x + "))")
		}
	case *Binary:
		switch e.Op {
		case "+", "-", "*", "/", "%":
			a, b := c.numOrNull(c.value(e.L)), c.numOrNull(c.value(e.R))
			if a == "NULL" || b == "NULL" {
				return operand{kinds: Kinds(Undefined)}
			}
			if e.Op == "%" {
				return c.arith(c.d.Mod(a, b))
			}
			return c.arith("(" + c.d.Real(a) + " " + e.Op + " " + b + ")")
		}
	case *Call:
		switch e.Name {
		case "LOWER", "UPPER", "LENGTH":
			a := c.value(e.Args[0])
			guard := c.is(a, Kinds(String))
			if guard.s == "0" {
				return operand{kinds: Kinds(Undefined)}
			}
			arg := a.str
			if guard.s != "1" {
				arg = "CASE WHEN " + guard.s + " THEN " + a.str + " END"
			}
			if e.Name == "LENGTH" {
				return c.arith(c.d.Func(e.Name, arg))
			}
			if guard.s == "1" {
				return operand{kinds: Kinds(String), str: c.d.Func(e.Name, arg)}
			}
			s := c.d.Func(e.Name, arg)
			return operand{kinds: Kinds(Undefined, String), str: s, strNull: true,
				kind: "CASE WHEN " + s + " IS NOT NULL THEN 'string' END"}
		}
	}
	f := c.cond(e)
	return operand{kinds: Kinds(True, False), cond: &f,
		kind: "CASE WHEN " + coalesced(f) + " THEN 'true' ELSE 'false' END"}
}

func coalesced(f frag) string {
	if f.null {
		return "COALESCE(" + f.s + ", 0)"
	}
	return f.s
}

// arith is a computed number: SQL NULL (an operand that is not a number,
// a zero divisor, NaN) is undefined.
func (c *compiler) arith(expr string) operand {
	return operand{kinds: Kinds(Undefined, Number), num: expr, numNull: true,
		kind: "CASE WHEN " + expr + " IS NOT NULL THEN 'number' END"}
}

// numOrNull is the operand's number, or NULL when it is not a number.
func (c *compiler) numOrNull(o operand) string {
	g := c.is(o, Kinds(Number))
	switch {
	case g.s == "0":
		return "NULL"
	case g.s == "1" || o.numNull:
		return o.num
	}
	return "CASE WHEN " + g.s + " THEN " + o.num + " END"
}

// jsonPath is an operand for keys inside the JSON column doc.
func (c *compiler) jsonPath(doc string, keys []string, at Pos) operand {
	p, err := c.d.JSONPath(keys)
	if err != nil {
		panic(errorf(at, "%v", err))
	}
	ph, ok := c.paths[p]
	if !ok {
		ph = c.bind(p)
		c.paths[p] = ph
	}
	col := c.col(doc)
	return operand{kinds: allKinds, doc: col, path: ph,
		num: c.d.JSONNumber(col, ph), str: c.d.JSONString(col, ph)}
}

func static(k Kind, sql string) operand {
	o := operand{kinds: Kinds(k)}
	if k == Number {
		o.num = sql
	} else {
		o.str = sql
	}
	return o
}

// nullable is a nullable text column: null or a string.
func (c *compiler) nullable(col string) operand {
	col = c.col(col)
	return operand{kinds: Kinds(Null, String), str: col,
		kind: "CASE WHEN " + col + " IS NULL THEN 'null' ELSE 'string' END"}
}

var twinColumns = map[string]string{
	"deviceId": "device_id", "status": "status", "statusUpdateTime": "status_updated_time",
	"connectionState": "connection_state", "lastActivityTime": "last_activity_time",
	"authenticationType": "auth_type",
}

var jobColumns = map[string]string{
	"deviceId": "device_id", "jobId": "job_id", "jobType": "job_type", "status": "status",
	"startTimeUtc": "start_time", "endTimeUtc": "end_time", "createdDateTimeUtc": "created_time",
	"lastUpdatedDateTimeUtc": "last_updated_time",
}

// path maps a canonical path to the store's columns (internal/store/sqlite
// migrations 0001, 0002 and 0010).
func (c *compiler) path(p *Path) operand {
	s := p.Segs
	if p.Jobs {
		return c.jobPath(p)
	}
	if col, ok := twinColumns[s[0]]; ok {
		return static(String, c.col(col))
	}
	switch s[0] {
	case "moduleId", "modelId":
		return operand{kinds: Kinds(Undefined)}
	case "etag":
		return static(String, c.d.TwinETag(c.col("twin_etag")))
	case "deviceEtag":
		return static(String, c.d.DeviceETag(c.col("etag")))
	case "statusReason":
		return c.nullable("status_reason")
	case "cloudToDeviceMessageCount":
		return static(Number, c.col("c2d_message_count"))
	case "version":
		return static(Number, c.col("twin_version"))
	case "x509Thumbprint":
		if len(s) == 1 {
			return operand{kinds: Kinds(Object)}
		}
		return c.nullable(map[string]string{"primaryThumbprint": "primary_thumbprint", "secondaryThumbprint": "secondary_thumbprint"}[s[1]])
	case "capabilities":
		if len(s) == 1 {
			return operand{kinds: Kinds(Object)}
		}
		f := frag{s: c.col("iot_edge") + " = 1"}
		return operand{kinds: Kinds(True, False), cond: &f, kind: "CASE WHEN " + f.s + " THEN 'true' ELSE 'false' END"}
	case "tags":
		return c.jsonPath("tags", s[1:], p.Pos)
	case "properties":
		if len(s) == 1 {
			return operand{kinds: Kinds(Object)}
		}
		section := s[1] // desired or reported
		switch {
		case len(s) == 2:
			return operand{kinds: Kinds(Object)}
		case s[2] == "$version":
			return static(Number, c.col(section+"_version"))
		case s[2] == "$metadata":
			return c.jsonPath(section+"_metadata", s[3:], p.Pos)
		}
		return c.jsonPath(section, s[2:], p.Pos)
	}
	panic(errorf(p.Pos, "%s cannot be compiled", p))
}

func (c *compiler) jobPath(p *Path) operand {
	s := p.Segs
	if col, ok := jobColumns[s[0]]; ok {
		return static(String, c.col(col))
	}
	switch s[0] {
	case "outcome":
		return c.jsonPath("outcome", s[1:], p.Pos)
	case "error":
		code := c.col("error_code")
		if len(s) == 1 {
			return operand{kinds: Kinds(Undefined, Object), kind: "CASE WHEN " + code + " IS NOT NULL THEN 'object' END"}
		}
		val := code
		if s[1] == "description" {
			val = "COALESCE(" + c.col("error_description") + ", '')"
		}
		return operand{kinds: Kinds(Undefined, String), str: val, kind: "CASE WHEN " + code + " IS NOT NULL THEN 'string' END"}
	}
	panic(errorf(p.Pos, "%s cannot be compiled", p))
}

// kindExpr is SQL giving the operand's kind name, or NULL.
func (c *compiler) kindExpr(o operand) string {
	switch {
	case o.kind != "":
		return o.kind
	case o.doc != "":
		return c.d.JSONKind(o.doc, o.path)
	}
	for k := Null; k <= Object; k++ {
		if o.kinds == Kinds(k) {
			return "'" + k.String() + "'"
		}
	}
	return "NULL"
}
