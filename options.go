package dbrouter

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults of the options. Each With… function documents the one it overrides.
const (
	DefaultProbeInterval    = time.Second
	DefaultProbeTimeout     = time.Second
	DefaultFailureThreshold = 2
	DefaultPrimaryWait      = 3 * time.Second
	DefaultSessionWindow    = 2 * time.Second
	DefaultReadOnlyTx       = true // WithReadOnlyTxOnReplica
	DefaultReplicaFallback  = true // WithReplicaFallback

	// DefaultServerPreparedStatements is WithServerPreparedStatements'
	// default: statements dbrouter prepares are prepared on the server.
	DefaultServerPreparedStatements = true

	// DefaultFastProbeInterval is how often nodes are probed while no primary
	// is known or the primary has just failed a probe.
	DefaultFastProbeInterval = 100 * time.Millisecond
	// DefaultMaxBackoff caps the exponential backoff between probes of a down
	// node, so a node that returns is seen within this long.
	DefaultMaxBackoff = 2 * time.Second
)

// Option configures a DB. Options are applied in order by Open and New and
// validated together afterwards; an invalid value makes Open/New return an
// error, never panic.
type Option func(*config)

type config struct {
	balancer            Balancer
	readOnlyTxOnReplica bool
	replicaFallback     bool
	dialect             Dialect
	probeInterval       time.Duration
	probeTimeout        time.Duration
	failureThreshold    int
	primaryWait         time.Duration
	maxBackoff          time.Duration
	autoPromote         bool
	autoPromoteAfter    time.Duration
	maxLagBytes         int64
	maxLagTime          time.Duration
	logger              *slog.Logger
	hook                func(Event)
	stmtHook            func(Statement)
	routers             []Router
	names               []string // primary first; nil when not set
	session             SessionMode
	discoveryInterval   time.Duration
	probeDSN            func(dsn string) string
	serverPrepare       bool

	// for tests
	clock        clock
	noBackground bool // no probe goroutines; tests drive probes themselves

	errs []error // *OptionError, collected while applying options
}

func defaultConfig() config {
	return config{
		readOnlyTxOnReplica: DefaultReadOnlyTx,
		replicaFallback:     DefaultReplicaFallback,
		dialect:             PostgreSQL(),
		probeInterval:       DefaultProbeInterval,
		probeTimeout:        DefaultProbeTimeout,
		failureThreshold:    DefaultFailureThreshold,
		primaryWait:         DefaultPrimaryWait,
		maxBackoff:          DefaultMaxBackoff,
		session:             SessionCausal(0),
		discoveryInterval:   DefaultDiscoveryInterval,
		serverPrepare:       DefaultServerPreparedStatements,
		balancer:            RoundRobin(),
		logger:              slog.New(slog.DiscardHandler),
		clock:               realClock{},
	}
}

// newConfig applies opts over the defaults and validates the result for a
// DB of nodes nodes.
func newConfig(opts []Option, nodes int) (config, error) {
	c := defaultConfig()
	for i, o := range opts {
		if o == nil {
			c.fail("Option", nil, fmt.Sprintf("option %d is nil", i))
			continue
		}
		o(&c)
	}
	return c, c.validate(nodes)
}

// fail records that option refused value, and why.
func (c *config) fail(option string, value any, reason string) {
	c.errs = append(c.errs, &OptionError{Option: option, Value: fmt.Sprint(value), Reason: reason})
}

// positive sets *field to d, or records an error naming the option.
func (c *config) positive(option string, d time.Duration, field *time.Duration) {
	if d <= 0 {
		c.fail(option, d, "must be > 0")
		return
	}
	*field = d
}

// validate checks the options against each other and the number of nodes,
// and returns every error found while applying and checking them.
func (c *config) validate(nodes int) error {
	if c.dialect == nil {
		c.fail("WithDialect", nil, "must not be nil")
	} else if !c.dialect.knowsRoles() {
		if c.autoPromote {
			c.fail("WithAutoPromote", c.autoPromoteAfter, "needs the PostgreSQL dialect, not Generic()")
		}
		if c.maxLagBytes > 0 || c.maxLagTime > 0 {
			c.fail("WithMaxLag", fmt.Sprintf("%d, %v", c.maxLagBytes, c.maxLagTime), "needs the PostgreSQL dialect, not Generic()")
		}
	}
	if c.names != nil {
		if len(c.names) != nodes {
			c.fail("WithNames", quoted(c.names), fmt.Sprintf("%d names for %d nodes", len(c.names), nodes))
		}
		for i, name := range c.names {
			if name == "" {
				c.fail("WithNames", quoted(c.names), fmt.Sprintf("name %d is empty", i))
			} else if slices.Index(c.names, name) != i {
				c.fail("WithNames", quoted(c.names), fmt.Sprintf("%q is used twice", name))
			}
		}
	}
	return errors.Join(c.errs...)
}

// WithBalancer sets how reads are spread over eligible replicas: RoundRobin()
// (the default), Random() or LeastInFlight().
func WithBalancer(b Balancer) Option {
	return func(c *config) {
		if b == nil {
			c.fail("WithBalancer", nil, "must not be nil")
			return
		}
		c.balancer = b
	}
}

// WithReadOnlyTxOnReplica sets whether BeginTx with TxOptions.ReadOnly runs
// on a replica (SERIALIZABLE ones always stay on the primary, since standbys
// refuse them). Default true.
func WithReadOnlyTxOnReplica(on bool) Option {
	return func(c *config) { c.readOnlyTxOnReplica = on }
}

// WithReplicaFallback sets whether reads go to the primary when no replica is
// eligible. When off, such reads fail with ErrNoReplica. Default true.
func WithReplicaFallback(on bool) Option {
	return func(c *config) { c.replicaFallback = on }
}

// WithDialect sets how nodes are probed: PostgreSQL() (the default) learns
// role, WAL position and timeline in one round trip; Generic() only pings, so
// roles stay as configured.
func WithDialect(d Dialect) Option {
	return func(c *config) { c.dialect = d }
}

// WithProbeInterval sets how often each node is probed while all is well.
// Default DefaultProbeInterval (1 s). Must be > 0.
func WithProbeInterval(d time.Duration) Option {
	return func(c *config) { c.positive("WithProbeInterval", d, &c.probeInterval) }
}

// WithProbeTimeout bounds each probe. Default DefaultProbeTimeout (1 s). Must
// be > 0.
func WithProbeTimeout(d time.Duration) Option {
	return func(c *config) { c.positive("WithProbeTimeout", d, &c.probeTimeout) }
}

// WithFailureThreshold sets how many consecutive failed probes mark a node
// down. One success brings it back. Default DefaultFailureThreshold (2). Must
// be >= 1.
func WithFailureThreshold(n int) Option {
	return func(c *config) {
		if n < 1 {
			c.fail("WithFailureThreshold", n, "must be >= 1")
			return
		}
		c.failureThreshold = n
	}
}

// WithMaxBackoff caps the exponential backoff between probes of a down node.
// Default DefaultMaxBackoff (2 s). Must be > 0.
func WithMaxBackoff(d time.Duration) Option {
	return func(c *config) { c.positive("WithMaxBackoff", d, &c.maxBackoff) }
}

// WithPrimaryWait sets how long a write waits for a primary while none is
// known (during a failover) before failing with ErrNoPrimary. The context's
// deadline bounds the wait as well. Zero means writes fail at once. Default
// DefaultPrimaryWait (3 s).
func WithPrimaryWait(d time.Duration) Option {
	return func(c *config) {
		if d < 0 {
			c.fail("WithPrimaryWait", d, "must be >= 0")
			return
		}
		c.primaryWait = d
	}
}

// WithAutoPromote lets the router promote a replica itself (pg_promote) once
// the primary has been unreachable for after AND the replicas agree it is
// gone: none reports a streaming WAL receiver, and at least one that was seen
// streaming no longer does. It promotes, among the replicas on the newest
// timeline, the one with the highest replayed LSN. Off by default: leave
// failover to Patroni or your cloud's HA when you have one. With
// OpenDiscovered it never promotes while the source answers: the source
// names the primary, and its HA manager promotes. The wait counts from Open
// when no primary was known yet. PostgreSQL dialect only; the probing role must be able to read pg_stat_wal_receiver
// (pg_monitor). after must be > 0.
func WithAutoPromote(after time.Duration) Option {
	return func(c *config) {
		if after <= 0 {
			c.fail("WithAutoPromote", after, "must be > 0")
			return
		}
		c.autoPromote = true
		c.autoPromoteAfter = after
	}
}

// WithMaxLag excludes from reads the replicas more than bytes of WAL or d
// behind the primary, until they catch up. Zero means no limit on that
// measure. Default: no limit. PostgreSQL dialect only.
func WithMaxLag(bytes int64, d time.Duration) Option {
	return func(c *config) {
		if bytes < 0 || d < 0 {
			c.fail("WithMaxLag", fmt.Sprintf("%d, %v", bytes, d), "must be >= 0")
			return
		}
		c.maxLagBytes, c.maxLagTime = bytes, d
	}
}

// WithLogger logs every state change (node up/down, primary changed, fenced,
// lag exclusion, promotion) through l. Default: silent.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l == nil {
			c.fail("WithLogger", nil, "must not be nil")
			return
		}
		c.logger = l
	}
}

// WithEventHook calls h with every state change, in the order the changes
// happened, from the probe goroutines, never under a lock. h must not block
// for long, and must not call Close. It may be called before Open or New
// returns (their first probe round can already change state, e.g. when the
// configured primary is in fact a replica). Default: none.
func WithEventHook(h func(Event)) Option {
	return func(c *config) {
		if h == nil {
			c.fail("WithEventHook", nil, "must not be nil")
			return
		}
		c.hook = h
	}
}

// WithRouter installs custom routers, run in order for every statement; the
// first answer other than Default wins. Safety holds whatever they answer: a
// write never goes to a replica and a down or fenced node is never chosen.
// Later WithRouter options append to earlier ones.
func WithRouter(routers ...Router) Option {
	return func(c *config) {
		for i, r := range routers {
			if r == nil {
				c.fail("WithRouter", nil, fmt.Sprintf("router %d is nil", i))
				return
			}
		}
		c.routers = append(c.routers, routers...)
	}
}

// WithNames names the nodes for NodeNamed, Status, logs and errors: the
// primary, then the replicas in order. Names must be unique and non-empty,
// one for each node. Default: host:port/dbname from the DSN for Open, and
// "primary", "replica1", "replica2", … for New.
func WithNames(primary string, replicas ...string) Option {
	return func(c *config) {
		c.names = append([]string{primary}, replicas...)
	}
}

// WithSessionMode sets how a DB honours sessions (read-your-writes):
// SessionCausal(maxWait) (the default, with maxWait 0) or SessionTime(window).
func WithSessionMode(m SessionMode) Option {
	return func(c *config) {
		if m.kind == sessionNone {
			c.fail("WithSessionMode", "SessionMode{}", "use SessionCausal or SessionTime")
			return
		}
		m.validate(c)
		c.session = m
	}
}

// withClock injects time, for tests.
func withClock(cl clock) Option { return func(c *config) { c.clock = cl } }

// withoutBackground starts no probe goroutines, for tests that drive probes.
func withoutBackground() Option { return func(c *config) { c.noBackground = true } }

// quoted prints names as WithNames was called: "a", "b".
func quoted(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

// WithProbeDSN opens each node's probe connection (Open, OpenDiscovered)
// with f(dsn) instead of the node's own DSN: behind PgBouncer, another user
// (with a pool of its own, that the application's load cannot fill) or
// another database name mapped to a reserved pool, so that a saturated
// pooler never makes a healthy node look down. Not with New, which has no
// DSNs. Default: the node's DSN, through a connection of its own.
func WithProbeDSN(f func(dsn string) string) Option {
	return func(c *config) {
		if f == nil {
			c.fail("WithProbeDSN", nil, "must not be nil")
			return
		}
		c.probeDSN = f
	}
}

// WithServerPreparedStatements sets whether the statements dbrouter
// prepares (PrepareRouted, DB.Prepare, SQL().Prepare) are prepared on the
// server. Off, each run sends the statement's text, as a query (the
// driver's exec mode then decides how: pgx's simple_protocol, exec or
// cache_describe send no named statement): what a transaction pooler
// (PgBouncer before 1.21) needs, where a statement prepared on one server
// connection is missing on the next. Default
// DefaultServerPreparedStatements (true).
func WithServerPreparedStatements(on bool) Option {
	return func(c *config) { c.serverPrepare = on }
}
