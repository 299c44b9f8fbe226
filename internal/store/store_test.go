package store

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		spec      string
		kind      Kind
		where     string
		errSubstr string
	}{
		{"", SQLite, filepath.Join("data", SQLiteFile), ""},
		{"sqlite:/var/lib/herd/hub.db", SQLite, "/var/lib/herd/hub.db", ""},
		{"sqlite:///var/lib/herd/hub.db", SQLite, "/var/lib/herd/hub.db", ""},
		{"sqlite:rel/hub.db", SQLite, "rel/hub.db", ""},
		{"postgres://herd@db:5432/herd", Postgres, "postgres://herd@db:5432/herd", ""},
		{"postgresql://herd@db/herd", Postgres, "postgresql://herd@db/herd", ""},
		{"sqlite:", "", "", "give the database file"},
		{"mysql://root:hunter2@db/herd", "", "", "use sqlite:PATH or a postgres://"},
		{"herd.db", "", "", "use sqlite:PATH"},
	} {
		kind, where, err := Parse(c.spec, "data")
		if c.errSubstr != "" {
			if err == nil || !strings.Contains(err.Error(), c.errSubstr) {
				t.Errorf("Parse(%q) = %v, want an error with %q", c.spec, err, c.errSubstr)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("Parse(%q): the error shows the password: %v", c.spec, err)
			}
			continue
		}
		if err != nil || kind != c.kind || where != c.where {
			t.Errorf("Parse(%q) = %q, %q, %v; want %q, %q", c.spec, kind, where, err, c.kind, c.where)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://herd:hunter2@db:5432/herd":                "postgres://herd:***@db:5432/herd",
		"postgres://herd@db:5432/herd?sslmode=disable":        "postgres://herd@db:5432/herd?sslmode=disable",
		"postgres://db/herd?password=hunter2&sslmode=require": "postgres://db/herd?password=***&sslmode=require",
		"postgres://herd:hun%40ter@db/herd":                   "postgres://herd:***@db/herd",
		"postgres://herd:p@ss@db/herd":                        "postgres://herd:***@db/herd",
		"sqlite:/tmp/herd.db":                                 "sqlite:/tmp/herd.db",
		"":                                                    "",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDescribe(t *testing.T) {
	if got, want := Describe("", "data"), "SQLite "+filepath.Join("data", SQLiteFile); got != want {
		t.Errorf("Describe(\"\") = %q, want %q", got, want)
	}
	if got, want := Describe("postgres://herd:s3cret@db/herd", "data"), "PostgreSQL postgres://herd:***@db/herd"; got != want {
		t.Errorf("Describe(postgres) = %q, want %q", got, want)
	}
}
