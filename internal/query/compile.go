package query

import (
	"github.com/herd-iot/herd"

	"math"
	"strconv"
	"strings"
)

// SQL is compiled SQL text and the arguments bound to its placeholders.
type SQL struct {
	Text string
	Args []any
}

// frag is a compiled condition: an SQL boolean expression. In exact
// form it is TRUE, FALSE or NULL exactly as the language's true, false or
// undefined (three-valued logic, NULL for undefined). In loose form — what
// a WHERE clause and everything under it but NOT needs — it is TRUE
// exactly when the language says true and FALSE or NULL otherwise, which
// leaves the SQL free to use shortcuts an index can serve. null says the
// expression may yield NULL.
type frag struct {
	s    string
	null bool
}

var (
	fTrue  = frag{s: "TRUE"}
	fFalse = frag{s: "FALSE"}
	fNull  = frag{s: "NULL", null: true}
)

// operand is a compiled value: the kinds it may have, SQL for its kind name
// and for its number and string forms, and where it is a path into a JSON
// column, the column and bound path (which dialects use directly).
type operand struct {
	kinds    KindSet
	kind     string // kind name expression; "" when derivable
	num, str string
	// boolv is the SQL boolean of a boolean operand (for a cond, the cond).
	boolv     string
	doc, path string
	keys      []string // the keys of path inside doc
	lit       *Literal
	cond      *frag // boolean results, in exact form
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

// literal binds a number or string of the query, typed as the dialect
// needs (PostgreSQL cannot infer the type of $1 in $1 IN ($2)).
func (c *compiler) literal(v any) string { return c.d.Literal(c.bind(v), v) }

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
		return "TRUE", nil
	}
	// A row is selected when the condition is TRUE: NULL (undefined) and
	// FALSE both leave it out, so the loose form serves, unwrapped.
	return c.cond(q.Where, false).s, nil
}

func and(fs ...frag) frag {
	var parts []string
	null := false
	for _, f := range fs {
		switch f.s {
		case "FALSE":
			return fFalse
		case "TRUE":
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
		case "TRUE":
			return fTrue
		case "FALSE":
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

// not negates an exact condition (NOT of NULL is NULL: undefined stays
// undefined).
func not(f frag) frag {
	switch f.s {
	case "TRUE":
		return fFalse
	case "FALSE":
		return fTrue
	case "NULL":
		return fNull
	}
	return frag{"NOT " + f.s, f.null}
}

// definite makes a condition two-valued, NULL counting as FALSE (the
// IS_* functions are never undefined).
func definite(f frag) frag {
	if !f.null {
		return f
	}
	return frag{s: "(" + f.s + ") IS TRUE"}
}

// arm is one WHEN of a CASE: the result where guard holds.
type arm struct{ guard, result frag }

// choose is the condition that is the result of the first arm whose guard
// holds, and undefined where none does: exact as a CASE (whose guards may
// be NULL for false), loose as an OR of the guarded results.
func choose(arms []arm, exact bool) frag {
	if !exact {
		parts := make([]frag, len(arms))
		for i, a := range arms {
			parts[i] = and(a.guard, a.result)
		}
		return or(parts...)
	}
	var b strings.Builder
	for _, a := range arms {
		switch a.guard.s {
		case "FALSE":
			continue
		case "TRUE":
			if b.Len() == 0 {
				return a.result
			}
			b.WriteString(" ELSE " + a.result.s)
			return frag{"CASE" + b.String() + " END", true}
		}
		b.WriteString(" WHEN " + a.guard.s + " THEN " + a.result.s)
	}
	if b.Len() == 0 {
		return fNull
	}
	return frag{"CASE" + b.String() + " END", true}
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

// cond compiles an expression used as a condition, exact or loose.
func (c *compiler) cond(e Expr, exact bool) frag {
	f := c.cond1(e, exact)
	c.limit(e, len(f.s))
	return f
}

func (c *compiler) cond1(e Expr, exact bool) frag {
	switch e := e.(type) {
	case *Binary:
		switch e.Op {
		case "AND":
			return and(c.cond(e.L, exact), c.cond(e.R, exact))
		case "OR":
			return or(c.cond(e.L, exact), c.cond(e.R, exact))
		case "=", "!=", "<", "<=", ">", ">=":
			return c.compare(e.Op, c.value(e.L), c.value(e.R), exact)
		}
	case *Unary:
		if e.Op == "NOT" {
			return not(c.cond(e.X, true))
		}
	case *In:
		return c.in(e, exact)
	case *Call:
		if functions[e.Name].boolean {
			return c.call(e, exact)
		}
	case *Literal:
		switch e.Kind {
		case True:
			return fTrue
		case False:
			return fFalse
		}
		return c.undefined(exact)
	}
	return c.truth(c.value(e), exact)
}

// undefined is the condition that is always undefined.
func (c *compiler) undefined(exact bool) frag {
	if exact {
		return fNull
	}
	return fFalse
}

// truth is an operand used as a condition: true for the boolean true,
// false for false, undefined for anything else.
func (c *compiler) truth(o operand, exact bool) frag {
	if o.cond != nil {
		return *o.cond
	}
	if !exact {
		return c.is(o, Kinds(True))
	}
	return choose([]arm{{c.is(o, Kinds(True, False)), frag{s: o.boolv}}}, true)
}

// is tests an operand's kind. The test may be NULL where it is false.
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
		// An exact condition: TRUE, FALSE or NULL for undefined.
		if set&Kinds(True, False, Undefined) == Kinds(True, False) {
			return frag{s: "(" + o.cond.s + ") IS NOT NULL"}
		}
		var parts []frag
		if set.Has(True) {
			parts = append(parts, frag{s: "(" + o.cond.s + ") IS TRUE"})
		}
		if set.Has(False) {
			parts = append(parts, frag{s: "(" + o.cond.s + ") IS FALSE"})
		}
		if set.Has(Undefined) {
			parts = append(parts, frag{s: "(" + o.cond.s + ") IS NULL"})
		}
		return or(parts...)
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

// classes are the kinds that compare with each other (booleans are one
// class), in the order the compiler tests them.
var classes = []KindSet{Kinds(Null), Kinds(True, False), Kinds(Number), Kinds(String)}

// compare compiles a comparison: defined between two primitives of the
// same class (docs/query.md), undefined otherwise.
func (c *compiler) compare(op string, a, b operand, exact bool) frag {
	if a.lit != nil && b.doc != "" {
		a, b = b, a
		op = flipped[op]
	}
	if !exact && op == "=" && a.doc != "" && b.lit != nil {
		if s := c.d.JSONEqual(a.doc, a.path, a.keys, b.lit, b.num+b.str+b.boolv, c.bind); s != "" {
			return frag{s, true}
		}
	}
	if !exact && op == "!=" && a.doc != "" && b.lit != nil {
		if s := c.d.JSONNotEqual(a.doc, a.path, a.keys, b.lit, c.bind); s != "" {
			return frag{s, true}
		}
	}
	sqlOp := op
	if op == "!=" {
		sqlOp = "<>"
	}
	var arms []arm
	for _, cl := range classes {
		if a.kinds&cl == 0 || b.kinds&cl == 0 {
			continue
		}
		var res frag
		switch {
		case cl == Kinds(Null):
			switch op {
			case "=":
				res = fTrue
			case "!=":
				res = fFalse
			default:
				continue // null is not ordered
			}
		case cl == Kinds(True, False):
			if op != "=" && op != "!=" {
				continue // booleans are not ordered
			}
			res = boolCompare(op, a.boolv, b.boolv)
		case cl == Kinds(Number):
			res = frag{s: a.num + " " + sqlOp + " " + b.num}
		default:
			res = frag{s: a.str + " " + sqlOp + " " + b.str}
		}
		arms = append(arms, arm{and(c.is(a, cl), c.is(b, cl)), res})
	}
	if len(arms) == 0 {
		return c.undefined(exact)
	}
	return choose(arms, exact)
}

// boolCompare compares two SQL booleans; a literal side folds away.
func boolCompare(op, a, b string) frag {
	if a == "TRUE" || a == "FALSE" {
		a, b = b, a
	}
	eq := op == "="
	switch {
	case b == "TRUE" || b == "FALSE":
		if (b == "TRUE") == eq {
			if a == "TRUE" || a == "FALSE" {
				return frag{s: a}
			}
			return frag{s: "(" + a + ")"}
		}
		switch a {
		case "TRUE":
			return fFalse
		case "FALSE":
			return fTrue
		}
		return frag{s: "NOT (" + a + ")"}
	}
	sqlOp := "="
	if !eq {
		sqlOp = "<>"
	}
	return frag{s: "(" + a + ") " + sqlOp + " (" + b + ")"}
}

// flipped is the operator with its operands swapped.
var flipped = map[string]string{"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

// in compiles x IN [...] and x NIN [...]: for a defined primitive x,
// whether it equals one of the constants (or none, for NIN); undefined
// otherwise.
func (c *compiler) in(e *In, exact bool) frag {
	x := c.value(e.X)
	var nums, strs []string
	var kinds KindSet
	for _, l := range e.List {
		switch l.Kind {
		case Number:
			nums = append(nums, c.literal(number(l.Num)))
		case String:
			strs = append(strs, c.literal(l.Str))
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
	found := or(parts...)
	if !e.Not && !exact {
		return found
	}
	// Where x is a defined primitive its kind tests are not NULL, so
	// found is exact there.
	if e.Not {
		found = not(found)
	}
	return choose([]arm{{c.is(x, primitiveKinds), found}}, exact)
}

var isKinds = map[string]KindSet{
	"IS_DEFINED": definedKinds, "IS_NULL": Kinds(Null), "IS_BOOL": Kinds(True, False),
	"IS_NUMBER": Kinds(Number), "IS_STRING": Kinds(String), "IS_OBJECT": Kinds(Object),
	"IS_ARRAY": Kinds(Array), "IS_PRIMITIVE": primitiveKinds,
}

// call compiles a boolean function: the IS_* kind tests (never
// undefined) and the string tests (undefined unless both are strings).
func (c *compiler) call(e *Call, exact bool) frag {
	a := c.value(e.Args[0])
	if set, ok := isKinds[e.Name]; ok {
		f := c.is(a, set)
		if exact {
			return definite(f)
		}
		return f
	}
	b := c.value(e.Args[1])
	return choose([]arm{{and(c.is(a, Kinds(String)), c.is(b, Kinds(String))), frag{s: c.d.Func(e.Name, a.str, b.str)}}}, exact)
}

// value compiles an expression used as a value.
func (c *compiler) value(e Expr) operand {
	o := c.value1(e)
	c.limit(e, len(o.kind)+len(o.num)+len(o.str)+len(o.boolv))
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
			o.num = c.literal(number(e.Num))
		case String:
			o.str = c.literal(e.Str)
		case True:
			o.boolv = "TRUE"
		case False:
			o.boolv = "FALSE"
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
			if e.Op == "/" {
				b = "NULLIF(" + b + ", 0)" // a zero divisor gives undefined
			}
			return c.arith("(" + c.d.Real(a) + " " + e.Op + " " + b + ")")
		}
	case *Call:
		switch e.Name {
		case "LOWER", "UPPER", "LENGTH":
			a := c.value(e.Args[0])
			guard := c.is(a, Kinds(String))
			if guard.s == "FALSE" {
				return operand{kinds: Kinds(Undefined)}
			}
			arg := a.str
			if guard.s != "TRUE" {
				arg = "CASE WHEN " + guard.s + " THEN " + a.str + " END"
			}
			if e.Name == "LENGTH" {
				return c.arith(c.d.Func(e.Name, arg))
			}
			if guard.s == "TRUE" {
				return operand{kinds: Kinds(String), str: c.d.Func(e.Name, arg)}
			}
			s := c.d.Func(e.Name, arg)
			return operand{kinds: Kinds(Undefined, String), str: s, strNull: true,
				kind: "CASE WHEN " + s + " IS NOT NULL THEN 'string' END"}
		}
	}
	return condOperand(c.cond(e, true))
}

// condOperand is an exact condition used as a value: true, false or
// undefined.
func condOperand(f frag) operand {
	switch f.s {
	case "TRUE":
		return operand{kinds: Kinds(True), boolv: "TRUE"}
	case "FALSE":
		return operand{kinds: Kinds(False), boolv: "FALSE"}
	case "NULL":
		return operand{kinds: Kinds(Undefined)}
	}
	kinds := Kinds(True, False)
	if f.null {
		kinds |= Kinds(Undefined)
	}
	return operand{kinds: kinds, cond: &f, boolv: f.s,
		kind: "CASE WHEN " + f.s + " THEN 'true' WHEN NOT " + f.s + " THEN 'false' END"}
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
	case g.s == "FALSE":
		return "NULL"
	case g.s == "TRUE" || o.numNull:
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
	return operand{kinds: allKinds, doc: col, path: ph, keys: keys,
		num: c.d.JSONNumber(col, ph), str: c.d.JSONString(col, ph), boolv: c.d.JSONBool(col, ph)}
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

// zeroTime is the wire form of a time never set (herd.Time{}).
var zeroTime = herd.Time{}.String()

var twinColumns = map[string]string{
	"deviceId": "device_id", "status": "status", "statusUpdateTime": "status_updated_time",
	"connectionState": "connection_state", "authenticationType": "auth_type",
}

// LastActivity is the SQL of the lastActivityTime of the row of table
// (devices or modules, or the alias it has in the statement).
//
// A device's (module's) activity lives in two places: the row's own
// last_activity_time, written with its connection state, and the narrow
// device_activity (module_activity) table, which activity between
// connection changes updates so that it does not rewrite the whole row
// with its twin (internal/store/sqlite migration 0170). The later of the
// two is the activity.
func LastActivity(table string, modules bool) string {
	on := "a.device_id = " + table + ".device_id"
	from := "device_activity"
	if modules {
		on += " AND a.module_id = " + table + ".module_id"
		from = "module_activity"
	}
	return "COALESCE((SELECT a.last_activity_time FROM " + from + " a WHERE " + on +
		" AND a.last_activity_time > " + table + ".last_activity_time), " + table + ".last_activity_time)"
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
	if c.src == DeviceModules {
		// A module twin (twin.ModuleView): its own id, always enabled,
		// no status reason or capabilities of its own.
		switch s[0] {
		case "moduleId":
			return static(String, c.col("module_id"))
		case "status":
			return static(String, c.literal("enabled"))
		case "statusUpdateTime":
			return static(String, c.literal(zeroTime))
		case "statusReason":
			return operand{kinds: Kinds(Null)}
		case "capabilities":
			if len(s) == 1 {
				return operand{kinds: Kinds(Object)}
			}
			f := frag{s: "1 = 0"}
			return operand{kinds: Kinds(False), cond: &f, boolv: f.s, kind: "'false'"}
		}
	}
	if col, ok := twinColumns[s[0]]; ok {
		return static(String, c.col(col))
	}
	if s[0] == "lastActivityTime" {
		table := c.alias
		if table == "" {
			table = tableOf(c.src)
		}
		return static(String, LastActivity(table, c.src == DeviceModules))
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
		f := frag{s: c.d.BoolColumn(c.col("iot_edge"))}
		return operand{kinds: Kinds(True, False), cond: &f, boolv: f.s, kind: "CASE WHEN " + f.s + " THEN 'true' ELSE 'false' END"}
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
	case "attempts":
		return static(Number, c.col("attempts"))
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
