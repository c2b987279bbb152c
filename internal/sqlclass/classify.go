package sqlclass

// IsReadOnly reports whether query is provably read-only, so it may run on a
// PostgreSQL hot-standby replica. Anything it cannot prove read-only is false.
//
// It does not allocate and is safe for concurrent use. See the package
// documentation for the rules.
func IsReadOnly(query string) bool {
	readOnly, ambiguous := classify(query, false)
	if readOnly && ambiguous {
		// A plain literal holds a backslash: the query must also be read-only
		// when the server has standard_conforming_strings off.
		readOnly, _ = classify(query, true)
	}
	return readOnly
}

// keyword is a keyword that matters to classification.
type keyword uint8

const (
	kwNone keyword = iota
	kwSelect
	kwValues
	kwTable
	kwWith
	kwShow
	kwExplain
	kwAnalyze // ANALYZE or ANALYSE
	kwVerbose
	kwInsert
	kwUpdate
	kwDelete
	kwMerge
	kwInto
	kwFor
	kwShare
	kwKey
	kwNo
	kwUescape
)

// lookupKeyword returns the keyword spelled by the unquoted word w, in any
// case, or kwNone.
func lookupKeyword(w string) keyword {
	switch len(w) {
	case 2:
		if foldEq(w, "no") {
			return kwNo
		}
	case 3:
		switch {
		case foldEq(w, "for"):
			return kwFor
		case foldEq(w, "key"):
			return kwKey
		}
	case 4:
		switch {
		case foldEq(w, "with"):
			return kwWith
		case foldEq(w, "into"):
			return kwInto
		case foldEq(w, "show"):
			return kwShow
		}
	case 5:
		switch {
		case foldEq(w, "table"):
			return kwTable
		case foldEq(w, "merge"):
			return kwMerge
		case foldEq(w, "share"):
			return kwShare
		}
	case 6:
		switch {
		case foldEq(w, "select"):
			return kwSelect
		case foldEq(w, "values"):
			return kwValues
		case foldEq(w, "insert"):
			return kwInsert
		case foldEq(w, "update"):
			return kwUpdate
		case foldEq(w, "delete"):
			return kwDelete
		}
	case 7:
		switch {
		case foldEq(w, "explain"):
			return kwExplain
		case foldEq(w, "analyze"), foldEq(w, "analyse"):
			return kwAnalyze
		case foldEq(w, "verbose"):
			return kwVerbose
		case foldEq(w, "uescape"):
			return kwUescape
		}
	}
	return kwNone
}

// foldEq reports whether w equals the lower-case ASCII word kw of the same
// length, ignoring ASCII case. c|0x20 lowers a letter and maps no other byte
// onto a lower-case letter.
func foldEq(w, kw string) bool {
	for i := 0; i < len(kw); i++ {
		if w[i]|0x20 != kw[i] {
			return false
		}
	}
	return true
}

// isReadLeader reports whether kw starts a read-only query expression.
func isReadLeader(kw keyword) bool {
	return kw == kwSelect || kw == kwValues || kw == kwTable || kw == kwWith
}

// state is where classify is in the statement's leading keywords.
type state uint8

const (
	stLead           state = iota // before the leading keyword, maybe after "("
	stExplain                     // after EXPLAIN [ANALYZE] [VERBOSE]
	stExplainParen                // after EXPLAIN (: options or a statement?
	stExplainOptions              // inside EXPLAIN's option list
	stBody                        // a read-only leading keyword was seen
)

// classify lexes query once. escapeStrings lexes plain literals as with
// standard_conforming_strings off. ambiguous reports that a plain literal
// contained a backslash, so the other setting may read the query differently.
func classify(query string, escapeStrings bool) (readOnly, ambiguous bool) {
	l := lexer{src: query, escapeStrings: escapeStrings}
	st := stLead
	var (
		explain    bool // the statement is EXPLAIN
		leadParens int  // "(" before the leading keyword
		optDepth   int  // paren depth inside EXPLAIN's option list
		ended      bool // a ";" ended the statement
		prev       token
		prevKw     keyword
	)
	for {
		t := l.next()
		switch t.kind {
		case tokEOF:
			return st == stBody, l.stdBackslash
		case tokInvalid:
			return false, false
		}
		if ended {
			return false, false // a second statement
		}
		kw := kwNone
		var punct byte
		switch t.kind {
		case tokWord:
			kw = lookupKeyword(query[t.start:t.end])
			switch kw {
			case kwInsert, kwUpdate, kwDelete, kwMerge, kwInto:
				return false, false
			case kwShare, kwKey, kwNo:
				if prevKw == kwFor {
					return false, false // row-locking clause
				}
			case kwUescape:
				if prev.kind == tokUnicodeIdent {
					return false, false // U&"..." UESCAPE: see isCall
				}
			}
		case tokPunct:
			punct = query[t.start]
			switch punct {
			case ';':
				if st != stBody {
					return false, false
				}
				ended = true
				continue
			case '(':
				if isCall(query, prev) {
					return false, false
				}
			}
		}

		switch st {
		case stLead:
			switch {
			case punct == '(':
				leadParens++
			case isReadLeader(kw):
				st = stBody
			case kw == kwShow && leadParens == 0 && !explain:
				st = stBody
			case kw == kwExplain && leadParens == 0 && !explain:
				explain = true
				st = stExplain
			default:
				return false, false
			}
		case stExplain:
			switch {
			case kw == kwAnalyze || kw == kwVerbose:
			case punct == '(':
				st = stExplainParen
			case isReadLeader(kw):
				st = stBody
			default:
				return false, false
			}
		case stExplainParen:
			switch {
			case isReadLeader(kw):
				st = stBody // EXPLAIN (SELECT ...)
			case punct == '(':
				st = stLead // EXPLAIN ((SELECT ...))
			case punct == ')':
				return false, false
			default:
				st = stExplainOptions
				optDepth = 1
			}
		case stExplainOptions:
			switch punct {
			case '(':
				optDepth++
			case ')':
				optDepth--
				if optDepth == 0 {
					st = stLead
				}
			}
		}
		prev, prevKw = t, kw
	}
}

// isCall reports whether prev, the token before a "(", names a function with
// side effects. A U&"..." name may spell any function through escapes, so it
// is always taken for one.
func isCall(query string, prev token) bool {
	switch prev.kind {
	case tokWord:
		return isSideEffectFunc(query[prev.start:prev.end], true)
	case tokQuotedIdent:
		return isSideEffectFunc(query[prev.start:prev.end], false)
	case tokUnicodeIdent:
		return true
	}
	return false
}
