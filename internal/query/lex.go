package query

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Pos is a position in the query text: 1-based line and column (in
// characters) and the 0-based byte offset.
type Pos struct {
	Line, Col, Offset int
}

func (p Pos) String() string { return fmt.Sprintf("line %d, column %d", p.Line, p.Col) }

// Error is a syntax or type error in a query, at a position.
type Error struct {
	Pos Pos
	Msg string
}

// Error implements the error interface.
func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

func errorf(p Pos, format string, args ...any) *Error {
	return &Error{Pos: p, Msg: fmt.Sprintf(format, args...)}
}

type tokenKind int

const (
	tokEOF tokenKind = iota
	tokIdent
	tokNumber
	tokString
	tokKeyword
	tokPunct
)

// token is one lexeme. For keywords text is upper case; for strings it is
// the decoded value; for identifiers and numbers it is the source text.
type token struct {
	kind tokenKind
	text string
	pos  Pos
	num  float64 // tokNumber
}

func (t token) String() string {
	switch t.kind {
	case tokEOF:
		return "the end of the query"
	case tokString:
		return "string " + quoteString(t.text)
	case tokNumber:
		return "number " + t.text
	case tokKeyword:
		return t.text
	}
	return "'" + t.text + "'"
}

func (t token) is(kind tokenKind, text string) bool { return t.kind == kind && t.text == text }

// keywords are the reserved words; they match case-insensitively.
var keywords = map[string]bool{
	"SELECT": true, "TOP": true, "FROM": true, "WHERE": true, "GROUP": true, "BY": true,
	"AS": true, "AND": true, "OR": true, "NOT": true, "IN": true, "NIN": true,
	"TRUE": true, "FALSE": true, "NULL": true, "UNDEFINED": true,
}

// lexer splits query text into tokens.
type lexer struct {
	src       string
	off       int
	line, col int
}

func newLexer(src string) *lexer { return &lexer{src: src, line: 1, col: 1} }

func (l *lexer) pos() Pos { return Pos{Line: l.line, Col: l.col, Offset: l.off} }

func (l *lexer) peekRune() (rune, int) {
	if l.off >= len(l.src) {
		return -1, 0
	}
	return utf8.DecodeRuneInString(l.src[l.off:])
}

func (l *lexer) advance() rune {
	r, n := l.peekRune()
	if n == 0 {
		return -1
	}
	l.off += n
	if r == '\n' {
		l.line++
		l.col = 1
	} else {
		l.col++
	}
	return r
}

func isIdentStart(r rune) bool {
	return r == '_' || r == '$' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
}

func isIdentPart(r rune) bool { return isIdentStart(r) || r >= '0' && r <= '9' }

func isDigit(r rune) bool { return r >= '0' && r <= '9' }

// next returns the next token.
func (l *lexer) next() (token, error) {
	for {
		r, _ := l.peekRune()
		if r == ' ' || r == '\t' || r == '\n' || r == '\r' {
			l.advance()
			continue
		}
		break
	}
	start := l.pos()
	r, n := l.peekRune()
	switch {
	case n == 0:
		return token{kind: tokEOF, pos: start}, nil
	case r == utf8.RuneError && n == 1:
		return token{}, errorf(start, "the query is not valid UTF-8")
	case isIdentStart(r):
		for {
			r, _ := l.peekRune()
			if !isIdentPart(r) {
				break
			}
			l.advance()
		}
		text := l.src[start.Offset:l.off]
		if up := strings.ToUpper(text); keywords[up] {
			return token{kind: tokKeyword, text: up, pos: start}, nil
		}
		return token{kind: tokIdent, text: text, pos: start}, nil
	case isDigit(r) || r == '.' && l.off+1 < len(l.src) && isDigit(rune(l.src[l.off+1])):
		return l.number(start)
	case r == '\'' || r == '"':
		return l.str(start, r)
	}
	l.advance()
	two := ""
	if r2, _ := l.peekRune(); r2 > 0 {
		two = string(r) + string(r2)
	}
	switch two {
	case "!=", "<>", "<=", ">=":
		l.advance()
		return token{kind: tokPunct, text: two, pos: start}, nil
	}
	switch r {
	case ',', '.', '(', ')', '[', ']', '*', '+', '-', '/', '%', '=', '<', '>':
		return token{kind: tokPunct, text: string(r), pos: start}, nil
	}
	return token{}, errorf(start, "unexpected character %q", r)
}

func (l *lexer) number(start Pos) (token, error) {
	if strings.HasPrefix(l.src[l.off:], "0x") || strings.HasPrefix(l.src[l.off:], "0X") {
		l.advance()
		l.advance()
		for {
			r, _ := l.peekRune()
			if !(isDigit(r) || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
				break
			}
			l.advance()
		}
		text := l.src[start.Offset:l.off]
		v, err := strconv.ParseUint(text[2:], 16, 64)
		if err != nil || len(text) == 2 {
			return token{}, errorf(start, "invalid hexadecimal number %s", text)
		}
		if r, _ := l.peekRune(); isIdentPart(r) {
			return token{}, errorf(l.pos(), "unexpected %q after number %s", r, text)
		}
		return token{kind: tokNumber, text: text, pos: start, num: float64(v)}, nil
	}
	digits := func() {
		for {
			r, _ := l.peekRune()
			if !isDigit(r) {
				return
			}
			l.advance()
		}
	}
	digits()
	if r, _ := l.peekRune(); r == '.' {
		l.advance()
		digits()
	}
	if r, _ := l.peekRune(); r == 'e' || r == 'E' {
		l.advance()
		if r, _ := l.peekRune(); r == '+' || r == '-' {
			l.advance()
		}
		if r, _ := l.peekRune(); !isDigit(r) {
			return token{}, errorf(l.pos(), "invalid number %s: the exponent has no digits", l.src[start.Offset:l.off])
		}
		digits()
	}
	text := l.src[start.Offset:l.off]
	if r, _ := l.peekRune(); isIdentPart(r) || r == '.' {
		return token{}, errorf(l.pos(), "unexpected %q after number %s", r, text)
	}
	v, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return token{}, errorf(start, "invalid number %s", text)
	}
	return token{kind: tokNumber, text: text, pos: start, num: v}, nil
}

func (l *lexer) str(start Pos, quote rune) (token, error) {
	l.advance()
	var b strings.Builder
	for {
		p := l.pos()
		r := l.advance()
		switch r {
		case -1:
			return token{}, errorf(start, "unterminated string")
		case quote:
			return token{kind: tokString, text: b.String(), pos: start}, nil
		case '\\':
			e := l.advance()
			switch e {
			case '\'', '"', '\\', '/':
				b.WriteRune(e)
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				if l.off+4 > len(l.src) {
					return token{}, errorf(p, "invalid \\u escape")
				}
				v, err := strconv.ParseUint(l.src[l.off:l.off+4], 16, 32)
				if err != nil {
					return token{}, errorf(p, "invalid \\u escape %q", l.src[l.off:l.off+4])
				}
				for range 4 {
					l.advance()
				}
				r := rune(v)
				if r >= 0xD800 && r < 0xDC00 && strings.HasPrefix(l.src[l.off:], `\u`) && l.off+6 <= len(l.src) {
					if lo, err := strconv.ParseUint(l.src[l.off+2:l.off+6], 16, 32); err == nil && lo >= 0xDC00 && lo < 0xE000 {
						for range 6 {
							l.advance()
						}
						r = (r-0xD800)<<10 + (rune(lo) - 0xDC00) + 0x10000
					}
				}
				if !utf8.ValidRune(r) {
					return token{}, errorf(p, "\\u escape is not a valid character")
				}
				b.WriteRune(r)
			case -1:
				return token{}, errorf(start, "unterminated string")
			default:
				return token{}, errorf(p, "invalid escape \\%c", e)
			}
		default:
			b.WriteRune(r)
		}
	}
}

// quoteString writes s as a single-quoted query string literal.
func quoteString(s string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for _, r := range s {
		switch r {
		case '\'':
			b.WriteString(`\'`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('\'')
	return b.String()
}
