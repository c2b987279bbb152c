package dbrouter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dbrouter/dbrouter/internal/sqlclass"
)

// DB is a replication-aware handle that stands where a *sql.DB stood: one
// primary and zero or more replicas behind the *sql.DB method set. Reads go
// to replicas, writes and transactions to the primary, and background probes
// follow the real primary through a failover. See the package documentation
// for the rules.
//
// A DB is safe for concurrent use by multiple goroutines. Close it when done:
// that stops the probes and closes the handles Open opened.
type DB struct {
	table        atomic.Pointer[table] // the routing table; replaced whole, never mutated
	lastProbeAll atomic.Int64          // unix nanoseconds of the last probeAllNow
	closed       atomic.Bool

	cfg    config
	nodes  []*node // [0] is the node configured as primary
	byName map[string]*node
	owned  bool // Open opened the handles, so Close closes them

	ctx    context.Context // ends when Close is called
	cancel context.CancelFunc
	wg     sync.WaitGroup // the background goroutines

	closeOnce sync.Once
	closeErr  error

	evMu        sync.Mutex // protects evDelivered; evCond's lock
	evCond      *sync.Cond // signalled when a batch of events was emitted
	evDelivered uint64     // the last batch of events emitted

	mu       sync.Mutex // protects following fields, the nodes' health, and publishing tables
	hs       healthState
	evIssued uint64 // the last batch of events numbered
}

// node is one database server behind the router.
type node struct {
	name       string
	index      int // position in DB.nodes
	db         *sql.DB
	configured Role

	reads     atomic.Uint64
	writes    atomic.Uint64
	errs      atomic.Uint64
	misroutes atomic.Uint64
	retries   atomic.Uint64

	probeNow chan struct{} // size 1: a coalesced request to probe at once
	replayed atomic.Uint64 // last probed WAL position (replayed on a replica); read by sessions

	probeMu     sync.Mutex // serializes probes of this node; protects following fields
	probeConn   *sql.Conn  // kept for probes; nil until the next probe takes one
	probeConnAt time.Time  // when probeConn was taken

	h nodeHealth // protected by DB.mu
}

// table is an immutable routing snapshot. Readers load it with one atomic
// load and never lock; the health code builds a new one on every change.
type table struct {
	primary  *node   // nil when no primary is known
	replicas []*node // replicas eligible for reads, in configuration order
	changed  chan struct{}
}

func (t *table) readable(n *node) bool {
	return n == t.primary || slices.Contains(t.replicas, n)
}

// Open opens a handle per DSN with sql.Open(driverName, dsn) and returns a DB
// over them; Close closes them. Names default to host:port/dbname read from
// each DSN. On any error every handle opened so far is closed again.
func Open(driverName, primaryDSN string, replicaDSNs []string, opts ...Option) (*DB, error) {
	if driverName == "" {
		return nil, errors.New("dbrouter: Open: empty driver name")
	}
	if !slices.Contains(sql.Drivers(), driverName) {
		return nil, fmt.Errorf("dbrouter: Open: unknown driver %q (forgotten import?); registered: %v", driverName, sql.Drivers())
	}
	if primaryDSN == "" {
		return nil, errors.New("dbrouter: Open: empty primary DSN")
	}
	dsns := append([]string{primaryDSN}, replicaDSNs...)
	names := make([]string, len(dsns))
	for i, dsn := range dsns {
		if dsn == "" {
			return nil, fmt.Errorf("dbrouter: Open: replica DSN %d is empty", i-1)
		}
		names[i] = nameFromDSN(dsn, i)
		for j := range i {
			if dsns[j] == dsn {
				return nil, fmt.Errorf("dbrouter: Open: %s is given twice (DSNs %d and %d)", names[i], j, i)
			}
		}
	}
	handles := make([]*sql.DB, 0, len(dsns))
	closeAll := func(err error) error {
		for _, h := range handles {
			err = errors.Join(err, h.Close())
		}
		return err
	}
	for i, dsn := range dsns {
		h, err := sql.Open(driverName, dsn)
		if err != nil {
			return nil, closeAll(fmt.Errorf("dbrouter: Open %s: %w", names[i], err))
		}
		handles = append(handles, h)
	}
	db, err := newDB(handles[0], handles[1:], uniqueNames(names), true, opts)
	if err != nil {
		return nil, closeAll(err)
	}
	return db, nil
}

// New returns a DB over handles the caller opened. They stay the caller's:
// Close stops the router but leaves them open. Names default to "primary",
// "replica1", "replica2", ….
func New(primary *sql.DB, replicas []*sql.DB, opts ...Option) (*DB, error) {
	if primary == nil {
		return nil, errors.New("dbrouter: New: nil primary")
	}
	names := []string{"primary"}
	for i, r := range replicas {
		if r == nil {
			return nil, fmt.Errorf("dbrouter: New: replica %d is nil", i)
		}
		if r == primary {
			return nil, fmt.Errorf("dbrouter: New: replica %d is the primary handle", i)
		}
		for j := range i {
			if replicas[j] == r {
				return nil, fmt.Errorf("dbrouter: New: replicas %d and %d are the same handle", j, i)
			}
		}
		names = append(names, fmt.Sprintf("replica%d", i+1))
	}
	return newDB(primary, slices.Clone(replicas), names, false, opts)
}

func newDB(primary *sql.DB, replicas []*sql.DB, names []string, owned bool, opts []Option) (*DB, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			cfg.fail("nil Option")
			continue
		}
		o(&cfg)
	}
	if cfg.names != nil {
		if len(cfg.names) != 1+len(replicas) {
			cfg.fail("WithNames: %d names for %d nodes", len(cfg.names), 1+len(replicas))
		} else {
			names = cfg.names
		}
	}
	for i, name := range names {
		if name == "" {
			cfg.fail("WithNames: name %d is empty", i)
		}
		if slices.Index(names, name) != i {
			cfg.fail("WithNames: %q is used twice", name)
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	db := &DB{cfg: cfg, owned: owned, byName: make(map[string]*node)}
	db.evCond = sync.NewCond(&db.evMu)
	for i, h := range append([]*sql.DB{primary}, replicas...) {
		n := &node{name: names[i], index: i, db: h, configured: RoleReplica, probeNow: make(chan struct{}, 1)}
		if i == 0 {
			n.configured = RolePrimary
		}
		db.nodes = append(db.nodes, n)
		db.byName[n.name] = n
	}
	db.ctx, db.cancel = context.WithCancel(context.Background())
	db.startHealth()
	return db, nil
}

// Primary returns the handle of the current primary: the escape hatch for
// what the router does not cover (COPY, LISTEN, driver-specific calls).
// Statements run on it directly bypass routing, sessions and counters. While
// no primary is known it returns the last known one if it is not fenced,
// else the first node in configuration order that is not fenced (which may
// be a replica); PrimaryContext waits for a primary instead.
func (db *DB) Primary() *sql.DB {
	if p := db.table.Load().primary; p != nil {
		return p.db
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if p := db.hs.lastPrimary; p != nil && !p.h.fenced {
		return p.db
	}
	for _, n := range db.nodes {
		if !n.h.fenced {
			return n.db
		}
	}
	return db.nodes[0].db
}

// PrimaryContext returns the handle of the current primary, waiting for one
// as writes do (WithPrimaryWait, bounded by ctx); ErrNoPrimary when none
// became known, ErrClosed after Close.
func (db *DB) PrimaryContext(ctx context.Context) (*sql.DB, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	p, err := db.primaryNode(ctx)
	if err != nil {
		return nil, err
	}
	return p.db, nil
}

// Replica returns the handle of a replica the balancer picks (it counts as a
// pick: with RoundRobin, the next read goes to the one after it), or the
// primary's (as Primary) when no replica is eligible.
func (db *DB) Replica() *sql.DB {
	t := db.table.Load()
	if len(t.replicas) == 0 {
		return db.Primary()
	}
	return db.cfg.balancer.pick(t.replicas).db
}

// route chooses the node for a statement. write is true for anything that
// may write. It never returns a replica for a write, nor a node that is not
// eligible. pinned says the node was demanded (UsePrimary, or a custom
// router's Primary or NodeNamed): a failed read is then not run elsewhere.
func (db *DB) route(ctx context.Context, query string, write bool) (n *node, pinned bool, err error) {
	if usesPrimary(ctx) {
		n, err = db.primaryNode(ctx)
		return n, true, err
	}
	t := db.table.Load()
	for _, r := range db.cfg.routers {
		tg := r(ctx, query, write)
		switch tg.kind {
		case targetDefault:
			continue
		case targetPrimary:
			n, err = db.primaryNode(ctx)
			return n, true, err
		case targetReplica:
			if !write {
				n, err = db.replicaNode(ctx, t, nil)
				return n, false, err
			}
		case targetNode:
			n := db.byName[tg.name]
			if n != nil && n == t.primary {
				return n, true, nil
			}
			if n == nil || write || !t.readable(n) {
				break // the built-in rules decide
			}
			// A session must not lose its writes to the router's choice;
			// when it overrules it, the same answer picks another reader.
			replicas, usePrimary := db.readers(ctx, t)
			if !usePrimary && slices.Contains(replicas, n) {
				return n, true, nil
			}
			n, err = db.pickReader(ctx, replicas, usePrimary, nil)
			return n, false, err
		}
		break
	}
	if write {
		n, err = db.primaryNode(ctx)
	} else {
		n, err = db.replicaNode(ctx, t, nil)
	}
	return n, false, err
}

// primaryNode returns the current primary, waiting for one (WithPrimaryWait,
// bounded by ctx) while none is known.
func (db *DB) primaryNode(ctx context.Context) (*node, error) {
	t := db.table.Load()
	if t.primary != nil {
		return t.primary, nil
	}
	return db.waitPrimary(ctx, t)
}

func (db *DB) waitPrimary(ctx context.Context, t *table) (*node, error) {
	if db.cfg.primaryWait <= 0 {
		return nil, ErrNoPrimary
	}
	db.probeAllNow()
	timer := time.NewTimer(db.cfg.primaryWait)
	defer timer.Stop()
	for {
		select {
		case <-t.changed:
			t = db.table.Load()
			if t.primary != nil {
				return t.primary, nil
			}
		case <-timer.C:
			return nil, fmt.Errorf("%w (waited %v)", ErrNoPrimary, db.cfg.primaryWait)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrNoPrimary, ctx.Err())
		case <-db.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// replicaNode picks an eligible replica for a read, other than avoid, or
// falls back to the primary.
func (db *DB) replicaNode(ctx context.Context, t *table, avoid *node) (*node, error) {
	replicas, usePrimary := db.readers(ctx, t)
	return db.pickReader(ctx, replicas, usePrimary, avoid)
}

// readers returns the replicas of t that may serve a read under ctx: every
// eligible one, or those the session in ctx allows; usePrimary when only the
// primary may.
func (db *DB) readers(ctx context.Context, t *table) (replicas []*node, usePrimary bool) {
	if s := sessionFrom(ctx); s != nil {
		return db.sessionReplicas(ctx, s, t)
	}
	return t.replicas, false
}

// pickReader picks among replicas (as readers returned them) for a read,
// other than avoid, or falls back to the primary.
func (db *DB) pickReader(ctx context.Context, replicas []*node, usePrimary bool, avoid *node) (*node, error) {
	if usePrimary {
		return db.primaryNode(ctx)
	}
	if avoid != nil {
		// A retry: any other replica, without moving the balancer on (a
		// round-robin counter advanced twice would send every next read to
		// the failing replica first).
		others := slices.DeleteFunc(slices.Clone(replicas), func(n *node) bool { return n == avoid })
		if len(others) > 0 {
			return others[rand.IntN(len(others))], nil
		}
		replicas = nil
	}
	if len(replicas) > 0 {
		return db.cfg.balancer.pick(replicas), nil
	}
	if !db.cfg.replicaFallback {
		return nil, ErrNoReplica
	}
	return db.primaryNode(ctx)
}

// call is one statement to run on some node: through the node's *sql.DB, or
// through a Stmt's statement prepared on that node.
type call struct {
	stmt  *Stmt
	query string
	args  []any
	write bool
}

func (c *call) rows(ctx context.Context, n *node) (*sql.Rows, error) {
	if c.stmt == nil {
		return n.db.QueryContext(ctx, c.query, c.args...)
	}
	st, err := c.stmt.on(ctx, n)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, c.args...)
}

func (c *call) row(ctx context.Context, n *node) *sql.Row {
	if c.stmt == nil {
		return n.db.QueryRowContext(ctx, c.query, c.args...)
	}
	st, err := c.stmt.on(ctx, n)
	if err != nil {
		return errRow(err)
	}
	return st.QueryRowContext(ctx, c.args...)
}

func (c *call) exec(ctx context.Context, n *node) (sql.Result, error) {
	if c.stmt == nil {
		return n.db.ExecContext(ctx, c.query, c.args...)
	}
	st, err := c.stmt.on(ctx, n)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, c.args...)
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

// rerouteRead decides where a failed routed read runs again: on the primary
// when a replica refused it as a write (SQLSTATE 25006: the classifier could
// not know, e.g. a volatile function; misroute is then true), on another
// eligible node when the connection failed before any row came back (not
// when the node was pinned: a read demanded of the primary must not quietly
// come from a replica). It returns nil when the read must not run again.
// Writes never run again.
func (db *DB) rerouteRead(ctx context.Context, n *node, pinned, write bool, err error) (again *node, misroute bool) {
	db.signal(n, err)
	if write || ctx.Err() != nil {
		return nil, false
	}
	t := db.table.Load()
	switch {
	case isReadOnlyError(err) && n != t.primary:
		p, perr := db.primaryNode(ctx)
		if perr != nil || p == n {
			return nil, false
		}
		n.misroutes.Add(1)
		return p, true
	case isConnError(err) && !pinned:
		other, rerr := db.replicaNode(ctx, t, n)
		if rerr != nil || other == n {
			return nil, false
		}
		n.retries.Add(1)
		return other, false
	}
	return nil, false
}

// QueryContext runs a query that returns rows. A read goes to a replica
// chosen by the balancer; a query that may write (see the package
// documentation) goes to the primary. A read refused by a replica as a write
// runs again on the primary; a read whose connection failed before any row
// came back runs again once on another eligible node.
func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return db.queryCall(ctx, call{query: query, args: args, write: !sqlclass.Classify(query)})
}

// Query runs a query that returns rows. Query uses context.Background
// internally; to specify the context, use QueryContext.
func (db *DB) Query(query string, args ...any) (*sql.Rows, error) {
	return db.QueryContext(context.Background(), query, args...)
}

func (db *DB) queryCall(ctx context.Context, c call) (*sql.Rows, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	n, pinned, err := db.route(ctx, c.query, c.write)
	if err != nil {
		return nil, err
	}
	rows, err := c.rows(ctx, n)
	n.count(c.write, err)
	if err == nil {
		if c.write {
			db.noteQueryWrite(ctx, rows)
		}
		return rows, nil
	}
	again, misroute := db.rerouteRead(ctx, n, pinned, c.write, err)
	if again == nil {
		return nil, nodeErr(n, "query", err)
	}
	rows, err = c.rows(ctx, again)
	again.count(c.write, err)
	if err != nil {
		db.signal(again, err)
		return nil, nodeErr(again, "query", err)
	}
	if misroute {
		db.noteQueryWrite(ctx, rows) // it wrote after all
	}
	return rows, nil
}

// QueryRowContext runs a query expected to return at most one row, routed as
// QueryContext. Errors are deferred to the Row's Scan (or Err), as with
// *sql.DB; they are the driver's errors as they are, not *NodeError
// (database/sql offers no way to wrap them).
func (db *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return db.queryRowCall(ctx, call{query: query, args: args, write: !sqlclass.Classify(query)})
}

// QueryRow runs a query expected to return at most one row. QueryRow uses
// context.Background internally; to specify the context, use QueryRowContext.
func (db *DB) QueryRow(query string, args ...any) *sql.Row {
	return db.QueryRowContext(context.Background(), query, args...)
}

func (db *DB) queryRowCall(ctx context.Context, c call) *sql.Row {
	if db.closed.Load() {
		return errRow(ErrClosed)
	}
	n, pinned, err := db.route(ctx, c.query, c.write)
	if err != nil {
		return errRow(err)
	}
	row := c.row(ctx, n)
	err = row.Err()
	n.count(c.write, err)
	if err == nil {
		if c.write {
			db.noteWrite(ctx)
		}
		return row
	}
	again, misroute := db.rerouteRead(ctx, n, pinned, c.write, err)
	if again == nil {
		return row
	}
	row = c.row(ctx, again)
	err = row.Err()
	again.count(c.write, err)
	db.signal(again, err)
	if err == nil && misroute {
		db.noteWrite(ctx) // it wrote after all
	}
	return row
}

// ExecContext runs a statement that returns no rows on the primary. It is
// never run again by the router.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return db.execCall(ctx, call{query: query, args: args, write: true})
}

// Exec runs a statement that returns no rows on the primary. Exec uses
// context.Background internally; to specify the context, use ExecContext.
func (db *DB) Exec(query string, args ...any) (sql.Result, error) {
	return db.ExecContext(context.Background(), query, args...)
}

func (db *DB) execCall(ctx context.Context, c call) (sql.Result, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	n, _, err := db.route(ctx, c.query, true)
	if err != nil {
		return nil, err
	}
	res, err := c.exec(ctx, n)
	n.count(true, err)
	if err != nil {
		db.signal(n, err)
		return nil, nodeErr(n, "exec", err)
	}
	db.noteWrite(ctx)
	return res, nil
}

// BeginTx starts a transaction on the primary, pinned there for its whole
// life. With opts.ReadOnly it starts on a replica instead (unless
// WithReadOnlyTxOnReplica(false), or the isolation level is SERIALIZABLE,
// which standbys refuse). A read-only transaction whose BEGIN fails on a
// broken connection is begun once more on another eligible node.
func (db *DB) BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	write := opts == nil || !opts.ReadOnly || !db.cfg.readOnlyTxOnReplica || opts.Isolation == sql.LevelSerializable
	n, pinned, err := db.route(ctx, "", write)
	if err != nil {
		return nil, err
	}
	tx, err := n.db.BeginTx(ctx, opts)
	n.count(write, err)
	if err == nil {
		if write {
			db.noteTx(ctx, tx)
		}
		return tx, nil
	}
	again, _ := db.rerouteRead(ctx, n, pinned, write, err)
	if again == nil || !isConnError(err) {
		return nil, nodeErr(n, "begin", err)
	}
	tx, err = again.db.BeginTx(ctx, opts)
	again.count(write, err)
	if err != nil {
		db.signal(again, err)
		return nil, nodeErr(again, "begin", err)
	}
	return tx, nil
}

// Begin starts a transaction on the primary. Begin uses context.Background
// internally; to specify the context, use BeginTx.
func (db *DB) Begin() (*sql.Tx, error) {
	return db.BeginTx(context.Background(), nil)
}

// PrepareContext creates a prepared statement on the node that serves that
// SQL now (a replica for a read, the primary for a write), with exactly the
// *sql.DB signature. The *sql.Stmt stays on that node: it does not follow a
// failover. For long-lived statements use PrepareRouted.
func (db *DB) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	n, _, err := db.route(ctx, query, !sqlclass.Classify(query))
	if err != nil {
		return nil, err
	}
	st, err := n.db.PrepareContext(ctx, query)
	if err != nil {
		db.signal(n, err)
		return nil, nodeErr(n, "prepare", err)
	}
	return st, nil
}

// Prepare creates a prepared statement as PrepareContext. Prepare uses
// context.Background internally; to specify the context, use PrepareContext.
func (db *DB) Prepare(query string) (*sql.Stmt, error) {
	return db.PrepareContext(context.Background(), query)
}

// Conn returns a single connection to the primary, for session state that
// must stay on one connection. Statements on it bypass routing.
func (db *DB) Conn(ctx context.Context) (*sql.Conn, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	n, _, err := db.route(ctx, "", true)
	if err != nil {
		return nil, err
	}
	c, err := n.db.Conn(ctx)
	n.count(true, err)
	if err != nil {
		db.signal(n, err)
		return nil, nodeErr(n, "conn", err)
	}
	return c, nil
}

// PingContext verifies that the primary (waiting for one as writes do) and
// every replica now eligible for reads answer. The error joins one *NodeError
// per node that did not.
func (db *DB) PingContext(ctx context.Context) error {
	if db.closed.Load() {
		return ErrClosed
	}
	p, err := db.primaryNode(ctx)
	if err != nil {
		return err
	}
	targets := append([]*node{p}, db.table.Load().replicas...)
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, n := range targets {
		wg.Go(func() { errs[i] = nodeErr(n, "ping", n.db.PingContext(ctx)) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Ping verifies the nodes as PingContext. Ping uses context.Background
// internally; to specify the context, use PingContext.
func (db *DB) Ping() error {
	return db.PingContext(context.Background())
}

// Close stops the background probes and waits for them, gives back the
// connections they kept, then closes the handles that Open opened (handles
// given to New stay open). It is idempotent. Afterwards every method that
// runs statements (on the DB or a Stmt) returns ErrClosed; Status, Stats,
// Primary and Replica still answer. Close your Stmts yourself. Do not call
// Close from an event hook: it waits for the goroutine running the hook.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.closed.Store(true)
		db.cancel()
		db.wg.Wait()
		db.releaseProbeConns()
		if db.owned {
			var errs []error
			for _, n := range db.nodes {
				errs = append(errs, nodeErr(n, "close", n.db.Close()))
			}
			db.closeErr = errors.Join(errs...)
		}
	})
	return db.closeErr
}

// Stats returns the database/sql statistics summed over every node.
func (db *DB) Stats() sql.DBStats {
	var s sql.DBStats
	for _, n := range db.nodes {
		ns := n.db.Stats()
		s.MaxOpenConnections += ns.MaxOpenConnections
		s.OpenConnections += ns.OpenConnections
		s.InUse += ns.InUse
		s.Idle += ns.Idle
		s.WaitCount += ns.WaitCount
		s.WaitDuration += ns.WaitDuration
		s.MaxIdleClosed += ns.MaxIdleClosed
		s.MaxIdleTimeClosed += ns.MaxIdleTimeClosed
		s.MaxLifetimeClosed += ns.MaxLifetimeClosed
	}
	return s
}

// Driver returns the primary's underlying driver.
func (db *DB) Driver() driver.Driver { return db.nodes[0].db.Driver() }

// SetMaxOpenConns sets the maximum number of open connections of every node.
// Each node keeps one of them for its probes; with a limit of 1 the probes
// give it back and go through the pool, leaving the application its one.
func (db *DB) SetMaxOpenConns(n int) {
	for _, nd := range db.nodes {
		nd.db.SetMaxOpenConns(n)
	}
	if n == 1 {
		db.releaseProbeConns()
	}
}

// SetMaxIdleConns sets the maximum number of idle connections of every node.
func (db *DB) SetMaxIdleConns(n int) {
	for _, nd := range db.nodes {
		nd.db.SetMaxIdleConns(n)
	}
}

// SetConnMaxLifetime sets the maximum lifetime of connections of every node.
func (db *DB) SetConnMaxLifetime(d time.Duration) {
	for _, nd := range db.nodes {
		nd.db.SetConnMaxLifetime(d)
	}
}

// SetConnMaxIdleTime sets the maximum idle time of connections of every node.
func (db *DB) SetConnMaxIdleTime(d time.Duration) {
	for _, nd := range db.nodes {
		nd.db.SetConnMaxIdleTime(d)
	}
}

// errRow returns a *sql.Row whose Scan and Err return err. database/sql
// offers no way to make one, so it is asked for a row from a throwaway
// handle whose connector fails with err; only error paths pay for it.
func errRow(err error) *sql.Row {
	h := sql.OpenDB(failingConnector{err})
	defer h.Close()
	return h.QueryRowContext(context.Background(), "")
}

type failingConnector struct{ err error }

func (c failingConnector) Connect(context.Context) (driver.Conn, error) { return nil, c.err }
func (c failingConnector) Driver() driver.Driver                        { return failingDriver(c) }

type failingDriver struct{ err error }

func (d failingDriver) Open(string) (driver.Conn, error) { return nil, d.err }
