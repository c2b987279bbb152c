package sqlclass

// LeavesSessionState reports whether query may leave state in the server
// session that outlives it: SET (not SET LOCAL, SET TRANSACTION or SET
// CONSTRAINTS), RESET, DISCARD, LISTEN, UNLISTEN, PREPARE, DEALLOCATE, LOAD,
// BEGIN and START TRANSACTION sent as statements (the transaction lives in
// the session until its COMMIT or ROLLBACK, sent the same way), DECLARE … WITH HOLD, CREATE TEMP … (and SELECT … INTO TEMP), SET SESSION
// AUTHORIZATION and SET ROLE, and calls of set_config, the session-level
// advisory lock functions and dblink_connect. Statements that do so must run
// on one server session from then on: the router pins the connection that
// ran one to its node. Anything it cannot lex counts as leaving state.
//
// It does not allocate and is safe for concurrent use. A query with several
// statements leaves state if any of them does.
func LeavesSessionState(query string) bool {
	l := lexer{src: query}
	first := true // at a statement's first token
	var lead, prev string
	for {
		t := l.next()
		switch t.kind {
		case tokEOF:
			return false
		case tokInvalid:
			return true
		case tokPunct:
			switch query[t.start] {
			case ';':
				first, lead, prev = true, "", ""
				continue
			case '(':
				if prev != "" && isSessionFunc(prev) {
					return true
				}
				prev = ""
				continue
			}
			prev = ""
			continue
		case tokWord:
		default:
			prev = ""
			continue
		}
		w := query[t.start:t.end]
		if first {
			first, lead = false, lower(w)
			switch lead {
			case "reset", "discard", "listen", "unlisten", "prepare", "deallocate", "load", "begin", "start":
				return true
			}
			prev = w
			continue
		}
		switch lead {
		case "set":
			if prev != "" && isWord(prev, "set") {
				switch lower(w) {
				case "local", "transaction", "constraints":
					lead = "" // transaction-scoped
				default:
					return true // SET x, SET SESSION …, SET ROLE, SET TIME ZONE
				}
			}
		case "create":
			switch lower(w) {
			case "temp", "temporary":
				return true
			}
		case "declare":
			if isWord(prev, "with") && isWord(w, "hold") {
				return true
			}
		default:
			if isWord(prev, "into") && (isWord(w, "temp") || isWord(w, "temporary")) {
				return true // SELECT … INTO TEMP t
			}
		}
		prev = w
	}
}

// sessionFuncs are the functions whose effect outlives the statement, in the
// server session.
var sessionFuncs = [...]string{
	"dblink_connect", "dblink_connect_u", "pg_advisory_lock", "pg_advisory_lock_shared",
	"pg_try_advisory_lock", "pg_try_advisory_lock_shared", "set_config",
}

func isSessionFunc(name string) bool {
	for _, f := range sessionFuncs {
		if isWord(name, f) {
			return true
		}
	}
	return false
}

// isWord reports whether w is the lower-case word kw, ignoring ASCII case.
func isWord(w, kw string) bool { return compareName(w, kw, true) == 0 }

// lower returns w in lower case when it is one of the few leading keywords
// LeavesSessionState looks at, else "": it never allocates.
func lower(w string) string {
	for _, kw := range [...]string{"set", "reset", "discard", "listen", "unlisten", "prepare", "deallocate",
		"load", "begin", "start", "create", "declare", "local", "transaction", "constraints", "temp", "temporary"} {
		if isWord(w, kw) {
			return kw
		}
	}
	return ""
}
