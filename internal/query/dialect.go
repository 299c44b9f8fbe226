package query

import (
	"fmt"
	"strings"
)

// KindSet is a set of kinds.
type KindSet uint16

// Kinds returns the set of the given kinds.
func Kinds(ks ...Kind) KindSet {
	var s KindSet
	for _, k := range ks {
		s |= 1 << k
	}
	return s
}

// Has reports whether k is in the set.
func (s KindSet) Has(k Kind) bool { return s&(1<<k) != 0 }

// Kinds of values that exist, and primitive ones.
var (
	allKinds       = Kinds(Undefined, Null, False, True, Number, String, Array, Object)
	definedKinds   = allKinds &^ Kinds(Undefined)
	primitiveKinds = Kinds(Null, False, True, Number, String)
)

// Dialect is what differs between SQL databases: placeholders, JSON access,
// a few string functions and Herd's etag encodings. The compiler writes
// everything else in SQL common to SQLite and PostgreSQL.
//
// JSON documents are columns holding JSON objects; paths inside them are
// bound parameters built by JSONPath. Kind names in SQL are the Kind
// String() values ("null", "true", "false", "number", "string", "array",
// "object"); SQL NULL stands for undefined.
type Dialect interface {
	// Literal is the SQL for a bound number (int64 or float64) or string
	// of the query at placeholder ph: ph, or ph with a cast.
	Literal(ph string, v any) string
	// Placeholder returns the marker of the n-th bound parameter (1-based).
	// A dialect whose markers do not name the parameter (SQLite's "?")
	// returns the same text for every n; the compiler then binds an
	// argument for every marker, in the order they appear.
	Placeholder(n int) string
	// JSONPath returns the bound value addressing keys inside a document.
	JSONPath(keys []string) (string, error)
	// JSONKind is an expression giving the kind name of the value at path
	// in doc, or NULL if there is none (also when doc is NULL).
	JSONKind(doc, path string) string
	// JSONKindIn is a condition: the value at path in doc has one of the
	// kinds. It may yield NULL for false.
	JSONKindIn(doc, path string, kinds KindSet) string
	// JSONNumber and JSONString are the value at path as an SQL number or
	// text, meaningful where its kind is number or string.
	JSONNumber(doc, path string) string
	JSONString(doc, path string) string
	// JSONBool is the value at path as an SQL boolean, meaningful where
	// its kind is true or false.
	JSONBool(doc, path string) string
	// BoolColumn is a condition true where a boolean column is (SQLite
	// keeps booleans as 0 and 1).
	BoolColumn(col string) string
	// JSONValue is the value at path for grouping and decoding: numbers as
	// SQL numbers, strings as text, objects and arrays as JSON text.
	JSONValue(doc, path string) string
	// JSONEqual is a condition that is true exactly where "the value at
	// path (keys) equals the literal lit" holds, false or NULL elsewhere
	// (the loose form a WHERE clause needs), or "" when the dialect has no
	// shortcut and the compiler should test kinds. lit is bound as param;
	// bind binds another value and returns its placeholder.
	JSONEqual(doc, path string, keys []string, lit *Literal, param string, bind func(any) string) string
	// JSONNotEqual is, like JSONEqual, a loose form of "the value at path
	// is of the literal's kind and differs from it" (true exactly there),
	// or "" when the dialect has no shortcut.
	JSONNotEqual(doc, path string, keys []string, lit *Literal, bind func(any) string) string
	// FirstOf is the first of two aggregates that is not NULL, each keeping
	// its own type (a number, or a string): MIN and MAX order numbers
	// before strings.
	FirstOf(a, b string) string
	// Func applies a string function: STARTSWITH, ENDSWITH, CONTAINS
	// (conditions), LOWER, UPPER (text) or LENGTH (number of characters).
	// Arguments are SQL texts.
	Func(name string, args ...string) string
	// Real converts a number to floating point; Mod is the floating-point
	// remainder (NULL for a zero divisor).
	Real(x string) string
	Mod(x, y string) string
	// TwinETag and DeviceETag encode the etag counters of a twin and of a
	// device identity as the REST API shows them (twin.ETagString,
	// registry.ETagString).
	TwinETag(counter string) string
	DeviceETag(counter string) string
}

// SQLite is the dialect of the embedded store (modernc.org/sqlite). It uses
// SQLite's JSON functions, which read both JSON text and JSONB, and two
// functions that the store registers on its connections: herd_twin_etag and
// herd_device_etag. Its placeholders are positional "?", so a compiled
// condition can be pasted into a larger statement with its arguments
// appended where it stands.
var SQLite Dialect = sqliteDialect{}

type sqliteDialect struct{}

func (sqliteDialect) Placeholder(int) string { return "?" }

func (sqliteDialect) Literal(ph string, _ any) string { return ph }

// JSONPath builds $."k1"."k2". SQLite reads a quoted label up to the next
// double quote, so keys holding one are written unquoted, which SQLite
// reads up to the next '.' or '['.
func (sqliteDialect) JSONPath(keys []string) (string, error) {
	var b strings.Builder
	b.WriteByte('$')
	for _, k := range keys {
		switch {
		case !strings.Contains(k, `"`):
			b.WriteString(`."` + k + `"`)
		case !strings.ContainsAny(k, ".["):
			b.WriteString("." + k)
		default:
			return "", fmt.Errorf("the key %q cannot be addressed in SQLite (it holds '\"' and '.' or '[')", k)
		}
	}
	return b.String(), nil
}

var sqliteTypes = map[Kind][]string{
	Null: {"null"}, False: {"false"}, True: {"true"}, Number: {"integer", "real"},
	String: {"text"}, Array: {"array"}, Object: {"object"},
}

func (sqliteDialect) JSONKind(doc, path string) string {
	return fmt.Sprintf("CASE json_type(%s, %s) WHEN 'integer' THEN 'number' WHEN 'real' THEN 'number' WHEN 'text' THEN 'string' ELSE json_type(%[1]s, %[2]s) END", doc, path)
}

func (sqliteDialect) JSONKindIn(doc, path string, kinds KindSet) string {
	t := fmt.Sprintf("json_type(%s, %s)", doc, path)
	switch kinds {
	case definedKinds:
		return t + " IS NOT NULL"
	case Kinds(Undefined):
		return t + " IS NULL"
	}
	var names []string
	for k := Null; k <= Object; k++ {
		if kinds.Has(k) {
			for _, n := range sqliteTypes[k] {
				names = append(names, "'"+n+"'")
			}
		}
	}
	in := t + " IN (" + strings.Join(names, ", ") + ")"
	if len(names) == 1 {
		in = t + " = " + names[0]
	}
	if kinds.Has(Undefined) {
		return "(" + t + " IS NULL OR " + in + ")"
	}
	return in
}

func (sqliteDialect) JSONNumber(doc, path string) string {
	return fmt.Sprintf("json_extract(%s, %s)", doc, path)
}

func (sqliteDialect) JSONString(doc, path string) string {
	return fmt.Sprintf("json_extract(%s, %s)", doc, path)
}

// JSONBool relies on json_extract returning 1 for true and 0 for false,
// which SQLite's TRUE and FALSE are.
func (sqliteDialect) JSONBool(doc, path string) string {
	return fmt.Sprintf("json_extract(%s, %s)", doc, path)
}

func (sqliteDialect) BoolColumn(col string) string { return col + " = 1" }

func (sqliteDialect) JSONValue(doc, path string) string {
	return fmt.Sprintf("json_extract(%s, %s)", doc, path)
}

// JSONEqual uses json_extract alone where its result cannot be confused
// across kinds: it returns numbers as SQL numbers, strings as text, true
// and false as 1 and 0, null as NULL, and objects and arrays as JSON text.
// So a number other than 0 and 1, or a string not starting with '{' or
// '[', equals only a value of its own kind.
func (sqliteDialect) JSONEqual(doc, path string, _ []string, lit *Literal, param string, _ func(any) string) string {
	x := fmt.Sprintf("json_extract(%s, %s)", doc, path)
	switch {
	case lit.Kind == Number && lit.Num != 0 && lit.Num != 1:
		return x + " = " + param
	case lit.Kind == String && !strings.HasPrefix(lit.Str, "{") && !strings.HasPrefix(lit.Str, "["):
		return x + " = " + param
	}
	return ""
}

// JSONNotEqual: no shortcut; the kind test and json_extract's value read
// the document once each.
func (sqliteDialect) JSONNotEqual(string, string, []string, *Literal, func(any) string) string {
	return ""
}

func (sqliteDialect) Func(name string, a ...string) string {
	switch name {
	case "STARTSWITH":
		return fmt.Sprintf("substr(%s, 1, length(%s)) = %[2]s", a[0], a[1])
	case "ENDSWITH":
		return fmt.Sprintf("(length(%[2]s) = 0 OR substr(%[1]s, -length(%[2]s)) = %[2]s)", a[0], a[1])
	case "CONTAINS":
		return fmt.Sprintf("instr(%s, %s) > 0", a[0], a[1])
	case "LOWER":
		return "lower(" + a[0] + ")"
	case "UPPER":
		return "upper(" + a[0] + ")"
	case "LENGTH":
		return "length(" + a[0] + ")"
	}
	panic("query: unknown function " + name)
}

func (sqliteDialect) FirstOf(a, b string) string { return "COALESCE(" + a + ", " + b + ")" }

func (sqliteDialect) Real(x string) string   { return "CAST(" + x + " AS REAL)" }
func (sqliteDialect) Mod(x, y string) string { return "mod(" + x + ", " + y + ")" }

func (sqliteDialect) TwinETag(c string) string   { return "herd_twin_etag(" + c + ")" }
func (sqliteDialect) DeviceETag(c string) string { return "herd_device_etag(" + c + ")" }

// GroupAggregate calls herd_aggregate, the store's hash aggregation
// (Grouper).
func (sqliteDialect) GroupAggregate(spec string, args []string) string {
	return "herd_aggregate(" + strings.Join(append([]string{spec}, args...), ", ") + ")"
}

// GroupKey passes the key's JSON text (SQLite's -> operator).
func (sqliteDialect) GroupKey(doc, path string) (string, string) {
	return "'json'", fmt.Sprintf("(%s -> %s)", doc, path)
}
