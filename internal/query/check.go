package query

import (
	"strings"
)

// field is a system property of a document: its canonical name, and for
// objects its system members (by lower-case name) and whether other
// members are user keys (case-sensitive, as in tags).
type field struct {
	name    string
	members map[string]*field
	open    bool
}

func leaf(name string) *field { return &field{name: name} }

func object(name string, open bool, members ...*field) *field {
	f := &field{name: name, members: map[string]*field{}, open: open}
	for _, m := range members {
		f.members[strings.ToLower(m.name)] = m
	}
	return f
}

// section is properties.desired or properties.reported: user keys plus
// $version and the $metadata tree.
func section(name string) *field {
	return object(name, true, leaf("$version"), object("$metadata", true))
}

// twinSchema is the service-side twin (§4.1) as GET /twins/{id} returns it.
var twinSchema = object("", false,
	leaf("deviceId"), leaf("moduleId"), leaf("etag"), leaf("deviceEtag"),
	leaf("status"), leaf("statusReason"), leaf("statusUpdateTime"),
	leaf("connectionState"), leaf("lastActivityTime"),
	leaf("cloudToDeviceMessageCount"), leaf("authenticationType"),
	object("x509Thumbprint", false, leaf("primaryThumbprint"), leaf("secondaryThumbprint")),
	leaf("modelId"), leaf("version"),
	object("capabilities", false, leaf("iotEdge")),
	object("tags", true),
	object("properties", false, section("desired"), section("reported")),
)

// jobSchema is a devices.jobs record (§6.5).
var jobSchema = func() *field {
	f := object("", false,
		leaf("deviceId"), leaf("jobId"), leaf("jobType"), leaf("status"),
		leaf("startTimeUtc"), leaf("endTimeUtc"), leaf("createdDateTimeUtc"),
		leaf("lastUpdatedDateTimeUtc"), leaf("attempts"),
		object("outcome", true),
		object("error", false, leaf("code"), leaf("description")),
	)
	// The docs filter on createdTimeUtc; the records say createdDateTimeUtc.
	f.members["createdtimeutc"] = f.members["createddatetimeutc"]
	return f
}()

// resolve canonicalises a path for the query's source.
func resolve(p *Path, src Source) error {
	segs := p.Segs
	if len(segs) >= 2 && strings.EqualFold(segs[0], "devices") && strings.EqualFold(segs[1], "jobs") {
		if src != DeviceJobs {
			return errorf(p.Pos, "%s is a devices.jobs field; query it FROM devices.jobs", p)
		}
		segs = segs[2:]
		if len(segs) == 0 {
			return errorf(p.Pos, "devices.jobs is not a property; name one of its fields")
		}
	}
	schema := twinSchema
	if src == DeviceJobs {
		schema = jobSchema
		p.Jobs = true
	}
	out := make([]string, len(segs))
	f := schema
	for i, s := range segs {
		switch {
		case f == nil:
			out[i] = s // inside user data
		case f.members[strings.ToLower(s)] != nil:
			f = f.members[strings.ToLower(s)]
			out[i] = f.name
		case f.open:
			f = nil
			out[i] = s
		case f.members == nil:
			return errorf(p.Pos, "%s has no members", strings.Join(out[:i], "."))
		case i == 0 && src != DeviceJobs:
			return errorf(p.Pos, "unknown property %s: twin properties are deviceId, status, tags.…, properties.desired.…, properties.reported.… and the other twin fields", s)
		case i == 0:
			return errorf(p.Pos, "unknown devices.jobs field %s", s)
		default:
			return errorf(p.Pos, "%s has no member %s", strings.Join(out[:i], "."), s)
		}
	}
	p.Segs = out
	return nil
}

// exprClass is what the checker knows of an expression's result.
type exprClass int

const (
	classValue   exprClass = iota // any JSON value
	classBool                     // always true or false
	classNumber                   // a number or undefined
	classLiteral                  // a constant other than true/false
)

// check resolves paths and enforces the rules of §6.5 and §7 that the
// grammar alone does not.
func check(q *Query) error {
	if q.HasTop && q.Top < 0 {
		return errorf(Pos{Line: 1, Col: 1}, "TOP must not be negative")
	}
	if q.From == DeviceJobs {
		if !q.Star {
			return errorf(q.Select[0].Expr.Position(), "devices.jobs queries allow only SELECT *")
		}
		if len(q.GroupBy) > 0 {
			return errorf(q.GroupBy[0].Pos, "devices.jobs queries cannot use GROUP BY")
		}
	}
	if q.Star && len(q.GroupBy) > 0 {
		return errorf(q.GroupBy[0].Pos, "GROUP BY needs a projection list, not SELECT *")
	}
	for _, g := range q.GroupBy {
		if err := resolve(g, q.From); err != nil {
			return err
		}
	}
	names := map[string]bool{}
	unnamed := 0
	for _, p := range q.Select {
		switch e := p.Expr.(type) {
		case *Path:
			if err := resolve(e, q.From); err != nil {
				return err
			}
		case *Aggregate:
			if e.Arg != nil {
				path, ok := e.Arg.(*Path)
				if !ok {
					return errorf(e.Arg.Position(), "%s takes a property path", e.Func)
				}
				if err := resolve(path, q.From); err != nil {
					return err
				}
			}
		default:
			return errorf(p.Expr.Position(), "a projection is a property path or an aggregate, not %s", p.Expr)
		}
		if p.Alias == "" {
			if _, ok := p.Expr.(*Aggregate); ok {
				unnamed++
			}
		}
		name := p.Name(unnamed)
		if names[name] {
			return errorf(p.Expr.Position(), "two projections are named %s; use AS to rename one", name)
		}
		names[name] = true
	}
	if q.Aggregated() {
		for _, p := range q.Select {
			path, ok := p.Expr.(*Path)
			if !ok {
				continue
			}
			found := false
			for _, g := range q.GroupBy {
				found = found || g.String() == path.String()
			}
			if !found {
				return errorf(path.Pos, "%s must be in GROUP BY or inside an aggregate", path)
			}
		}
	}
	if q.Where != nil {
		c, err := checkExpr(q.Where, q.From)
		if err != nil {
			return err
		}
		if c == classNumber || c == classLiteral {
			return errorf(q.Where.Position(), "the WHERE clause needs a condition, not %s", q.Where)
		}
	}
	return nil
}

func checkExpr(e Expr, src Source) (exprClass, error) {
	switch e := e.(type) {
	case *Path:
		return classValue, resolve(e, src)
	case *Literal:
		if e.Kind == True || e.Kind == False {
			return classBool, nil
		}
		return classLiteral, nil
	case *Aggregate:
		return 0, errorf(e.Pos, "aggregates such as %s are allowed only in the SELECT list", e.Func)
	case *Unary:
		c, err := checkExpr(e.X, src)
		if err != nil {
			return 0, err
		}
		if e.Op == "NOT" {
			if c == classNumber || c == classLiteral {
				return 0, errorf(e.X.Position(), "NOT needs a condition, not %s", e.X)
			}
			return classBool, nil
		}
		if c == classBool || c == classLiteral {
			return 0, errorf(e.X.Position(), "'-' needs a number, not %s", e.X)
		}
		return classNumber, nil
	case *Binary:
		lc, err := checkExpr(e.L, src)
		if err != nil {
			return 0, err
		}
		rc, err := checkExpr(e.R, src)
		if err != nil {
			return 0, err
		}
		switch binaryPrec[e.Op] {
		case precOr, precAnd:
			for _, side := range []struct {
				c exprClass
				e Expr
			}{{lc, e.L}, {rc, e.R}} {
				if side.c == classNumber || side.c == classLiteral {
					return 0, errorf(side.e.Position(), "%s needs conditions on both sides, not %s", e.Op, side.e)
				}
			}
			return classBool, nil
		case precCompare:
			return classBool, nil
		default:
			for _, side := range []struct {
				c exprClass
				e Expr
			}{{lc, e.L}, {rc, e.R}} {
				lit, isLit := side.e.(*Literal)
				if side.c == classBool || isLit && lit.Kind != Number && lit.Kind != Undefined {
					return 0, errorf(side.e.Position(), "'%s' needs numbers, not %s", e.Op, side.e)
				}
			}
			return classNumber, nil
		}
	case *In:
		if _, err := checkExpr(e.X, src); err != nil {
			return 0, err
		}
		return classBool, nil
	case *Call:
		for _, a := range e.Args {
			if _, err := checkExpr(a, src); err != nil {
				return 0, err
			}
		}
		if functions[e.Name].boolean {
			return classBool, nil
		}
		if e.Name == "LENGTH" {
			return classNumber, nil
		}
		return classLiteral, nil
	}
	return classValue, nil
}
