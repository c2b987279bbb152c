package sqlclass

import "strings"

// tokKind is the kind of a lexical token.
type tokKind uint8

const (
	tokEOF          tokKind = iota
	tokInvalid              // unterminated literal or comment, or a byte PostgreSQL rejects
	tokWord                 // unquoted identifier or keyword
	tokQuotedIdent          // "quoted identifier"; start:end is the text between the quotes
	tokUnicodeIdent         // U&"quoted identifier"; start:end is the text between the quotes
	tokString               // any string literal, including its continuations
	tokNumber               // numeric constant
	tokParam                // positional parameter $n
	tokPunct                // one byte of punctuation or operator
)

// token is one lexical token of lexer.src.
type token struct {
	kind       tokKind
	start, end int
}

// strMode is how the body of a quoted string literal is lexed.
type strMode uint8

const (
	modeStandard strMode = iota // '...' and N'...': backslash escapes depend on standard_conforming_strings
	modeEscape                  // E'...': backslash always escapes
	modeBits                    // B'...' and X'...': no escapes; a backslash is invalid
	modeUnicode                 // U&'...': no quote escapes
)

// Character classes, per PostgreSQL's scan.l.
const (
	clsSpace      uint8 = 1 << iota // [ \t\n\r\f\v]
	clsIdentStart                   // [A-Za-z_\x80-\xff]
	clsIdentCont                    // [A-Za-z_0-9$\x80-\xff]
	clsDigit                        // [0-9]
)

var charClass = func() (t [256]uint8) {
	for _, c := range []byte(" \t\n\r\f\v") {
		t[c] |= clsSpace
	}
	for c := 0; c < 256; c++ {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c >= 0x80:
			t[c] |= clsIdentStart | clsIdentCont
		case c >= '0' && c <= '9':
			t[c] |= clsDigit | clsIdentCont
		case c == '$':
			t[c] |= clsIdentCont
		}
	}
	return t
}()

// lexer splits src into tokens. The zero value with src set lexes as
// PostgreSQL does with standard_conforming_strings on.
type lexer struct {
	src string
	pos int
	// escapeStrings lexes plain '...' literals as if standard_conforming_strings
	// were off, that is with backslash escapes.
	escapeStrings bool
	// stdBackslash records that a plain literal contained a backslash, so
	// where it ends depends on standard_conforming_strings.
	stdBackslash bool
}

// next returns the next token, skipping whitespace and comments.
func (l *lexer) next() token {
	s := l.src
	i := l.pos
	for i < len(s) {
		c := s[i]
		if charClass[c]&clsSpace != 0 {
			i++
			continue
		}
		if c == '-' && i+1 < len(s) && s[i+1] == '-' {
			i = skipLineComment(s, i+2)
			continue
		}
		if c == '/' && i+1 < len(s) && s[i+1] == '*' {
			end, ok := skipBlockComment(s, i+2)
			if !ok {
				return l.invalid()
			}
			i = end
			continue
		}
		break
	}
	if i >= len(s) {
		l.pos = len(s)
		return token{kind: tokEOF, start: i, end: i}
	}
	c := s[i]
	cls := charClass[c]
	switch {
	case cls&clsIdentStart != 0:
		if i+1 < len(s) {
			// A literal prefix only counts at the start of a token: "abe'x'" is
			// the identifier abe followed by 'x'. c|0x20 lowers ASCII letters
			// and maps no other byte onto one.
			switch c | 0x20 {
			case 'e':
				if s[i+1] == '\'' {
					return l.literal(i, i+2, modeEscape)
				}
			case 'b', 'x':
				if s[i+1] == '\'' {
					return l.literal(i, i+2, modeBits)
				}
			case 'n':
				if s[i+1] == '\'' {
					return l.literal(i, i+2, modeStandard)
				}
			case 'u':
				if s[i+1] == '&' && i+2 < len(s) {
					switch s[i+2] {
					case '\'':
						return l.literal(i, i+3, modeUnicode)
					case '"':
						return l.quotedIdent(i+3, tokUnicodeIdent)
					}
				}
			}
		}
		j := i + 1
		for j < len(s) && charClass[s[j]]&clsIdentCont != 0 {
			j++
		}
		return l.emit(tokWord, i, j)
	case cls&clsDigit != 0, c == '.' && i+1 < len(s) && charClass[s[i+1]]&clsDigit != 0:
		return l.emit(tokNumber, i, scanNumber(s, i))
	case c == '\'':
		return l.literal(i, i+1, modeStandard)
	case c == '"':
		return l.quotedIdent(i+1, tokQuotedIdent)
	case c == '$':
		return l.dollar(i)
	case c == 0:
		// The wire protocol ends the query at a NUL; refuse to guess.
		return l.invalid()
	}
	return l.emit(tokPunct, i, i+1)
}

func (l *lexer) emit(kind tokKind, start, end int) token {
	l.pos = end
	return token{kind: kind, start: start, end: end}
}

func (l *lexer) invalid() token {
	l.pos = len(l.src)
	return token{kind: tokInvalid, start: len(l.src), end: len(l.src)}
}

// skipLineComment returns the index of the newline ending the comment whose
// body starts at i, or len(s).
func skipLineComment(s string, i int) int {
	for i < len(s) && s[i] != '\n' && s[i] != '\r' {
		i++
	}
	return i
}

// skipBlockComment skips a block comment whose body starts at i (just after
// "/*"). Block comments nest. It returns the index after the closing "*/" and
// false if the comment is unterminated.
func skipBlockComment(s string, i int) (int, bool) {
	depth := 1
	for i+1 < len(s) {
		switch {
		case s[i] == '*' && s[i+1] == '/':
			i += 2
			depth--
			if depth == 0 {
				return i, true
			}
		case s[i] == '/' && s[i+1] == '*':
			i += 2
			depth++
		default:
			i++
		}
	}
	return len(s), false
}

// scanNumber returns the end of the numeric constant starting at i. Anything
// PostgreSQL 16 calls trailing junk (1abc, 0x1F, 1_000) becomes a separate
// word, as older servers lex it; a keyword is never hidden inside a number.
func scanNumber(s string, i int) int {
	for i < len(s) && charClass[s[i]]&clsDigit != 0 {
		i++
	}
	if i < len(s) && s[i] == '.' && (i+1 >= len(s) || s[i+1] != '.') {
		i++
		for i < len(s) && charClass[s[i]]&clsDigit != 0 {
			i++
		}
	}
	if i < len(s) && s[i]|0x20 == 'e' {
		j := i + 1
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		if j < len(s) && charClass[s[j]]&clsDigit != 0 {
			for j < len(s) && charClass[s[j]]&clsDigit != 0 {
				j++
			}
			i = j
		}
	}
	return i
}

// dollar lexes a token starting with '$' at i: a parameter $n or a
// dollar-quoted string. Anything else is invalid, as in PostgreSQL.
func (l *lexer) dollar(i int) token {
	s := l.src
	j := i + 1
	if j < len(s) && charClass[s[j]]&clsDigit != 0 {
		for j < len(s) && charClass[s[j]]&clsDigit != 0 {
			j++
		}
		return l.emit(tokParam, i, j)
	}
	// Tag: [A-Za-z_\x80-\xff][A-Za-z_0-9\x80-\xff]*, possibly empty.
	if j < len(s) && charClass[s[j]]&clsIdentStart != 0 {
		j++
		for j < len(s) && charClass[s[j]]&(clsIdentStart|clsDigit) != 0 {
			j++
		}
	}
	if j >= len(s) || s[j] != '$' {
		return l.invalid()
	}
	delim := s[i : j+1]
	k := strings.Index(s[j+1:], delim)
	if k < 0 {
		return l.invalid()
	}
	return l.emit(tokString, i, j+1+k+len(delim))
}

// quotedIdent lexes a quoted identifier whose body starts at i.
func (l *lexer) quotedIdent(i int, kind tokKind) token {
	s := l.src
	j := i
	for {
		k := strings.IndexByte(s[j:], '"')
		if k < 0 {
			return l.invalid()
		}
		j += k
		if j+1 < len(s) && s[j+1] == '"' {
			j += 2
			continue
		}
		l.pos = j + 1
		return token{kind: kind, start: i, end: j}
	}
}

// literal lexes a quoted string literal starting at start whose body starts
// at i, including any continuation segments ('a'<newline>'b'), which
// PostgreSQL lexes in the mode of the first segment.
func (l *lexer) literal(start, i int, mode strMode) token {
	escapes := mode == modeEscape || mode == modeStandard && l.escapeStrings
	for {
		var end int
		var ok bool
		if escapes {
			end, ok = scanEscapeBody(l.src, i)
		} else {
			end, ok = scanPlainBody(l.src, i)
			if ok && strings.IndexByte(l.src[i:end], '\\') >= 0 {
				switch mode {
				case modeStandard:
					l.stdBackslash = true
				case modeBits:
					ok = false
				}
			}
		}
		if !ok {
			return l.invalid()
		}
		q := quoteContinue(l.src, end)
		if q < 0 {
			return l.emit(tokString, start, end)
		}
		i = q + 1
	}
}

// scanPlainBody scans a literal body starting at i in which only a doubled
// quote escapes a quote. It returns the index after the closing quote.
func scanPlainBody(s string, i int) (int, bool) {
	for {
		k := strings.IndexByte(s[i:], '\'')
		if k < 0 {
			return len(s), false
		}
		i += k + 1
		if i < len(s) && s[i] == '\'' {
			i++
			continue
		}
		return i, true
	}
}

// scanEscapeBody scans a literal body starting at i in which a backslash
// escapes the next byte and a doubled quote escapes a quote. It returns the
// index after the closing quote.
func scanEscapeBody(s string, i int) (int, bool) {
	for i < len(s) {
		switch s[i] {
		case '\\':
			i += 2
			continue
		case '\'':
			if i+1 < len(s) && s[i+1] == '\'' {
				i += 2
				continue
			}
			return i + 1, true
		}
		i++
	}
	return len(s), false
}

// quoteContinue reports where a string literal ending at i continues: if
// only whitespace and "--" comments, including at least one newline, lie
// between it and the next quote, it returns that quote's index, else -1. This
// is quotecontinue in PostgreSQL's scan.l (\v only after the first newline).
func quoteContinue(s string, i int) int {
	newline := false
	for i < len(s) {
		switch c := s[i]; {
		case c == ' ' || c == '\t' || c == '\f':
			i++
		case c == '\n' || c == '\r':
			newline = true
			i++
		case c == '\v' && newline:
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			i = skipLineComment(s, i+2)
			if i >= len(s) {
				return -1
			}
		case c == '\'' && newline:
			return i
		default:
			return -1
		}
	}
	return -1
}
