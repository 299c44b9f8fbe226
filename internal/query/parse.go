package query

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxLength is the longest query text accepted, in characters (§7.5).
const MaxLength = 8192

// TooLongError is returned for a query text longer than MaxLength; the REST
// API answers it with 412 PreconditionFailed, as Azure does (§3.6).
type TooLongError struct{ Length int }

func (e *TooLongError) Error() string {
	return "the query is " + itoa(e.Length) + " characters long; the limit is " + itoa(MaxLength)
}

func itoa(n int) string { return strconv.Itoa(n) }

// Parse parses and checks a whole query:
//
//	SELECT [TOP n] * | projections FROM devices | devices.modules | devices.jobs [WHERE cond] [GROUP BY paths]
//
// Errors are *Error (with the position) or *TooLongError.
func Parse(text string) (*Query, error) {
	p, err := newParser(text)
	if err != nil {
		return nil, err
	}
	q, err := p.query()
	if err != nil {
		return nil, err
	}
	if err := check(q); err != nil {
		return nil, err
	}
	return q, nil
}

// ParseCondition parses a job's queryCondition (§6.2): the WHERE
// expression alone, over devices. "*" selects every device and gives a nil
// expression. The result is the equivalent SELECT * query.
func ParseCondition(text string) (*Query, error) {
	p, err := newParser(text)
	if err != nil {
		return nil, err
	}
	q := &Query{Star: true, From: Devices}
	if p.tok.is(tokPunct, "*") {
		if err := p.advance(); err != nil {
			return nil, err
		}
	} else {
		if p.tok.kind == tokEOF {
			return nil, errorf(p.tok.pos, "the condition is empty; use * to select every device")
		}
		if q.Where, err = p.expr(); err != nil {
			return nil, err
		}
	}
	if p.tok.kind != tokEOF {
		return nil, errorf(p.tok.pos, "unexpected %s after the condition", p.tok)
	}
	if err := check(q); err != nil {
		return nil, err
	}
	return q, nil
}

type parser struct {
	lex   *lexer
	tok   token
	depth int
}

// maxDepth bounds the nesting of parentheses, NOT and unary minus.
const maxDepth = 64

func (p *parser) enter(at Pos) error {
	p.depth++
	if p.depth > maxDepth {
		return errorf(at, "the query nests more than %d levels deep", maxDepth)
	}
	return nil
}

func newParser(text string) (*parser, error) {
	if n := utf8.RuneCountInString(text); n > MaxLength {
		return nil, &TooLongError{Length: n}
	}
	if !utf8.ValidString(text) {
		return nil, errorf(Pos{Line: 1, Col: 1}, "the query is not valid UTF-8")
	}
	p := &parser{lex: newLexer(text)}
	if err := p.advance(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *parser) advance() error {
	t, err := p.lex.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

// accept consumes the current token if it is kind/text.
func (p *parser) accept(kind tokenKind, text string) (bool, error) {
	if !p.tok.is(kind, text) {
		return false, nil
	}
	return true, p.advance()
}

func (p *parser) expect(kind tokenKind, text, what string) error {
	if !p.tok.is(kind, text) {
		return errorf(p.tok.pos, "expected %s, found %s", what, p.tok)
	}
	return p.advance()
}

func (p *parser) query() (*Query, error) {
	q := &Query{}
	if err := p.expect(tokKeyword, "SELECT", "SELECT"); err != nil {
		return nil, err
	}
	if ok, err := p.accept(tokKeyword, "TOP"); err != nil {
		return nil, err
	} else if ok {
		if p.tok.kind != tokNumber || p.tok.num != math.Trunc(p.tok.num) || p.tok.num < 0 || p.tok.num > math.MaxInt32 {
			return nil, errorf(p.tok.pos, "TOP needs a whole number, found %s", p.tok)
		}
		q.HasTop, q.Top = true, int64(p.tok.num)
		if err := p.advance(); err != nil {
			return nil, err
		}
	}
	if ok, err := p.accept(tokPunct, "*"); err != nil {
		return nil, err
	} else if ok {
		q.Star = true
	} else {
		for {
			proj, err := p.projection()
			if err != nil {
				return nil, err
			}
			q.Select = append(q.Select, proj)
			if ok, err := p.accept(tokPunct, ","); err != nil {
				return nil, err
			} else if !ok {
				break
			}
		}
	}
	if err := p.expect(tokKeyword, "FROM", "FROM"); err != nil {
		return nil, err
	}
	if err := p.source(q); err != nil {
		return nil, err
	}
	if ok, err := p.accept(tokKeyword, "WHERE"); err != nil {
		return nil, err
	} else if ok {
		if q.Where, err = p.expr(); err != nil {
			return nil, err
		}
	}
	if ok, err := p.accept(tokKeyword, "GROUP"); err != nil {
		return nil, err
	} else if ok {
		if err := p.expect(tokKeyword, "BY", "BY after GROUP"); err != nil {
			return nil, err
		}
		for {
			start := p.tok
			e, err := p.primary()
			if err != nil {
				return nil, err
			}
			path, ok := e.(*Path)
			if !ok {
				return nil, errorf(start.pos, "GROUP BY takes property paths, not %s", e)
			}
			q.GroupBy = append(q.GroupBy, path)
			if ok, err := p.accept(tokPunct, ","); err != nil {
				return nil, err
			} else if !ok {
				break
			}
		}
	}
	if p.tok.kind != tokEOF {
		return nil, errorf(p.tok.pos, "unexpected %s", p.tok)
	}
	return q, nil
}

func (p *parser) source(q *Query) error {
	if p.tok.kind != tokIdent || !strings.EqualFold(p.tok.text, "devices") {
		return errorf(p.tok.pos, "expected devices, devices.modules or devices.jobs after FROM, found %s", p.tok)
	}
	if err := p.advance(); err != nil {
		return err
	}
	q.From = Devices
	if ok, err := p.accept(tokPunct, "."); err != nil || !ok {
		return err
	}
	switch {
	case p.tok.kind == tokIdent && strings.EqualFold(p.tok.text, "jobs"):
		q.From = DeviceJobs
	case p.tok.kind == tokIdent && strings.EqualFold(p.tok.text, "modules"):
		q.From = DeviceModules
	default:
		return errorf(p.tok.pos, "expected devices, devices.modules or devices.jobs after FROM, found devices.%s", p.tok.text)
	}
	return p.advance()
}

func (p *parser) projection() (*Projection, error) {
	e, err := p.additive()
	if err != nil {
		return nil, err
	}
	proj := &Projection{Expr: e}
	if ok, err := p.accept(tokKeyword, "AS"); err != nil {
		return nil, err
	} else if ok {
		switch p.tok.kind {
		case tokIdent, tokString:
			proj.Alias = p.tok.text
		default:
			return nil, errorf(p.tok.pos, "expected a name after AS, found %s", p.tok)
		}
		if proj.Alias == "" {
			return nil, errorf(p.tok.pos, "the name after AS is empty")
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
	}
	return proj, nil
}

// expr parses a full expression (OR has the loosest binding).
func (p *parser) expr() (Expr, error) { return p.chain(tokKeyword, []string{"OR"}, p.and) }

func (p *parser) and() (Expr, error) { return p.chain(tokKeyword, []string{"AND"}, p.not) }

// chain parses operands joined by any of the operators ops (tokens of
// kind), grouping from the left: a - b - c is (a - b) - c.
func (p *parser) chain(kind tokenKind, ops []string, operand func() (Expr, error)) (Expr, error) {
	l, err := operand()
	if err != nil {
		return nil, err
	}
	for {
		i := slices.IndexFunc(ops, func(op string) bool { return p.tok.is(kind, op) })
		if i < 0 {
			return l, nil
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		r, err := operand()
		if err != nil {
			return nil, err
		}
		l = &Binary{Op: ops[i], L: l, R: r}
	}
}

func (p *parser) not() (Expr, error) {
	if p.tok.is(tokKeyword, "NOT") {
		pos := p.tok.pos
		if err := p.enter(pos); err != nil {
			return nil, err
		}
		defer func() { p.depth-- }()
		if err := p.advance(); err != nil {
			return nil, err
		}
		x, err := p.not()
		if err != nil {
			return nil, err
		}
		return &Unary{Op: "NOT", X: x, Pos: pos}, nil
	}
	return p.comparison()
}

var compareOps = map[string]string{"=": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}

func (p *parser) comparison() (Expr, error) {
	l, err := p.additive()
	if err != nil {
		return nil, err
	}
	for {
		switch {
		case p.tok.kind == tokPunct && compareOps[p.tok.text] != "":
			op := compareOps[p.tok.text]
			if err := p.advance(); err != nil {
				return nil, err
			}
			r, err := p.additive()
			if err != nil {
				return nil, err
			}
			l = &Binary{Op: op, L: l, R: r}
		case p.tok.is(tokKeyword, "IN") || p.tok.is(tokKeyword, "NIN"):
			not := p.tok.text == "NIN"
			if err := p.advance(); err != nil {
				return nil, err
			}
			list, err := p.list()
			if err != nil {
				return nil, err
			}
			l = &In{X: l, Not: not, List: list}
		default:
			return l, nil
		}
	}
}

func (p *parser) list() ([]*Literal, error) {
	if err := p.expect(tokPunct, "[", "'[' to start the list of constants"); err != nil {
		return nil, err
	}
	list := []*Literal{}
	if ok, err := p.accept(tokPunct, "]"); err != nil || ok {
		return list, err
	}
	for {
		start := p.tok
		e, err := p.unary()
		if err != nil {
			return nil, err
		}
		lit, ok := e.(*Literal)
		if !ok {
			return nil, errorf(start.pos, "IN and NIN lists hold constants only, not %s", e)
		}
		list = append(list, lit)
		if ok, err := p.accept(tokPunct, ","); err != nil {
			return nil, err
		} else if !ok {
			break
		}
	}
	return list, p.expect(tokPunct, "]", "',' or ']' in the list")
}

func (p *parser) additive() (Expr, error) {
	return p.chain(tokPunct, []string{"+", "-"}, p.multiplicative)
}

func (p *parser) multiplicative() (Expr, error) {
	return p.chain(tokPunct, []string{"*", "/", "%"}, p.unary)
}

func (p *parser) unary() (Expr, error) {
	if p.tok.is(tokPunct, "-") {
		pos := p.tok.pos
		if err := p.enter(pos); err != nil {
			return nil, err
		}
		defer func() { p.depth-- }()
		if err := p.advance(); err != nil {
			return nil, err
		}
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		if lit, ok := x.(*Literal); ok && lit.Kind == Number {
			return &Literal{Kind: Number, Num: -lit.Num, Pos: pos}, nil
		}
		return &Unary{Op: "-", X: x, Pos: pos}, nil
	}
	if p.tok.is(tokPunct, "+") {
		return nil, errorf(p.tok.pos, "unexpected '+'")
	}
	return p.primary()
}

func (p *parser) primary() (Expr, error) {
	t := p.tok
	switch t.kind {
	case tokNumber:
		return &Literal{Kind: Number, Num: t.num, Pos: t.pos}, p.advance()
	case tokString:
		return &Literal{Kind: String, Str: t.text, Pos: t.pos}, p.advance()
	case tokKeyword:
		kinds := map[string]Kind{"TRUE": True, "FALSE": False, "NULL": Null, "UNDEFINED": Undefined}
		if k, ok := kinds[t.text]; ok {
			return &Literal{Kind: k, Pos: t.pos}, p.advance()
		}
	case tokPunct:
		switch t.text {
		case "(":
			if err := p.enter(t.pos); err != nil {
				return nil, err
			}
			defer func() { p.depth-- }()
			if err := p.advance(); err != nil {
				return nil, err
			}
			e, err := p.expr()
			if err != nil {
				return nil, err
			}
			return e, p.expect(tokPunct, ")", "')'")
		case "[":
			return nil, errorf(t.pos, "a list of constants may only follow IN or NIN")
		}
	case tokIdent:
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok.is(tokPunct, "(") {
			return p.call(t)
		}
		return p.path(t)
	}
	return nil, errorf(t.pos, "expected an expression, found %s", t)
}

// path parses the rest of a path whose first segment is first.
func (p *parser) path(first token) (Expr, error) {
	path := &Path{Segs: []string{first.text}, Pos: first.pos}
	for {
		switch {
		case p.tok.is(tokPunct, "."):
			if err := p.advance(); err != nil {
				return nil, err
			}
			if p.tok.kind != tokIdent && p.tok.kind != tokKeyword {
				return nil, errorf(p.tok.pos, "expected a property name after '.', found %s", p.tok)
			}
			seg := p.tok.text
			if p.tok.kind == tokKeyword {
				// Keywords are upper-cased by the lexer; take the source text.
				seg = p.lex.src[p.tok.pos.Offset : p.tok.pos.Offset+len(seg)]
			}
			path.Segs = append(path.Segs, seg)
			if err := p.advance(); err != nil {
				return nil, err
			}
		case p.tok.is(tokPunct, "["):
			if err := p.advance(); err != nil {
				return nil, err
			}
			if p.tok.kind != tokString {
				return nil, errorf(p.tok.pos, "expected a quoted property name inside [ ], found %s", p.tok)
			}
			path.Segs = append(path.Segs, p.tok.text)
			if err := p.advance(); err != nil {
				return nil, err
			}
			if err := p.expect(tokPunct, "]", "']'"); err != nil {
				return nil, err
			}
		default:
			return path, nil
		}
	}
}

func (p *parser) call(name token) (Expr, error) {
	if err := p.enter(name.pos); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	if err := p.advance(); err != nil { // (
		return nil, err
	}
	var args []Expr
	if !p.tok.is(tokPunct, ")") {
		for {
			a, err := p.expr()
			if err != nil {
				return nil, err
			}
			args = append(args, a)
			if ok, err := p.accept(tokPunct, ","); err != nil {
				return nil, err
			} else if !ok {
				break
			}
		}
	}
	if err := p.expect(tokPunct, ")", "',' or ')' after the arguments"); err != nil {
		return nil, err
	}
	up := strings.ToUpper(name.text)
	if aggregates[up] {
		a := &Aggregate{Func: up, Pos: name.pos}
		switch {
		case up == "COUNT" && len(args) != 0:
			return nil, errorf(name.pos, "COUNT() takes no arguments")
		case up != "COUNT" && len(args) != 1:
			return nil, errorf(name.pos, "%s takes one argument", up)
		case up != "COUNT":
			a.Arg = args[0]
		}
		return a, nil
	}
	canon, ok := functionAliases[up]
	if !ok {
		return nil, errorf(name.pos, "unknown function %s", name.text)
	}
	f := functions[canon]
	if len(args) != f.arity {
		return nil, errorf(name.pos, "%s takes %d argument%s, not %d", canon, f.arity, plural(f.arity), len(args))
	}
	return &Call{Name: canon, Args: args, Pos: name.pos}, nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

var aggregates = map[string]bool{"COUNT": true, "SUM": true, "AVG": true, "MIN": true, "MAX": true}

// function describes a scalar function: its arity and result kinds.
type function struct {
	arity   int
	boolean bool // returns true or false
}

var functions = map[string]function{
	"IS_DEFINED": {1, true}, "IS_NULL": {1, true}, "IS_BOOL": {1, true}, "IS_NUMBER": {1, true},
	"IS_STRING": {1, true}, "IS_OBJECT": {1, true}, "IS_ARRAY": {1, true}, "IS_PRIMITIVE": {1, true},
	"STARTSWITH": {2, true}, "ENDSWITH": {2, true}, "CONTAINS": {2, true},
	"LOWER": {1, false}, "UPPER": {1, false}, "LENGTH": {1, false},
}

// functionAliases maps every accepted spelling to the canonical name: the
// twin-query spellings STARTSWITH/ENDSWITH and the routing-query spellings
// STARTS_WITH/ENDS_WITH are both accepted (§7.2).
var functionAliases = func() map[string]string {
	m := map[string]string{"STARTS_WITH": "STARTSWITH", "ENDS_WITH": "ENDSWITH"}
	for name := range functions {
		m[name] = name
	}
	return m
}()
