package dbrouter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
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
	// Locks. DB.mu protects the health state (hs and every node's h) and the
	// publishing of routing tables; node.probeMu serializes the probes of
	// one node; Session.mu protects one session; a Stmt's per-node channels
	// serialize preparing it there. None is taken while another is held,
	// except the event queue's lock (emitter.mu, a leaf), taken under DB.mu
	// so that events queue in the order the state changed. No lock is held
	// while a statement runs, a probe waits on the network (probeMu aside),
	// or a hook or logger is called. The hot path takes no lock at all: it
	// reads the routing table with one atomic load.
	table        atomic.Pointer[table] // the routing table; replaced whole, never mutated
	lastProbeAll atomic.Int64          // unix nanoseconds of the last probeAllNow
	primaryLSN   atomic.Uint64         // the highest WAL position a primary was seen at
	closed       atomic.Bool
	grantNoted   atomic.Bool // EventMissingGrant was emitted
	clashNoted   atomic.Bool // EventStatementClash was emitted

	cfg        config
	mem        atomic.Pointer[members] // the nodes; replaced whole when members come and go
	owned      bool                    // Open or OpenDiscovered opened the handles, so Close closes them
	drv        driver.Driver           // the first node's, for Driver
	disc       *discovery              // OpenDiscovered's source; nil for Open and New
	driverName string                  // Open's and OpenDiscovered's; "" for New
	events     emitter
	face       *sql.DB // SQL(): a *sql.DB over virtual connections (face.go)

	ctx    context.Context // ends when Close is called
	cancel context.CancelFunc
	wg     sync.WaitGroup // the probe loops

	closeOnce sync.Once
	closeErr  error

	mu    sync.Mutex // protects following fields, the nodes' health, and publishing tables
	hs    healthState
	pools poolSettings
}

// Open opens a handle per DSN with sql.Open(driverName, dsn) and returns a DB
// over them; Close closes them. Names default to host:port/dbname read from
// each DSN. On any error every handle opened so far is closed again.
func Open(driverName, primaryDSN string, replicaDSNs []string, opts ...Option) (*DB, error) {
	if driverName == "" {
		return nil, badArg("Open: empty driver name")
	}
	if !slices.Contains(sql.Drivers(), driverName) {
		return nil, fmt.Errorf("%w: Open: unknown driver %q (forgotten import?); registered: %v",
			ErrInvalidArgument, driverName, sql.Drivers())
	}
	if primaryDSN == "" {
		return nil, badArg("Open: empty primary DSN")
	}
	dsns := append([]string{primaryDSN}, replicaDSNs...)
	names := make([]string, len(dsns))
	for i, dsn := range dsns {
		if dsn == "" {
			return nil, badArg("Open: replica DSN %d is empty", i-1)
		}
		names[i] = nameFromDSN(dsn, i)
		if j := slices.Index(dsns[:i], dsn); j >= 0 {
			return nil, badArg("Open: %s is given twice (DSNs %d and %d)", names[i], j, i)
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
	db, err := newDB(driverName, handles, dsns, uniqueNames(names), true, opts)
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
		return nil, badArg("New: nil primary")
	}
	handles := append([]*sql.DB{primary}, replicas...)
	names := []string{"primary"}
	for i, r := range replicas {
		switch j := slices.Index(handles, r); {
		case r == nil:
			return nil, badArg("New: replica %d is nil", i)
		case j == 0:
			return nil, badArg("New: replica %d is the primary handle", i)
		case j < i+1:
			return nil, badArg("New: replicas %d and %d are the same handle", j-1, i)
		}
		names = append(names, fmt.Sprintf("replica%d", i+1))
	}
	return newDB("", handles, nil, names, false, opts)
}

// newDB returns a DB over handles (the primary first; opened from dsns
// with driverName, for Open) named names, after applying and validating
// opts, and starts its background work.
func newDB(driverName string, handles []*sql.DB, dsns, names []string, owned bool, opts []Option) (*DB, error) {
	cfg, err := newConfig(opts, len(handles))
	if err != nil {
		return nil, err
	}
	if cfg.probeDSN != nil && dsns == nil {
		return nil, &OptionError{Option: "WithProbeDSN", Value: "func", Reason: "needs the DSNs of Open or OpenDiscovered, not New's handles"}
	}
	if cfg.names != nil {
		names = cfg.names
	}
	db := &DB{cfg: cfg, owned: owned, drv: handles[0].Driver(), driverName: driverName}
	db.ctx, db.cancel = context.WithCancel(context.Background())
	m := &members{byName: make(map[string]*node, len(handles))}
	for i, h := range handles {
		role := RoleReplica
		if i == 0 {
			role = RolePrimary
		}
		dsn := ""
		if dsns != nil {
			dsn = dsns[i]
		}
		n, err := db.newNode(names[i], h, role, dsn)
		if err != nil {
			for _, n := range m.nodes {
				db.closeNode(n)
			}
			db.cancel()
			return nil, err
		}
		m.add(n)
	}
	db.mem.Store(m)
	db.face = sql.OpenDB(&connector{db: db})
	db.events.start(db.emit)
	db.startHealth()
	return db, nil
}

// Primary returns the handle of the current primary: the escape hatch for
// what the router does not cover (COPY, LISTEN, driver-specific calls).
// Statements run on it directly bypass routing, sessions and counters. While
// no primary is known it returns the last known one if it is not fenced
// and still a member, else the first node in configuration order that is not fenced (which may
// be a replica); PrimaryContext waits for a primary instead.
func (db *DB) Primary() *sql.DB {
	if p := db.table.Load().primary; p != nil {
		return p.db
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if p := db.hs.lastPrimary; p != nil && !p.h.fenced && p.ctx.Err() == nil { // not a member that left: its handle is closed once idle
		return p.db
	}
	nodes := db.nodeList()
	for _, n := range nodes {
		if !n.h.fenced {
			return n.db
		}
	}
	if len(nodes) == 0 {
		return db.face // no member left: writes wait for one there
	}
	return nodes[0].db
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

// Close stops the background probes and waits for them, delivers the events
// still queued, closes the probes' own connections, then closes the handles
// that Open or OpenDiscovered opened (members still draining included;
// handles given to New stay open). It is
// idempotent. Afterwards the methods that run statements (on the DB or a
// Stmt) return ErrClosed; Status, Stats, Primary and Replica still answer.
// Close your Stmts yourself. Do not call Close from an event hook: it waits
// for the goroutine running the hook.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.closed.Store(true)
		db.cancel()
		db.wg.Wait()
		db.events.stop()                 // after the probe loops: they queue no more
		errs := []error{db.face.Close()} // before the nodes' handles: its connections go back to them
		db.mu.Lock()
		draining := db.hs.draining // members that left and were not closed yet: their drains ended with ctx
		db.hs.draining = nil
		db.mu.Unlock()
		for _, n := range slices.Concat(db.nodeList(), draining) {
			n.dropProbeConn()
			if n.probes != n.db {
				errs = append(errs, nodeErr(n, "close", n.probes.Close()))
			}
			if db.owned {
				errs = append(errs, nodeErr(n, "close", n.db.Close()))
			}
		}
		db.closeErr = errors.Join(errs...)
	})
	return db.closeErr
}

// Stats returns the database/sql statistics summed over every node.
func (db *DB) Stats() sql.DBStats {
	var s sql.DBStats
	for _, n := range db.nodeList() {
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
func (db *DB) Driver() driver.Driver { return db.drv }

// SetMaxOpenConns sets the maximum number of open connections of every
// node's pool. The probes are not counted: each node has one more
// connection, the probes' own, outside the pool.
func (db *DB) SetMaxOpenConns(n int) {
	db.setPools(func(p *poolSettings) { p.maxOpen = &n })
}

// SetMaxIdleConns sets the maximum number of idle connections of every node.
func (db *DB) SetMaxIdleConns(n int) {
	db.setPools(func(p *poolSettings) { p.maxIdle = &n })
}

// SetConnMaxLifetime sets the maximum lifetime of connections of every node.
func (db *DB) SetConnMaxLifetime(d time.Duration) {
	db.setPools(func(p *poolSettings) { p.lifetime = &d })
}

// SetConnMaxIdleTime sets the maximum idle time of connections of every node.
func (db *DB) SetConnMaxIdleTime(d time.Duration) {
	db.setPools(func(p *poolSettings) { p.idleTime = &d })
}

// poolSettings are the pool settings made on the DB, applied to every
// node's pool, members that join later included. nil: not set.
type poolSettings struct {
	maxOpen, maxIdle   *int
	lifetime, idleTime *time.Duration
}

func (p *poolSettings) apply(h *sql.DB) {
	if p.maxOpen != nil {
		h.SetMaxOpenConns(*p.maxOpen)
	}
	if p.maxIdle != nil {
		h.SetMaxIdleConns(*p.maxIdle)
	}
	if p.lifetime != nil {
		h.SetConnMaxLifetime(*p.lifetime)
	}
	if p.idleTime != nil {
		h.SetConnMaxIdleTime(*p.idleTime)
	}
}

// setPools records a pool setting and applies it to every node's pool.
func (db *DB) setPools(set func(*poolSettings)) {
	db.mu.Lock()
	set(&db.pools)
	one := poolSettings{}
	set(&one)
	nodes := db.nodeList()
	db.mu.Unlock()
	for _, n := range nodes {
		one.apply(n.db)
	}
}
