// Package patroni is a dbrouter.Discoverer for PostgreSQL clusters run by
// Patroni: it reads the members, and which of them leads, from the GET
// /cluster endpoint of the members' REST APIs, so that a DB made with
// dbrouter.OpenDiscovered follows members joining, leaving and
// switching over without the application knowing their addresses.
//
// # Pointing it at Patroni
//
// Give New the DSN every member shares, without a host or port, and the
// REST API URL of some or all members (restapi.connect_address):
//
//	src, err := patroni.New("postgres://app:secret@/app?sslmode=require",
//		"http://10.0.0.1:8008", "http://10.0.0.2:8008", "http://10.0.0.3:8008")
//	if err != nil { … }
//	db, err := dbrouter.OpenDiscovered("pgx", src)
//
// Any member answers for the whole cluster, so the URLs need not follow the
// cluster's changes: it is enough that one of them answers. Each member
// reported gets the DSN with its own host and port, as Patroni publishes
// them (postgresql.connect_address); the URL form and the keyword/value
// form (user=app password=secret dbname=app) both work.
//
// # What Discover reports
//
// The members in state "running" or "streaming", named as in Patroni; the
// one whose role is "leader" is Primary; a noloadbalance tag sets
// NoLoadBalance, which keeps reads off the member. Members stopped,
// starting, crashed or in archive recovery are left out until they run
// again. A standby cluster's "standby_leader" is not a primary: it
// replicates from another cluster, so a standby cluster serves reads only.
//
// # When the REST API is down
//
// Discover asks the URLs one after the other, starting with the last one
// that answered (or the one after where a call was cut short by its
// context), and gives each WithRequestTimeout (default 1 s): a frozen
// Patroni accepts connections and never answers, and must not hold
// Discover up. When none gives a usable answer it returns an error that
// errors.Is ErrUnreachable, joined with one *URLError per URL, and the
// caller (OpenDiscovered) asks again later. The REST API being down does
// not stop the databases: a member's PostgreSQL serves on while its Patroni
// is frozen or restarting, and the router's own probes still judge each
// server's health and role.
//
// # TLS and authentication
//
// For https:// URLs, WithTLSConfig gives the CA of Patroni's certificate
// (restapi.cafile) and, when restapi.verify_client asks for one, a client
// certificate. Patroni asks for basic authentication (restapi.authentication)
// only on the endpoints that change the cluster, not on GET /cluster;
// WithBasicAuth is for a proxy in front of it that asks on every request.
// WithHTTPClient takes a client of your own instead (its transport, proxy
// and timeouts). Passwords, the DSN's and basic authentication's, appear in
// no error and no String.
//
// Configuration errors are *ConfigError values (errors.Is
// ErrInvalidConfig), never panics. A Source is safe for concurrent use by
// multiple goroutines.
package patroni
