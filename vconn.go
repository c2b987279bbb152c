package dbrouter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"slices"
	"sync/atomic"

	"github.com/dbrouter/dbrouter/internal/sqlclass"
)

// vconn is a virtual connection of the SQL() face: database/sql uses one
// from one goroutine at a time. It routes each statement when database/sql
// hands it over, and runs it on a connection of the chosen node's pool,
// taken for that statement, or held for a transaction, a pinned session, or
// since a write until the connection goes back to the pool.
type vconn struct {
	db          *DB
	phys        *physConn // held: for the transaction in progress, for good once pinned, or kept since a write
	tx          bool      // a transaction is in progress on phys
	pinned      bool      // phys's server session holds state: every statement runs there
	onReplica   bool      // pinned on a replica (by a read-only transaction): reads run there while it is eligible, writes fail
	kept        bool      // phys ran a write: c's statements run there while it is the primary, until c goes back to the pool
	wrote       bool      // a write ran since the connection left the pool: reads go to the primary
	primaryOnly bool      // taken by DB.Conn: everything goes to the primary
	bad         bool      // its session moved: every statement fails, and the pool discards it

	// Reused for statement after statement, when free: one statement runs
	// at a time, and rarely do rows stay open while another runs.
	spare     physConn
	spareBusy bool
	rows      vrows
	rowsBusy  bool
}

var (
	_ driver.Conn               = (*vconn)(nil)
	_ driver.ConnBeginTx        = (*vconn)(nil)
	_ driver.ConnPrepareContext = (*vconn)(nil)
	_ driver.QueryerContext     = (*vconn)(nil)
	_ driver.ExecerContext      = (*vconn)(nil)
	_ driver.Pinger             = (*vconn)(nil)
	_ driver.SessionResetter    = (*vconn)(nil)
	_ driver.Validator          = (*vconn)(nil)
	_ driver.NamedValueChecker  = (*vconn)(nil)
)

// routeFor routes a statement of c: as any statement under ctx, except that
// a read after a write of the connection, or on DB.Conn's, goes to the
// primary.
func (c *vconn) routeFor(ctx context.Context, query string, write bool) (ctxRoute, decision, error) {
	rc := routeOf(ctx)
	own := !write && c.wrote
	if c.primaryOnly || own {
		rc.usePrimary = true
	}
	d, err := c.db.route(ctx, rc, query, write)
	if own && !c.primaryOnly {
		d.why = ReasonSession
	}
	return rc, d, err
}

// take routes a statement and takes a connection of the node it goes to.
// A node that lost its role while the statement waited for that connection
// (nothing was sent yet) is given up, and the statement routed again. A
// read whose node gave no connection (it is full, or gone) is taken once
// more on another eligible node, as DB.QueryContext runs it again.
func (c *vconn) take(ctx context.Context, query string, write bool) (rc ctxRoute, d decision, p *physConn, err error) {
	for range 3 {
		if rc, d, err = c.routeFor(ctx, query, write); err != nil {
			return rc, d, nil, err
		}
		if p, err = c.acquire(ctx, d.n); err != nil {
			again, why := c.db.rerouteRead(ctx, rc, d, write, err)
			if again == nil {
				return rc, d, nil, nodeErr(d.n, "conn", err)
			}
			d.n, d.why = again, why
			if p, err = c.acquireAgain(ctx, again); err != nil {
				return rc, d, nil, err
			}
		}
		if c.db.serves(p.n, write || rc.usePrimary) {
			return rc, d, p, nil
		}
		p.release(c.db, true)
	}
	if write {
		return rc, d, nil, ErrNoPrimary
	}
	return rc, d, nil, ErrNoReplica
}

// serves reports whether n may still run a statement routed to it: the
// primary a write (or a read demanded of the primary), an eligible node a
// read.
func (db *DB) serves(n *node, primary bool) bool {
	t := db.table.Load()
	if primary {
		return t.primary == n
	}
	return t.readable(n)
}

// held returns the connection a statement must run on, when c holds one:
// its transaction's, or its pinned session's, or the one its last write ran
// on, while that node is still the primary. A pinned session whose node is
// not the primary any more fails with ErrSessionMoved, and c is discarded; a
// kept connection is let go, and the statement routed as any other. A
// session pinned on a replica (state set in a read-only transaction) serves
// reads while that replica is eligible; a write (write is set) fails there
// with an error that is ErrSessionMoved, and c stays for reads.
//
// Keeping the write's connection is what makes a *sql.Conn one server
// session for what a write leaves behind unseen (lastval, currval) and for
// the reads that follow it, which go to the primary anyway.
func (c *vconn) held(ctx context.Context, write bool) (*physConn, Reason, error) {
	if c.bad {
		return nil, 0, ErrSessionMoved
	}
	switch {
	case c.tx:
		return c.phys, ReasonTransaction, nil
	case c.pinned && c.onReplica:
		t := c.db.table.Load()
		if !t.readable(c.phys.n) {
			return nil, 0, c.sessionMoved()
		}
		if write {
			return nil, 0, nodeErr(c.phys.n, "session", replicaSessionError{"no write runs there: write on another connection"})
		}
		if err := c.replicaMayRead(ctx, t); err != nil {
			return nil, 0, err
		}
		return c.phys, ReasonSession, nil
	case c.pinned:
		if c.db.table.Load().primary != c.phys.n {
			return nil, 0, c.sessionMoved()
		}
		return c.phys, ReasonSession, nil
	case c.kept:
		if c.db.table.Load().primary == c.phys.n {
			return c.phys, ReasonSession, nil
		}
		c.letGo(false)
	}
	return nil, 0, nil
}

// keep holds p, which ran a write, for c's next statements.
func (c *vconn) keep(p *physConn) {
	c.phys, c.kept = p, true
}

// letGo gives back the connection c kept since a write (for its pool to
// close, when discard is set).
func (c *vconn) letGo(discard bool) {
	if c.kept {
		c.drop(discard)
	}
}

// sessionMoved discards c, whose pinned server session is on a node that
// can no longer serve it, and returns ErrSessionMoved.
func (c *vconn) sessionMoved() error {
	c.bad = true
	c.drop(true)
	return ErrSessionMoved
}

// drop gives up the connection c holds: back to its pool (for the pool to
// close, when discard is set) at once, or, while rows opened on it are
// still read, once the last of them is closed, so that no one else is lent
// a connection those rows read from.
func (c *vconn) drop(discard bool) {
	p := c.phys
	c.phys, c.kept, c.pinned, c.onReplica = nil, false, false, false
	if p.rows > 0 {
		p.orphan, p.discard = true, discard
		return
	}
	p.release(c.db, discard)
}

// heldFailed lets go of a kept connection whose statement failed with a
// connection error: the next statement is routed again, on a sound one.
func (c *vconn) heldFailed(err error) {
	if isConnError(err) {
		c.letGo(true)
	}
}

// QueryContext runs a query, routed as DB.QueryContext routes it.
func (c *vconn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if c.db.closed.Load() {
		return nil, ErrClosed
	}
	start := c.db.hookStart()
	readOnly, session := sqlclass.Describe(query)
	write := !readOnly
	if p, why, err := c.held(ctx, write); p != nil || err != nil {
		if err != nil {
			return nil, err
		}
		p.n.sent(write)
		rows, err := queryOn(ctx, p.dc, query, args)
		c.done(p.n, write, session, err)
		c.db.observe(ctx, start, p.n, why, query, write, err)
		if err != nil {
			if write && !c.tx && isConnError(err) {
				c.db.noteWrite(routeOf(ctx).session) // sent, and maybe committed: its outcome is unknown
			}
			n := p.n
			c.heldFailed(err)
			return nil, nodeErr(n, "query", err)
		}
		if write && !c.tx {
			if lost := c.db.lostPrimary(p.n, rows); lost != nil {
				c.db.noteWrite(routeOf(ctx).session) // it may have committed
				return nil, lost
			}
		}
		var over *atomic.Bool
		if s := routeOf(ctx).session; write && !c.tx && s != nil {
			// A pinned session's write, for ctx's session (a
			// transaction's counts for the session it began under).
			over = new(atomic.Bool) // the write commits once the rows are closed
			c.db.noteOpen(s, over)
		}
		return c.newRows(rows, nil, over), nil
	}
	rc, d, p, err := c.take(ctx, query, write)
	if err != nil {
		c.db.observe(ctx, start, nil, d.why, query, write, err)
		return nil, err
	}
	p.n.sent(write)
	rows, err := queryOn(ctx, p.dc, query, args)
	c.db.observe(ctx, start, d.n, d.why, query, write, err)
	if err == nil {
		if write {
			if lost := c.lostPrimary(rc, p, rows); lost != nil {
				return nil, lost
			}
		}
		return c.opened(rc, p, rows, write, session), nil
	}
	c.done(d.n, write, false, err)
	p.release(c.db, isConnError(err))
	again, why := c.db.rerouteRead(ctx, rc, d, write, err)
	if again == nil {
		if write && isConnError(err) {
			c.db.noteWrite(rc.session) // sent, and maybe committed: its outcome is unknown
		}
		return nil, nodeErr(d.n, "query", err)
	}
	start = c.db.hookStart()
	first := err
	if p, err = c.acquireToRunAgain(ctx, again, why == ReasonMisroute); p == nil {
		if err == nil {
			err = nodeErr(d.n, "query", first) // nothing ran again
		}
		return nil, err
	}
	p.n.sent(write)
	rows, err = queryOn(ctx, p.dc, query, args)
	c.db.observe(ctx, start, again, why, query, write, err)
	if err != nil {
		c.done(again, write, false, err)
		p.release(c.db, isConnError(err))
		return nil, nodeErr(again, "query", err)
	}
	if why == ReasonMisroute {
		if lost := c.lostPrimary(rc, p, rows); lost != nil {
			return nil, lost
		}
	}
	return c.opened(rc, p, rows, write || why == ReasonMisroute, false), nil
}

// lostPrimary closes rows of a writing query that ran on p, gives p back
// and returns ErrPrimaryLost when p's node is no longer the primary as they
// come back (see DB.lostPrimary); nil when it still is.
func (c *vconn) lostPrimary(rc ctxRoute, p *physConn, rows driver.Rows) error {
	lost := c.db.lostPrimary(p.n, rows)
	if lost != nil {
		c.done(p.n, true, false, nil) // it may have written: reads of c go to the primary
		p.release(c.db, false)
		c.db.noteWrite(rc.session)
	}
	return lost
}

// opened accounts for rows a statement opened on p, taken for it: p goes
// back to its pool when they are closed, or stays c's when the statement
// left session state.
func (c *vconn) opened(rc ctxRoute, p *physConn, rows driver.Rows, write, session bool) driver.Rows {
	c.done(p.n, write, session, nil)
	if session {
		c.phys, c.pinned = p, true
		return c.newRows(rows, nil, nil)
	}
	if !write {
		return c.newRows(rows, p, nil)
	}
	c.keep(p)
	var over *atomic.Bool
	if rc.session != nil {
		over = new(atomic.Bool) // the write commits once the rows are closed
		c.db.noteOpen(rc.session, over)
	}
	return c.newRows(rows, nil, over)
}

// newRows wraps rows for database/sql: release, when set, goes back to its
// pool once they are closed, and over is set then.
func (c *vconn) newRows(rows driver.Rows, release *physConn, over *atomic.Bool) *vrows {
	var r *vrows
	if c.rowsBusy {
		r = new(vrows)
	} else {
		c.rowsBusy = true
		r = &c.rows
	}
	*r = vrows{Rows: rows, c: c, release: release, over: over}
	if release == nil {
		r.on = c.phys // the connection c holds: see drop
		r.on.rows++
	}
	return r
}

// done counts a statement that ran on n and what it did to c: a write makes
// c read from the primary, session state pins it, and an error is a passive
// health signal.
func (c *vconn) done(n *node, write, session bool, err error) {
	n.count(write, err)
	if err != nil {
		c.db.signal(n, err)
		return
	}
	if write {
		c.wrote = true
	}
	if session && c.phys != nil && !c.pinned {
		c.pinned, c.kept = true, false // for good: never given back as a kept connection is
		c.onReplica = c.db.table.Load().primary != n
	}
}

// ExecContext runs a statement that returns no rows, routed as
// DB.ExecContext routes it: on the primary, never run again by the router.
func (c *vconn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if c.db.closed.Load() {
		return nil, ErrClosed
	}
	start := c.db.hookStart()
	_, session := sqlclass.Describe(query)
	if p, why, err := c.held(ctx, true); p != nil || err != nil {
		if err != nil {
			return nil, err
		}
		p.n.sent(true)
		res, err := execOn(ctx, p.dc, query, args)
		c.done(p.n, true, session, err)
		c.db.observe(ctx, start, p.n, why, query, true, err)
		if !c.tx && (err == nil || isConnError(err)) {
			// A pinned session's write, for ctx's session (a
			// transaction's counts for the session it began under); when
			// its connection failed, its outcome is unknown.
			c.db.noteWrite(routeOf(ctx).session)
		}
		if err != nil {
			n := p.n
			c.heldFailed(err)
			return nil, nodeErr(n, "exec", err)
		}
		if !c.tx && !c.db.stillPrimary(p.n) {
			return nil, nodeErr(p.n, "exec", ErrPrimaryLost) // it stopped being the primary while the write ran
		}
		return res, nil
	}
	rc, d, p, err := c.take(ctx, query, true)
	if err != nil {
		c.db.observe(ctx, start, nil, d.why, query, true, err)
		return nil, err
	}
	p.n.sent(true)
	res, err := execOn(ctx, p.dc, query, args)
	c.done(d.n, true, false, err)
	c.db.observe(ctx, start, d.n, d.why, query, true, err)
	if err != nil {
		p.release(c.db, isConnError(err))
		if isConnError(err) {
			c.db.noteWrite(rc.session) // sent, and maybe committed: its outcome is unknown
		}
		return nil, nodeErr(d.n, "exec", err)
	}
	if session {
		c.phys, c.pinned = p, true
	} else {
		c.keep(p)
	}
	c.db.noteWrite(rc.session)
	if !c.db.stillPrimary(d.n) {
		return nil, nodeErr(d.n, "exec", ErrPrimaryLost)
	}
	return res, nil
}

// BeginTx begins a transaction, routed as DB.BeginTx routes it, and holds
// its connection until it ends.
func (c *vconn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if c.db.closed.Load() {
		return nil, ErrClosed
	}
	start := c.db.hookStart()
	write := !opts.ReadOnly || !c.db.cfg.readOnlyTxOnReplica || sql.IsolationLevel(opts.Isolation) == sql.LevelSerializable
	p, _, err := c.held(ctx, write)
	if err != nil {
		return nil, err
	}
	rc := routeOf(ctx)
	if p != nil { // a pinned session, or a connection kept since a write: on its server connection
		p.n.sent(write)
		tx, err := beginOn(ctx, p.dc, opts)
		c.db.observe(ctx, start, p.n, ReasonTransaction, "", write, err)
		if err != nil {
			c.done(p.n, write, false, err)
			n := p.n
			c.heldFailed(err) // a kept connection that failed: the next statement takes a sound one
			return nil, nodeErr(n, "begin", err)
		}
		return c.begun(rc, tx, write), nil
	}
	rc, d, p, err := c.take(ctx, "", write)
	if err != nil {
		c.db.observe(ctx, start, nil, ReasonTransaction, "", write, err)
		return nil, err
	}
	p.n.sent(write)
	tx, err := beginOn(ctx, p.dc, opts)
	c.db.observe(ctx, start, d.n, ReasonTransaction, "", write, err)
	if err != nil {
		c.done(d.n, write, false, err)
		p.release(c.db, isConnError(err))
		again, why := c.db.rerouteRead(ctx, rc, d, write, err)
		if again == nil || !isConnError(err) {
			return nil, nodeErr(d.n, "begin", err)
		}
		start = c.db.hookStart()
		first := err
		if p, err = c.acquireToRunAgain(ctx, again, false); p == nil {
			if err == nil {
				err = nodeErr(d.n, "begin", first) // nothing ran again
			}
			return nil, err
		}
		p.n.sent(write)
		tx, err = beginOn(ctx, p.dc, opts)
		c.db.observe(ctx, start, again, why, "", write, err)
		if err != nil {
			c.done(again, write, false, err)
			p.release(c.db, isConnError(err))
			return nil, nodeErr(again, "begin", err)
		}
	}
	c.phys = p
	return c.begun(rc, tx, write), nil
}

// begun accounts for a transaction begun on c.phys.
func (c *vconn) begun(rc ctxRoute, tx driver.Tx, write bool) driver.Tx {
	c.done(c.phys.n, write, false, nil)
	c.tx = true
	t := &vtx{c: c, tx: tx, write: write}
	if write {
		t.over = new(atomic.Bool)
		c.db.noteOpen(rc.session, t.over)
	}
	return t
}

// vtx is a transaction of the SQL() face.
type vtx struct {
	c     *vconn
	tx    driver.Tx
	write bool
	over  *atomic.Bool // set when it ends, for sessions
}

// Commit commits; a read-write transaction whose node stopped being the
// primary meanwhile reports ErrPrimaryLost, even when its node says it
// committed.
func (t *vtx) Commit() error {
	n := t.c.phys.n
	err := t.end("commit", t.tx.Commit())
	if err == nil && t.write && !t.c.db.stillPrimary(n) {
		return nodeErr(n, "commit", ErrPrimaryLost)
	}
	return err
}
func (t *vtx) Rollback() error { return t.end("rollback", t.tx.Rollback()) }

// end gives the transaction's connection back, unless c's session is pinned
// to it; op, "commit" or "rollback", is what ended it, for its error.
func (t *vtx) end(op string, err error) error {
	c := t.c
	c.tx = false
	if t.over != nil {
		t.over.Store(true)
	}
	if err != nil {
		c.db.signal(c.phys.n, err)
		err = nodeErr(c.phys.n, op, err)
	} else if t.write {
		c.wrote = true // its reads, from now on, must see what it wrote
	}
	switch {
	case c.pinned:
	case err == nil && (t.write || c.kept):
		c.kept = true // its writes' connection, or the one kept before
	default:
		c.drop(isConnError(err))
	}
	return err
}

// PrepareContext returns a statement that c runs as it runs any other:
// routed each time it is executed, on whatever node then serves it (the
// driver may prepare it there, as pgx does with its statement cache). It
// is prepared once on the node that would serve it now, so that errors in
// the SQL show here, as with *sql.DB.
func (c *vconn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if c.db.closed.Load() {
		return nil, ErrClosed
	}
	readOnly, _ := sqlclass.Describe(query)
	p, _, err := c.held(ctx, !readOnly)
	if err != nil || !c.db.cfg.serverPrepare {
		return &vstmt{c: c, query: query}, err // WithServerPreparedStatements(false): nothing to check it with
	}
	if p == nil {
		if _, _, p, err = c.take(ctx, query, !readOnly); err != nil {
			return nil, err
		}
		defer func() { p.release(c.db, isConnError(err)) }()
	}
	if err = checkOn(ctx, p.dc, query); err != nil {
		c.db.signal(p.n, err)
		return nil, nodeErr(p.n, "prepare", err)
	}
	return &vstmt{c: c, query: query}, nil
}

// Prepare is PrepareContext with context.Background.
func (c *vconn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

// Begin is BeginTx with context.Background and default options.
func (c *vconn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

// Ping checks the primary: a connection of its pool answers a ping.
func (c *vconn) Ping(ctx context.Context) error {
	p, _, err := c.held(ctx, false)
	if err != nil {
		return err
	}
	if p == nil {
		if _, _, p, err = c.take(ctx, "", true); err != nil {
			return err
		}
		defer func() { p.release(c.db, isConnError(err)) }()
	}
	if err = pingOn(ctx, p.dc); err != nil {
		c.db.signal(p.n, err)
		return nodeErr(p.n, "ping", err)
	}
	return nil
}

// ResetSession readies c for its next user, from the pool: it has written
// nothing yet.
func (c *vconn) ResetSession(ctx context.Context) error {
	if c.bad {
		return driver.ErrBadConn
	}
	c.wrote, c.primaryOnly = false, false
	return nil
}

// replicaMayRead returns nil when a read under ctx may run on the replica
// c's session is pinned on, as t stands: not when it must come from the
// primary (UsePrimary, DB.Conn), nor when ctx's session has writes that
// replica has not replayed.
func (c *vconn) replicaMayRead(ctx context.Context, t *table) error {
	n := c.phys.n
	rc := routeOf(ctx)
	if rc.usePrimary || c.primaryOnly {
		return nodeErr(n, "session", replicaSessionError{"the read must come from the primary: read it on another connection"})
	}
	if rc.session == nil {
		return nil
	}
	replicas, usePrimary, err := c.db.sessionReplicas(ctx, rc.session, t)
	if err != nil {
		return err
	}
	if usePrimary || !slices.Contains(replicas, n) {
		return nodeErr(n, "session", replicaSessionError{"it has not replayed the session's writes: read them on another connection"})
	}
	return nil
}

// replicaSessionError is the error of a statement that cannot run on the
// replica a connection's server session holds state on (set in a read-only
// transaction), and why: it is ErrSessionMoved, for errors.Is.
type replicaSessionError struct{ why string }

func (e replicaSessionError) Error() string {
	return "dbrouter: the connection's server session holds state set on a replica (in a read-only transaction): " + e.why
}

func (replicaSessionError) Is(target error) bool { return target == ErrSessionMoved }

// IsValid keeps c in the pool unless its session moved or is pinned: a
// pinned server session holds its user's state, which no other caller may
// inherit. database/sql asks as c goes back to its pool, which is when the
// connection kept since a write goes back to its node's pool.
func (c *vconn) IsValid() bool {
	c.letGo(false)
	return !c.bad && !c.pinned && !c.tx
}

// CheckNamedValue takes every argument as it is: the node's driver converts
// it when the statement runs (see convertArgs), as it would have on its own.
func (c *vconn) CheckNamedValue(*driver.NamedValue) error { return nil }

// Close gives back the connection c holds; a pinned session's or an
// unfinished transaction's is closed, not pooled.
func (c *vconn) Close() error {
	c.letGo(false)
	if c.phys != nil {
		c.drop(true)
	}
	return nil
}

// vstmt is a prepared statement of the SQL() face: its query, run by its
// connection as any other (see PrepareContext).
type vstmt struct {
	c     *vconn
	query string
}

var (
	_ driver.StmtExecContext  = (*vstmt)(nil)
	_ driver.StmtQueryContext = (*vstmt)(nil)
)

func (s *vstmt) Close() error  { return nil }
func (s *vstmt) NumInput() int { return -1 }

func (s *vstmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.c.ExecContext(ctx, s.query, args)
}

func (s *vstmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.c.QueryContext(ctx, s.query, args)
}

// Exec and Query are for drivers from before contexts; database/sql calls
// the Context methods.
func (s *vstmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), named(args))
}

func (s *vstmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), named(args))
}

func named(args []driver.Value) []driver.NamedValue {
	nv := make([]driver.NamedValue, len(args))
	for i, a := range args {
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	return nv
}
