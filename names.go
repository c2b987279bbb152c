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
		kv := map[string]string{}
		for _, f := range strings.Fields(dsn) {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[strings.ToLower(k)] = strings.Trim(v, "'")
			}
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
