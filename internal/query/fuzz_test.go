package query

import (
	"errors"
	"strings"
	"testing"
)

// addSeeds adds the golden queries to a fuzz corpus.
func addSeeds(f *testing.F) {
	for _, file := range []string{"testdata/valid.txt", "testdata/invalid.txt"} {
		for _, q := range readQueries(&testing.T{}, file) {
			f.Add(q)
		}
	}
	f.Add("SELECT * FROM devices WHERE tags.a = '\\u00e9\\uD83D\\uDE00'")
	f.Add("SELECT * FROM devices WHERE - -tags.a = 1")
	f.Add("SELECT * FROM devices WHERE tags.a = -0")
}

// FuzzParse checks that the parser never panics, that every error has a
// position, that a parsed query prints to text that parses to the same
// tree, and that the compiler accepts every parsed query.
func FuzzParse(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, text string) {
		q, err := Parse(text)
		if err != nil {
			var pe *Error
			var tl *TooLongError
			if !errors.As(err, &pe) && !errors.As(err, &tl) {
				t.Fatalf("Parse(%q): error %T %v has no position", text, err, err)
			}
			if pe != nil && (pe.Pos.Line < 1 || pe.Pos.Col < 1) {
				t.Fatalf("Parse(%q): bad position %+v", text, pe.Pos)
			}
			return
		}
		printed := q.String()
		again, err := Parse(printed)
		if err != nil {
			t.Fatalf("Parse(%q) printed %q which does not parse: %v", text, printed, err)
		}
		if !sameTree(q, again) {
			t.Fatalf("Parse(%q) printed %q which parses to another tree", text, printed)
		}
		if again.String() != printed {
			t.Fatalf("printing is not stable: %q then %q", printed, again.String())
		}
		compileOrExplain(t, q)
	})
}

func compileOrExplain(t *testing.T, q *Query) {
	var err error
	if q.Aggregated() {
		_, err = CompileAggregate(SQLite, q)
	} else {
		_, err = CompileCondition(SQLite, q, "d")
	}
	var pe *Error
	if err != nil && !(errors.As(err, &pe) && (strings.Contains(pe.Msg, "cannot be addressed") || strings.Contains(pe.Msg, "cannot be grouped") || strings.Contains(pe.Msg, "too complex"))) {
		t.Fatalf("compile %s: %v", q, err)
	}
}

// FuzzCondition fuzzes job queryConditions the same way.
func FuzzCondition(f *testing.F) {
	f.Add("*")
	f.Add("tags.building = 43 AND properties.reported.fw != '1.2'")
	f.Add("deviceId IN ['a', 'b'] OR NOT IS_DEFINED(tags.x)")
	f.Fuzz(func(t *testing.T, text string) {
		q, err := ParseCondition(text)
		if err != nil {
			return
		}
		if q.Where != nil {
			again, err := ParseCondition(q.Where.String())
			if err != nil || !sameTree(q, again) {
				t.Fatalf("condition %q printed %q: %v", text, q.Where.String(), err)
			}
		}
		compileOrExplain(t, q)
	})
}
