package herd_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestPackageDocs checks that every package says what it owns in a doc
// comment, as the style guide asks.
func TestPackageDocs(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") && path != "." {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			return nil
		}
		pkgs, err := parser.ParseDir(token.NewFileSet(), path, func(fi os.FileInfo) bool {
			return !strings.HasSuffix(fi.Name(), "_test.go")
		}, parser.ParseComments|parser.PackageClauseOnly)
		if err != nil {
			return err
		}
		for name, pkg := range pkgs {
			documented := false
			for _, f := range pkg.Files {
				if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
					documented = true
				}
			}
			if !documented {
				t.Errorf("package %s (%s) has no doc comment", name, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// citation finds what comments cite: repository paths and Go test names.
var (
	citedPath = regexp.MustCompile(`\b(?:docs|internal|cmd|compat|bench|examples|device|service|sas)/[A-Za-z0-9_./-]*[A-Za-z0-9_]\.(?:go|md|mjs|sql|txt|json)\b`)
	citedTest = regexp.MustCompile(`\b(?:Test|Benchmark|Fuzz)[A-Z][A-Za-z0-9_]*`)
	testFunc  = regexp.MustCompile(`(?m)^func ((?:Test|Benchmark|Fuzz)[A-Z][A-Za-z0-9_]*)\(`)
)

// TestCitationsExist checks that every repository path (docs/jobs.md,
// internal/…/file.go) and every name of a test, benchmark or fuzz function
// that a comment in a Go or compat test file cites exists, so comments do
// not send a reader to something that was renamed or never written.
func TestCitationsExist(t *testing.T) {
	tests := map[string]bool{}
	type cite struct{ file, text string }
	var cites []cite
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules" || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		ext := filepath.Ext(path)
		if ext != ".go" && ext != ".mjs" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.HasSuffix(path, "_test.go") {
			for _, m := range testFunc.FindAllSubmatch(b, -1) {
				tests[string(m[1])] = true
			}
		}
		for _, c := range comments(path, b) {
			cites = append(cites, cite{path, c})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cites {
		for _, p := range citedPath.FindAllString(c.text, -1) {
			if _, err := os.Stat(p); err != nil {
				t.Errorf("%s: a comment cites %s, which does not exist", c.file, p)
			}
		}
		for _, name := range citedTest.FindAllString(c.text, -1) {
			if !tests[name] {
				t.Errorf("%s: a comment cites %s, which is no test function", c.file, name)
			}
		}
	}
}

// comments returns the comment text of a Go or JavaScript file.
func comments(path string, src []byte) []string {
	if strings.HasSuffix(path, ".go") {
		f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.ParseComments)
		if err != nil {
			return nil
		}
		var out []string
		for _, g := range f.Comments {
			out = append(out, g.Text())
		}
		return out
	}
	var out []string
	for _, line := range strings.Split(string(src), "\n") {
		if _, c, ok := strings.Cut(line, "// "); ok {
			out = append(out, c)
		}
	}
	return out
}
