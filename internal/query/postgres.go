package query

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Postgres is the dialect of the PostgreSQL store (internal/store/postgres):
// twin sections are jsonb columns; a path inside one is bound as a text
// array (doc #> path); placeholders are numbered ($1, $2, …, reused where
// the same value recurs). Text compares byte by byte (COLLATE "C"), as
// the language's strings do. Equality with a literal in a WHERE clause
// uses jsonb containment on tags (served by the GIN jsonb_path_ops index)
// and jsonb equality elsewhere. The store defines herd_twin_etag and
// herd_device_etag.
var Postgres Dialect = postgresDialect{}

type postgresDialect struct{}

func (postgresDialect) Placeholder(n int) string { return "$" + strconv.Itoa(n) }

// Literal types the query's numbers as float8 (twin numbers are compared
// as float8) and its strings as text.
func (postgresDialect) Literal(ph string, v any) string {
	if _, ok := v.(string); ok {
		return ph + "::text"
	}
	return ph + "::float8"
}

// JSONPath writes the keys as a PostgreSQL text array literal.
func (postgresDialect) JSONPath(keys []string) (string, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(k))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String(), nil
}

// at is the jsonb value at path in doc (NULL where there is none). The
// path parameter is typed text[] itself: a cast from text inside the
// statement (path::text::text[]) goes through array_in, which is not
// immutable, so PostgreSQL runs it again on every row. A device job's
// outcome is stored as text (the bytes the device sent) and read as jsonb.
func at(doc, path string) string {
	return "(" + jsonbDoc(doc) + " #> " + path + "::text[])"
}

// jsonbDoc is doc as jsonb: a device job's outcome is stored as text.
func jsonbDoc(doc string) string {
	if doc == "outcome" || strings.HasSuffix(doc, ".outcome") {
		return doc + "::jsonb"
	}
	return doc
}

func (postgresDialect) JSONKind(doc, path string) string {
	x := at(doc, path)
	return fmt.Sprintf("CASE jsonb_typeof(%[1]s) WHEN 'boolean' THEN CASE WHEN %[1]s = 'true'::jsonb THEN 'true' ELSE 'false' END ELSE jsonb_typeof(%[1]s) END", x)
}

var postgresTypes = map[Kind]string{Null: "null", Number: "number", String: "string", Array: "array", Object: "object"}

func (postgresDialect) JSONKindIn(doc, path string, kinds KindSet) string {
	x := at(doc, path)
	switch kinds {
	case definedKinds:
		return x + " IS NOT NULL"
	case Kinds(Undefined):
		return x + " IS NULL"
	}
	var names, parts []string
	for k := Null; k <= Object; k++ {
		if n, ok := postgresTypes[k]; ok && kinds.Has(k) {
			names = append(names, "'"+n+"'")
		}
	}
	switch {
	case kinds.Has(True) && kinds.Has(False):
		names = append(names, "'boolean'")
	case kinds.Has(True):
		parts = append(parts, x+" = 'true'::jsonb")
	case kinds.Has(False):
		parts = append(parts, x+" = 'false'::jsonb")
	}
	switch len(names) {
	case 0:
	case 1:
		parts = append(parts, "jsonb_typeof("+x+") = "+names[0])
	default:
		parts = append(parts, "jsonb_typeof("+x+") IN ("+strings.Join(names, ", ")+")")
	}
	if kinds.Has(Undefined) {
		parts = append(parts, x+" IS NULL")
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "(" + strings.Join(parts, " OR ") + ")"
}

// JSONNumber, JSONString and JSONBool convert only a value of their kind:
// PostgreSQL may evaluate a comparison before the kind test beside it.
func (postgresDialect) JSONNumber(doc, path string) string {
	x := at(doc, path)
	return "CASE WHEN jsonb_typeof(" + x + ") = 'number' THEN (" + x + ")::float8 END"
}

func (postgresDialect) JSONString(doc, path string) string {
	x := at(doc, path)
	return "(CASE WHEN jsonb_typeof(" + x + ") = 'string' THEN " + x + " #>> '{}' END) COLLATE \"C\""
}

func (postgresDialect) JSONBool(doc, path string) string {
	x := at(doc, path)
	return "CASE WHEN jsonb_typeof(" + x + ") = 'boolean' THEN (" + x + ")::boolean END"
}

func (postgresDialect) BoolColumn(col string) string { return col }

func (postgresDialect) JSONValue(doc, path string) string { return at(doc, path) }

// JSONGroupKey groups by the jsonb value itself (jsonb equality compares
// numbers numerically, so 1 and 1.0 are one group) and returns its JSON
// text.
func (postgresDialect) JSONGroupKey(doc, path string) (string, string) {
	x := at(doc, path)
	return x, x + "::text"
}

// JSONEqual: on tags, containment (tags @> '{"a":{"b":43}}'), which the
// GIN index answers; elsewhere jsonb equality. Both are false, not
// undefined, for a value of another kind, which a WHERE clause does not
// tell apart.
func (postgresDialect) JSONEqual(doc, path string, keys []string, lit *Literal, _ string, bind func(any) string) string {
	var v any
	switch lit.Kind {
	case Null:
	case True:
		v = true
	case False:
		v = false
	case Number:
		v = lit.Num
	case String:
		v = lit.Str
	default:
		return ""
	}
	if tags := doc == "tags" || strings.HasSuffix(doc, ".tags"); tags && len(keys) > 0 {
		for i := len(keys) - 1; i >= 0; i-- {
			v = map[string]any{keys[i]: v}
		}
		b, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return doc + " @> " + bind(string(b)) + "::text::jsonb"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return at(doc, path) + " = " + bind(string(b)) + "::text::jsonb"
}

// JSONNotEqual for a string: the value read as text (#>>, which is as
// cheap as reading it at all) differs from the literal, and a strict
// jsonpath comparison holds, which is true only for a string: jsonpath
// compares a string with a number, boolean, array or object as unknown,
// and with null as unequal, which the text read, NULL for JSON null,
// rules out. A COUNT over a million twins reads the value once as text
// and once in the jsonpath; a kind test (jsonb_typeof) and a jsonb
// comparison, which build it twice as a jsonb datum, took half as long
// again (docs/benchmarks.md).
func (postgresDialect) JSONNotEqual(doc, path string, keys []string, lit *Literal, bind func(any) string) string {
	if lit.Kind != String {
		return ""
	}
	jp, err := jsonpathNotEqual(keys, lit.Str)
	if err != nil {
		return ""
	}
	d := jsonbDoc(doc)
	return "((" + d + " #>> " + path + "::text[]) <> " + bind(lit.Str) + "::text AND " + d + " @@ " + bind(jp) + "::jsonpath)"
}

// jsonpathNotEqual is the strict jsonpath predicate "the value at keys
// differs from the string s" (strict $."a"."b" != "x"): keys and s are
// written as JSON strings, which jsonpath reads with the same escapes.
func jsonpathNotEqual(keys []string, s string) (string, error) {
	var b strings.Builder
	b.WriteString("strict $")
	for _, k := range keys {
		q, err := json.Marshal(k)
		if err != nil {
			return "", err
		}
		b.WriteByte('.')
		b.Write(q)
	}
	q, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	b.WriteString(" != ")
	b.Write(q)
	return b.String(), nil
}

func (postgresDialect) Func(name string, a ...string) string {
	switch name {
	case "STARTSWITH":
		return fmt.Sprintf("starts_with(%s, %s)", a[0], a[1])
	case "ENDSWITH":
		return fmt.Sprintf("right(%s, char_length(%s)) = %[2]s", a[0], a[1])
	case "CONTAINS":
		return fmt.Sprintf("strpos(%s, %s) > 0", a[0], a[1])
	case "LOWER":
		return "translate(" + a[0] + ", 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
	case "UPPER":
		return "translate(" + a[0] + ", 'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ')"
	case "LENGTH":
		return "char_length(" + a[0] + ")"
	}
	panic("query: unknown function " + name)
}

// FirstOf returns jsonb, which keeps a number a number and a string a
// string in one column.
func (postgresDialect) FirstOf(a, b string) string {
	return "COALESCE(to_jsonb(" + a + "), to_jsonb(" + b + "))"
}

func (postgresDialect) Real(x string) string { return "CAST(" + x + " AS double precision)" }

// Mod is the floating-point remainder with the sign of x (C's fmod), NULL
// for a zero divisor.
func (postgresDialect) Mod(x, y string) string {
	return "CASE WHEN " + y + " <> 0 THEN CAST(" + x + " AS double precision) - CAST(" + y + " AS double precision) * trunc(CAST(" + x + " AS double precision) / " + y + ") END"
}

func (postgresDialect) TwinETag(c string) string   { return "herd_twin_etag(" + c + ")" }
func (postgresDialect) DeviceETag(c string) string { return "herd_device_etag(" + c + ")" }
