package dbrouter

import (
	"net"
	"strconv"
	"strings"
)

// nameFromDSN names a node host:port/dbname from its DSN, never keeping a
// password. It understands URLs (postgres://user:pw@host:port/db), libpq
// keyword/value strings (host=… port=… dbname=…) and MySQL-style DSNs
// (user:pw@tcp(host:port)/db). The name is built from the host, port and
// database alone, each checked to look like one; anything else is named
// "node<i>", with none of the DSN's text.
func nameFromDSN(dsn string, i int) string {
	fallback := "node" + strconv.Itoa(i)
	switch {
	case strings.Contains(dsn, "://"):
		if name, ok := nameFromURL(dsn[strings.Index(dsn, "://")+3:]); ok {
			return name
		}
	case strings.Contains(dsn, "@tcp("):
		rest := dsn[strings.LastIndex(dsn, "@tcp(")+len("@tcp("):]
		host, db, _ := strings.Cut(rest, ")")
		db, _, _ = strings.Cut(strings.TrimPrefix(db, "/"), "?")
		if validHosts(host) && validDB(db) {
			return host + "/" + db
		}
	case strings.Contains(dsn, "="):
		kv, ok := parseKeywordValue(dsn)
		if !ok {
			return fallback
		}
		host, port, db := kv["host"], kv["port"], kv["dbname"]
		if host == "" {
			host = "localhost"
		}
		if port == "" {
			port = "5432"
		}
		if name := net.JoinHostPort(host, port); validHosts(name) && validDB(db) {
			return name + "/" + db
		}
	}
	return fallback
}

// nameFromURL names a node from what follows "://" in a URL DSN:
// [userinfo@]hosts[/dbname][?params]. As libpq reads it, the userinfo ends
// at an '@' before the first '/' or '?' (a password may hold '#', '@', …);
// the hosts and the database name must then look like ones, or there is no
// name: a password holding a '/' ends up where the database name would be.
func nameFromURL(rest string) (string, bool) {
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	hosts := rest[:end]
	if at := strings.LastIndex(hosts, "@"); at >= 0 {
		hosts = hosts[at+1:]
	}
	db := ""
	if end < len(rest) && rest[end] == '/' {
		db = rest[end+1:]
		if k := strings.IndexByte(db, '?'); k >= 0 {
			db = db[:k]
		}
	}
	if !validHosts(hosts) || !validDB(db) {
		return "", false
	}
	return hosts + "/" + db, true
}

// validHosts reports whether s is host[:port] or a comma-separated list of
// them: names, IPv4 or bracketed IPv6 addresses, numeric ports.
func validHosts(s string) bool {
	if s == "" {
		return false
	}
	for _, hp := range strings.Split(s, ",") {
		host, port := hp, ""
		if strings.HasPrefix(hp, "[") {
			end := strings.Index(hp, "]")
			if end < 0 {
				return false
			}
			host, port = hp[1:end], hp[end+1:]
			if port != "" && !strings.HasPrefix(port, ":") {
				return false
			}
			port = strings.TrimPrefix(port, ":")
			if net.ParseIP(host) == nil {
				return false
			}
		} else if k := strings.LastIndex(hp, ":"); k >= 0 {
			host, port = hp[:k], hp[k+1:]
		}
		if host == "" || strings.Trim(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:") != "" {
			return false
		}
		if port != "" {
			if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
				return false
			}
		}
	}
	return true
}

// validDB reports whether s may be a database name in a node's name: no
// character that would let other parts of a DSN through.
func validDB(s string) bool { return !strings.ContainsAny(s, `@:/?#=\'"`) }

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
