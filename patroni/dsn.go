package patroni

// The DSN a Source is given names everything but the server: user,
// password, database, parameters. Each member's DSN is it with the member's
// host and port, in the form it was given in.

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// addrKeys are the connection parameters that say where the server is:
// Patroni says that, so the DSN must not.
var addrKeys = []string{"host", "hostaddr", "port"}

// dsnTemplate is a parsed DSN without host and port. Its String hides the
// password.
type dsnTemplate struct {
	u  *url.URL // the URL form; nil for the keyword/value form
	kv string   // the keyword/value form, as given
}

// parseDSN parses dsn, a URL (postgres://user:password@/dbname?params, no
// host) or a keyword/value string (user=… password=… dbname=…, no host=),
// and refuses one that names a host, a host address or a port. Its errors
// never quote the DSN.
func parseDSN(dsn string) (dsnTemplate, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return parseURLDSN(dsn)
	}
	if _, err := parseKeywordValues(dsn); err != nil {
		return dsnTemplate{}, err
	}
	return dsnTemplate{kv: dsn}, nil
}

// parseURLDSN parses the URL form of a DSN.
func parseURLDSN(dsn string) (dsnTemplate, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		// url.Parse's error quotes the whole URL, password included.
		return dsnTemplate{}, dsnError("is not a valid URL (percent-encode reserved characters in the user, password and database)")
	}
	if u.Host != "" {
		// Not the host itself: with an @ left unencoded in the password,
		// what follows it is the "host".
		return dsnTemplate{}, dsnError("names a host or port: leave them out (postgres://user:password@/dbname), " +
			"Patroni says where each member is (an @ in the password must be written %40)")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return dsnTemplate{}, dsnError("has a query that is not valid")
	}
	for _, k := range addrKeys {
		if _, ok := q[k]; ok {
			return dsnTemplate{}, dsnError(fmt.Sprintf("sets %s: leave it out, Patroni says where each member is", k))
		}
	}
	return dsnTemplate{u: u}, nil
}

// dsnError is a *ConfigError about the DSN.
func dsnError(reason string) error { return &ConfigError{Field: "dsn", Reason: reason} }

// forMember returns the DSN of a member at host and port (0: leave the port
// to the driver's default).
func (t dsnTemplate) forMember(host string, port int) string {
	if t.u != nil {
		u := *t.u
		if port == 0 {
			u.Host = host
			if strings.Contains(host, ":") {
				u.Host = "[" + host + "]"
			}
		} else {
			u.Host = net.JoinHostPort(host, strconv.Itoa(port))
		}
		return u.String()
	}
	var b strings.Builder
	b.WriteString(t.kv)
	if t.kv != "" {
		b.WriteByte(' ')
	}
	b.WriteString("host=")
	b.WriteString(quoteValue(host))
	if port != 0 {
		b.WriteString(" port=")
		b.WriteString(strconv.Itoa(port))
	}
	return b.String()
}

// String returns "dsn(…)", so that a DSN printed by mistake shows no
// password.
func (t dsnTemplate) String() string { return "dsn(…)" }

// GoString is String, for %#v.
func (t dsnTemplate) GoString() string { return t.String() }

// parseKeywordValues parses a keyword/value connection string as libpq does
// (keyword = value, values quoted with ' and escaped with \), and refuses one
// that sets host, hostaddr or port. Its errors name keywords, never values.
func parseKeywordValues(s string) (map[string]string, error) {
	kv := map[string]string{}
	i := 0
	skipSpace := func() {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
	}
	for {
		skipSpace()
		if i == len(s) {
			break
		}
		start := i
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := s[start:i]
		skipSpace()
		if i == len(s) || s[i] != '=' {
			// Not the word itself: it may be part of a password.
			return nil, dsnError(fmt.Sprintf("is neither a postgres:// URL nor keyword=value pairs (no = after the word at byte %d)", start))
		}
		if key == "" {
			return nil, dsnError("has an = with no keyword before it")
		}
		i++ // '='
		skipSpace()
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				i++
				if c == '\\' && i < len(s) {
					val.WriteByte(s[i])
					i++
					continue
				}
				if c == '\'' {
					closed = true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return nil, dsnError(fmt.Sprintf("has an unterminated quoted value for %s", key))
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				c := s[i]
				i++
				if c == '\\' {
					if i == len(s) {
						// Each member's host and port are appended to the DSN:
						// the backslash would escape the space before them.
						return nil, dsnError(fmt.Sprintf("ends in a backslash, in the value of %s: nothing is left for it to escape", key))
					}
					c = s[i]
					i++
				}
				val.WriteByte(c)
			}
		}
		for _, k := range addrKeys {
			if key == k {
				return nil, dsnError(fmt.Sprintf("sets %s: leave it out, Patroni says where each member is", k))
			}
		}
		kv[key] = val.String()
	}
	return kv, nil
}

// isSpace reports whether c is white space to libpq.
func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '\f', '\v':
		return true
	}
	return false
}

// quoteValue quotes a keyword/value connection string value.
func quoteValue(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
