package query

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// readQueries reads one query per line; a line that starts with white
// space continues the previous query; blank lines and # comments are
// skipped.
func readQueries(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#"):
		case (line[0] == ' ' || line[0] == '\t') && len(out) > 0:
			out[len(out)-1] += "\n" + line
		default:
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/query -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the output (run with -update to accept it):\n%s", path, diff(string(want), got))
	}
}

func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return fmt.Sprintf("line %d:\nwant: %s\ngot:  %s", i+1, a, b)
		}
	}
	return ""
}

// compileText renders what a query compiles to for the SQLite dialect.
func compileText(q *Query) string {
	var b strings.Builder
	if q.Aggregated() {
		a, err := CompileAggregate(SQLite, q)
		if err != nil {
			return "error: " + err.Error() + "\n"
		}
		fmt.Fprintf(&b, "sql: %s\nargs: %#v\n", a.SQL.Text, a.SQL.Args)
		if a, err = CompileAggregate(groupByDialect{SQLite}, q); err != nil {
			return "error: " + err.Error() + "\n"
		}
		fmt.Fprintf(&b, "group by: %s\nargs: %#v\n", a.SQL.Text, a.SQL.Args)
		return b.String()
	}
	s, err := CompileCondition(SQLite, q, "")
	if err != nil {
		return "error: " + err.Error() + "\n"
	}
	fmt.Fprintf(&b, "where: %s\nargs: %#v\n", s.Text, s.Args)
	return b.String()
}

// TestGoldenValid parses every query of testdata/valid.txt, prints it,
// checks that the printed form parses to the same tree, and compares the
// printed form and the compiled SQLite SQL with testdata/valid.golden.
func TestGoldenValid(t *testing.T) {
	var out strings.Builder
	for _, text := range readQueries(t, "testdata/valid.txt") {
		q, err := Parse(text)
		if err != nil {
			t.Errorf("Parse(%q): %v", text, err)
			continue
		}
		printed := q.String()
		again, err := Parse(printed)
		if err != nil {
			t.Errorf("Parse(String(%q)) = %q: %v", text, printed, err)
			continue
		}
		if !sameTree(q, again) {
			t.Errorf("round trip of %q changed the tree:\n%s", text, printed)
		}
		fmt.Fprintf(&out, "query: %s\nprint: %s\n%s\n", text, printed, compileText(q))
	}
	golden(t, "testdata/valid.golden", out.String())
}

// TestGoldenInvalid checks the error of every query of
// testdata/invalid.txt against testdata/invalid.golden.
func TestGoldenInvalid(t *testing.T) {
	var out strings.Builder
	for _, text := range readQueries(t, "testdata/invalid.txt") {
		_, err := Parse(text)
		if err == nil {
			t.Errorf("Parse(%q) succeeded; want an error", text)
			continue
		}
		fmt.Fprintf(&out, "query: %s\nerror: %v\n\n", text, err)
	}
	golden(t, "testdata/invalid.golden", out.String())
}

// sameTree compares two queries ignoring positions.
func sameTree(a, b *Query) bool {
	return reflect.DeepEqual(stripPos(a), stripPos(b))
}

func stripPos(q *Query) *Query {
	c := *q
	c.Select = nil
	for _, p := range q.Select {
		c.Select = append(c.Select, &Projection{Expr: stripExpr(p.Expr), Alias: p.Alias})
	}
	c.Where = stripExpr(q.Where)
	c.GroupBy = nil
	for _, g := range q.GroupBy {
		c.GroupBy = append(c.GroupBy, stripExpr(g).(*Path))
	}
	return &c
}

func stripExpr(e Expr) Expr {
	switch e := e.(type) {
	case nil:
		return nil
	case *Path:
		return &Path{Segs: e.Segs, Jobs: e.Jobs}
	case *Literal:
		return &Literal{Kind: e.Kind, Str: e.Str, Num: e.Num}
	case *Unary:
		return &Unary{Op: e.Op, X: stripExpr(e.X)}
	case *Binary:
		return &Binary{Op: e.Op, L: stripExpr(e.L), R: stripExpr(e.R)}
	case *In:
		l := make([]*Literal, len(e.List))
		for i, x := range e.List {
			l[i] = stripExpr(x).(*Literal)
		}
		return &In{X: stripExpr(e.X), Not: e.Not, List: l}
	case *Call:
		args := make([]Expr, len(e.Args))
		for i, a := range e.Args {
			args[i] = stripExpr(a)
		}
		return &Call{Name: e.Name, Args: args}
	case *Aggregate:
		return &Aggregate{Func: e.Func, Arg: stripExpr(e.Arg)}
	}
	panic(fmt.Sprintf("unknown node %T", e))
}

func TestParseCondition(t *testing.T) {
	for _, tc := range []struct {
		in, where, err string
	}{
		{in: "*", where: ""},
		{in: "  * ", where: ""},
		{in: "tags.building = 43", where: "tags.building = 43"},
		{in: "deviceId IN ['d1','d2']", where: "deviceId IN ['d1', 'd2']"},
		{in: "", err: "line 1, column 1: the condition is empty; use * to select every device"},
		{in: "SELECT * FROM devices", err: "line 1, column 1: expected an expression, found SELECT"},
		{in: "* AND x", err: "line 1, column 3: unexpected AND after the condition"},
		{in: "devices.jobs.jobId = 'x'", err: "line 1, column 1: devices.jobs.jobId is a devices.jobs field; query it FROM devices.jobs"},
	} {
		q, err := ParseCondition(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseCondition(%q) error = %v, want %s", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseCondition(%q): %v", tc.in, err)
			continue
		}
		got := ""
		if q.Where != nil {
			got = q.Where.String()
		}
		if got != tc.where || !q.Star || q.From != Devices {
			t.Errorf("ParseCondition(%q) = %q, want %q", tc.in, got, tc.where)
		}
	}
}

func TestTooLong(t *testing.T) {
	ok := "SELECT * FROM devices WHERE tags.a = '" + strings.Repeat("é", MaxLength-40) + "'"
	if n := len([]rune(ok)); n > MaxLength {
		t.Fatalf("test query is %d characters", n)
	}
	if _, err := Parse(ok); err != nil {
		t.Errorf("a query of %d characters: %v", len([]rune(ok)), err)
	}
	long := "SELECT * FROM devices WHERE tags.a = '" + strings.Repeat("x", MaxLength) + "'"
	_, err := Parse(long)
	if _, isTooLong := err.(*TooLongError); !isTooLong {
		t.Errorf("a query of %d characters: error %v, want *TooLongError", len(long), err)
	}
	if _, err := ParseCondition(strings.Repeat(" ", MaxLength+1)); err == nil {
		t.Error("a condition over the limit was accepted")
	}
}

// groupByDialect is SQLite without its one-pass aggregate: the portable
// GROUP BY form.
type groupByDialect struct{ Dialect }
