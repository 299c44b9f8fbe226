package query

import (
	"testing"
	"unsafe"
)

// volatile returns a string that aliases buf, as the SQLite driver passes
// arguments with VolatileArgs.
func volatile(buf []byte, s string) string {
	n := copy(buf, s)
	return unsafe.String(&buf[0], n)
}

// TestGrouperCopiesWhatItKeeps: the store passes strings that alias its
// own memory and reuses it for the next row; the Grouper must not keep
// them (a bug once turned SUM into garbage).
func TestGrouperCopiesWhatItKeeps(t *testing.T) {
	buf := make([]byte, 64)
	g, err := NewGrouper(volatile(buf, "1;COUNT;SUM;MAX"))
	if err != nil {
		t.Fatal(err)
	}
	rows := []struct {
		key string
		n   any
		s   string
	}{{`"a"`, int64(2), "x"}, {`"b"`, 1.5, "y"}, {`"a"`, int64(3), "z"}}
	for _, r := range rows {
		key := volatile(buf, r.key)
		if err := g.Step([]any{"json", key, r.n, volatile(buf[32:], r.s)}); err != nil {
			t.Fatal(err)
		}
		for i := range buf {
			buf[i] = '#'
		}
	}
	got, err := g.Result()
	if err != nil {
		t.Fatal(err)
	}
	if want := `[["string","a",2,5,"z"],["string","b",1,1.5,"y"]]`; got != want {
		t.Errorf("Result = %s, want %s", got, want)
	}
}

func TestGrouperKeys(t *testing.T) {
	g, err := NewGrouper("1;COUNT")
	if err != nil {
		t.Fatal(err)
	}
	// 1 and 1.0 are one group; "\u0061" and "a" are one group; null,
	// undefined and true are groups of their own; objects and arrays are
	// grouped by value whatever their key order and number spelling.
	for _, k := range []any{"1", "1.0", `"a"`, `"\u0061"`, "null", nil, "true", `{"a":1}`, "-0", "0",
		`{"a":1.0}`, `{"b":[2],"a":1}`, `{"a":1e0,"b":[2.0]}`, `[1,{"x":-0}]`, `[1.00, {"x":0}]`} {
		if err := g.Step([]any{"json", k}); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := g.Result()
	want := `[["",null,1],["null",null,1],["true",null,1],["number",0,2],["number",1,2],["string","a",2],["array","[1,{\"x\":-0}]",2],["object","{\"a\":1}",2],["object","{\"b\":[2],\"a\":1}",2]]`
	if got != want {
		t.Errorf("Result = %s\nwant %s", got, want)
	}
	if _, err := NewGrouper("x;COUNT"); err == nil {
		t.Error("bad spec accepted")
	}
	if err := g.Step([]any{"json"}); err == nil {
		t.Error("wrong number of values accepted")
	}
}
