package dbrouter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cenkalti/backoff/v4"
)

// Role is what a node is: as configured, or as its probes report.
type Role uint8

const (
	RoleUnknown Role = iota
	RolePrimary
	RoleReplica
)

// String returns "primary", "replica" or "unknown".
func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleReplica:
		return "replica"
	}
	return "unknown"
}

// State is a node's health as the probes see it.
type State uint8

const (
	// StateUnknown: not probed yet; the configured role is trusted.
	StateUnknown State = iota
	// StateUp: the last probe succeeded.
	StateUp
	// StateDown: the last WithFailureThreshold probes failed.
	StateDown
	// StateFenced: the node says it is a primary but another primary on a
	// higher timeline won, or it is of another cluster (its system
	// identifier is not the one most nodes share); it serves nothing until
	// it reports in recovery (and is of the DB's cluster).
	StateFenced
)

// String returns "up", "down", "fenced" or "unknown".
func (s State) String() string {
	switch s {
	case StateUp:
		return "up"
	case StateDown:
		return "down"
	case StateFenced:
		return "fenced"
	}
	return "unknown"
}

// node is one database server behind the router.
type node struct {
	reads     atomic.Uint64
	writes    atomic.Uint64
	errs      atomic.Uint64
	misroutes atomic.Uint64
	retries   atomic.Uint64
	replayed  atomic.Uint64 // last known WAL position (replayed on a replica); read by sessions
	fenced    atomic.Bool   // h.fenced, for the write path, which takes no lock

	writesSent atomic.Uint64 // writes sent here; writes counts those that ended (see watchPrimary)
	watch      [2]uint64     // writesSent and writes at the last watch; probe loop only

	name          string
	db            *sql.DB
	configured    Role
	probeNow      chan struct{}   // size 1: a coalesced request to probe at once
	ctx           context.Context // ends when the node leaves the DB (or the DB closes)
	stop          context.CancelFunc
	noLoadBalance bool   // serves no reads (a member's NoLoadBalance); protected by DB.mu
	member        bool   // a member of OpenDiscovered's source
	dsn           string // a member's DSN, to tell it from a new member of the same name

	replay   replayPoll // sessions waiting for this replica to catch up
	probes   *sql.DB    // the probes' own pool of one connection, see probePool
	simple   []any      // arguments for a query without a server-side prepared statement, see simpleArgs
	probeMu  sync.Mutex // serializes probes of this node; protects following fields
	probeSeq uint64     // probes run so far: each result carries its number, and record keeps only the newest
	conn     *sql.Conn  // the probes' connection, kept across probes (see probeConnLocked); nil when none
	connAt   time.Time  // when conn was taken

	h nodeHealth // protected by DB.mu
}

// nodeHealth is a node's probed state. It is protected by DB.mu.
type nodeHealth struct {
	probed   bool   // a probe has finished
	tried    bool   // a probe has finished, failed or not: see clusterLocked
	seq      uint64 // the number of the newest probe recorded (see node.probeSeq)
	known    bool   // a probe has succeeded: role, position and timeline were learned
	up       bool
	fails    int  // consecutive failed probes
	role     Role // observed; the configured role until a probe says
	fenced   bool
	eligible bool // serves reads now
	lsn      uint64
	timeline uint32 // a primary's current one; a replica's, as well as it is known (see applyTimeline)
	streamTL uint32 // a replica's: the last timeline its receiver was seen streaming; 0 if never
	receiver string // WAL receiver state, see probeResult
	streamed bool   // seen streaming since the current primary was chosen: may vote for a promotion
	latency  time.Duration
	lastErr  error
	since    time.Time // when state or role last changed
	lagBytes int64
	lagTime  time.Duration
	lagged   bool   // excluded from reads for lag
	staleTL  bool   // excluded from reads for being on an older timeline
	sysid    uint64 // its cluster's system identifier, as last probed; 0 unknown
	foreign  bool   // of another cluster than the DB's (see clusterLocked): serves nothing
	started  int64  // when its postmaster started, as last probed: see rivalLocked
	oks      uint64 // successful probes so far
	split    bool   // fenced as one of two primaries on the newest timeline
	bo       *backoff.ExponentialBackOff
}

func (h *nodeHealth) state() State {
	switch {
	case !h.probed:
		return StateUnknown
	case !h.up:
		return StateDown
	case h.fenced:
		return StateFenced
	}
	return StateUp
}

// members is the DB's nodes at one moment: replaced whole, under DB.mu,
// when members come and go, and read without a lock.
type members struct {
	nodes  []*node // for Open and New, [0] is the node configured as primary
	byName map[string]*node
}

func (m *members) add(n *node) {
	m.nodes = append(m.nodes, n)
	m.byName[n.name] = n
}

// nodeList returns the nodes now. The slice is shared: do not change it.
func (db *DB) nodeList() []*node { return db.mem.Load().nodes }

// newNode returns a node over handle h, opened from dsn ("" for New), with
// a probe pool of its own, whose life ends with the DB's or when it leaves.
func (db *DB) newNode(name string, h *sql.DB, role Role, dsn string) (*node, error) {
	var probes *sql.DB
	if f := db.cfg.probeDSN; f != nil {
		p, err := sql.Open(db.driverName, f(dsn))
		if err != nil {
			return nil, fmt.Errorf("dbrouter: open the probes' connection of %s: %w", name, err)
		}
		probes = limitProbePool(p)
	} else {
		probes = probePool(h)
	}
	n := &node{name: name, db: h, probes: probes, simple: simpleArgs(h), configured: role, probeNow: make(chan struct{}, 1)}
	n.ctx, n.stop = context.WithCancel(db.ctx)
	return n, nil
}

// closeNode closes what n holds: its probe pool, and its handle when the DB
// opened it.
func (db *DB) closeNode(n *node) error {
	n.stop()
	n.dropProbeConn()
	var errs []error
	if n.probes != n.db {
		errs = append(errs, n.probes.Close())
	}
	if db.owned {
		errs = append(errs, n.db.Close())
	}
	return nodeErr(n, "close", errors.Join(errs...))
}

// stillPrimary reports whether a write that n just ran may be reported as
// done: n is the primary, or no primary is known and n is not fenced (a
// probe may merely have missed it) and has not left the DB (a member the
// source no longer reports).
func (db *DB) stillPrimary(n *node) bool {
	p := db.table.Load().primary
	return p == n || p == nil && !n.fenced.Load() && n.ctx.Err() == nil
}

// sent records a statement sent to n, when it is a write.
func (n *node) sent(write bool) {
	if write {
		n.writesSent.Add(1)
	}
}

// count records a statement routed to n.
func (n *node) count(write bool, err error) {
	if write {
		n.writes.Add(1)
	} else {
		n.reads.Add(1)
	}
	if err != nil {
		n.errs.Add(1)
	}
}

// askProbe asks n's probe loop for a probe at once; a request already
// waiting covers this one.
func (n *node) askProbe() {
	select {
	case n.probeNow <- struct{}{}:
	default:
	}
}

// probePool returns a pool of one connection for the probes of the node
// behind h, opened from the same driver.Connector as h but outside h's pool:
// the application's use of h (SetMaxOpenConns, long transactions, a burst of
// queries waiting for a connection) never delays a probe. Its connection is
// replaced every probeConnLifetime, so the pool's lifetime rules (and a DNS
// name that moved) apply to it too. Where the connector cannot be learned,
// the probes go through h itself.
func probePool(h *sql.DB) *sql.DB {
	c := connectorOf(h)
	if c == nil {
		return h
	}
	return limitProbePool(sql.OpenDB(probeConnector{c}))
}

// limitProbePool makes p a pool of one connection for probes, which keep
// it while they use it (see probeConnLocked) and close it when they give it
// back.
func limitProbePool(p *sql.DB) *sql.DB {
	p.SetMaxOpenConns(1)
	p.SetMaxIdleConns(0)
	p.SetConnMaxLifetime(probeConnLifetime)
	return p
}

// probeConnLifetime is how long the probes keep one connection.
const probeConnLifetime = time.Minute

// probeConnLocked returns the probes' connection of n, taken from its probe
// pool when it has none (or has had it for probeConnLifetime). The probes
// keep it from one probe to the next rather than give it back to the pool
// in between: handed out again after more than a second idle, a pgx
// connection first pings the server (its ResetSession), a round trip more
// per probe, which behind a transaction pooler waits in the pooler's queue
// as the probe does, and failed the probe as "connecting". Where the probes
// go through n's own handle (see probePool), the connection is given back
// after each use (see releaseProbeConnLocked). n.probeMu is held.
func (n *node) probeConnLocked(ctx context.Context) (*sql.Conn, error) {
	if n.conn != nil && !n.keptProbeConnLocked() {
		n.dropProbeConnLocked()
	}
	if n.conn == nil {
		c, err := n.probes.Conn(ctx)
		if err != nil {
			return nil, err
		}
		n.conn, n.connAt = c, time.Now()
	}
	return n.conn, nil
}

// keptProbeConnLocked says the probes hold a connection that
// probeConnLocked will hand out again. n.probeMu is held.
func (n *node) keptProbeConnLocked() bool {
	return n.conn != nil && time.Since(n.connAt) < probeConnLifetime
}

// releaseProbeConnLocked ends a use of the probes' connection: after an
// error it is not trusted again, and where the probes use n's own handle
// it goes back to that pool. n.probeMu is held.
func (n *node) releaseProbeConnLocked(err error) {
	if err != nil || n.probes == n.db {
		n.dropProbeConnLocked()
	}
}

// dropProbeConnLocked gives the probes' connection back to its pool (of
// no idle connection, see limitProbePool: it is closed). n.probeMu is held.
func (n *node) dropProbeConnLocked() {
	if n.conn != nil {
		n.conn.Close()
		n.conn = nil
	}
}

// dropProbeConn is dropProbeConnLocked for callers without n.probeMu.
func (n *node) dropProbeConn() {
	n.probeMu.Lock()
	defer n.probeMu.Unlock()
	n.dropProbeConnLocked()
}

// probeQueryRow runs a one-row query of the router's own (not a probe) on
// the probes' connection of n and scans it into dest, within ctx.
func (n *node) probeQueryRow(ctx context.Context, query string, dest ...any) error {
	n.probeMu.Lock()
	defer n.probeMu.Unlock()
	return n.onProbeConnLocked(ctx, func(c *sql.Conn) error {
		return c.QueryRowContext(ctx, query, n.simple...).Scan(dest...)
	})
}

// onProbeConnLocked runs do on the probes' connection of n, and once more on
// a new one when the connection kept since the last probe died as it idled
// (the server's idle_session_timeout, a DBA's pg_terminate_backend, a
// pooler's or a firewall's idle cut; see diedIdle): that says nothing of the
// server now. A failure to connect is a *connectError. n.probeMu is held.
func (n *node) onProbeConnLocked(ctx context.Context, do func(*sql.Conn) error) error {
	for retried := false; ; retried = true {
		kept := n.keptProbeConnLocked()
		conn, err := n.probeConnLocked(ctx)
		if err != nil {
			return &connectError{err}
		}
		err = do(conn)
		n.releaseProbeConnLocked(err)
		if retried || !kept || !diedIdle(err) || ctx.Err() != nil {
			return err
		}
	}
}

// connectorOf returns the driver.Connector h was opened with (sql.OpenDB's
// argument, or what sql.Open made from its DSN), read from the unexported
// field where database/sql keeps it; nil if this Go's database/sql keeps it
// elsewhere.
func connectorOf(h *sql.DB) driver.Connector {
	f := reflect.ValueOf(h).Elem().FieldByName("connector")
	if !f.IsValid() || f.Type() != reflect.TypeFor[driver.Connector]() {
		return nil
	}
	return *(*driver.Connector)(unsafe.Pointer(f.UnsafeAddr()))
}

// probeConnector hides the io.Closer a connector may have: closing the probe
// pool must not close the connector the application's pool still uses.
type probeConnector struct{ c driver.Connector }

func (p probeConnector) Connect(ctx context.Context) (driver.Conn, error) { return p.c.Connect(ctx) }
func (p probeConnector) Driver() driver.Driver                            { return p.c.Driver() }
