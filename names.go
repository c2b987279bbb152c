package dbrouter

import (
	"net"
	"net/url"
	"strconv"
	"strings"
)

// nameFromDSN names a node host:port/dbname from its DSN, never keeping a
// password. It understands URLs (postgres://user:pw@host:port/db), libpq
// keyword/value strings (host=… port=… dbname=…) and MySQL-style DSNs
// (user:pw@tcp(host:port)/db). Anything else is named "node<i>".
func nameFromDSN(dsn string, i int) string {
	fallback := "node" + strconv.Itoa(i)
	switch {
	case strings.Contains(dsn, "://"):
		u, err := url.Parse(dsn)
		if err != nil || u.Host == "" {
			return fallback
		}
		return u.Host + "/" + strings.TrimPrefix(u.Path, "/")
	case strings.Contains(dsn, "@tcp("):
		rest := dsn[strings.Index(dsn, "@tcp(")+len("@tcp("):]
		host, db, _ := strings.Cut(rest, ")")
		db, _, _ = strings.Cut(strings.TrimPrefix(db, "/"), "?")
		return host + "/" + db
	case strings.Contains(dsn, "="):
		kv, ok := parseKeywordValue(dsn)
		if !ok {
			return fallback
		}
		host, port := kv["host"], kv["port"]
		if host == "" {
			host = "localhost"
		}
		if port == "" {
			port = "5432"
		}
		return net.JoinHostPort(host, port) + "/" + kv["dbname"]
	}
	return fallback
}

// parseKeywordValue parses a libpq keyword/value connection string: keyword
// = value pairs separated by spaces, where a value may be single-quoted and
// backslash escapes a quote or a backslash. ok is false for anything else.
func parseKeywordValue(s string) (kv map[string]string, ok bool) {
	kv = map[string]string{}
	i := 0
	skipSpace := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
	}
	for {
		skipSpace()
		if i == len(s) {
			return kv, true
		}
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ' ' {
			i++
		}
		key := strings.ToLower(s[start:i])
		skipSpace()
		if key == "" || i == len(s) || s[i] != '=' {
			return nil, false
		}
		i++
		skipSpace()
		var val strings.Builder
		quoted := i < len(s) && s[i] == '\''
		if quoted {
			i++
		}
		for ; ; i++ {
			if i == len(s) {
				if quoted {
					return nil, false // unterminated
				}
				break
			}
			c := s[i]
			if c == '\\' && i+1 < len(s) {
				i++
				val.WriteByte(s[i])
				continue
			}
			if quoted && c == '\'' {
				i++
				break
			}
			if !quoted && c == ' ' {
				break
			}
			val.WriteByte(c)
		}
		kv[key] = val.String()
	}
}

// uniqueNames appends #2, #3, … to names that repeat (two DSNs for the same
// server, differing only in options).
func uniqueNames(names []string) []string {
	seen := map[string]int{}
	out := make([]string, len(names))
	for i, n := range names {
		seen[n]++
		if k := seen[n]; k > 1 {
			n += "#" + strconv.Itoa(k)
		}
		out[i] = n
	}
	return out
}
