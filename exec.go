package dbrouter

import (
	"context"
	"database/sql"
)

// call is one statement to run on some node: through the node's *sql.DB, or
// through a Stmt's statement prepared on that node. Its arguments travel
// beside it, not in it: the query reaches custom routers (so a call
// escapes), and arguments kept out of it stay on the caller's stack.
type call struct {
	stmt  *Stmt
	query string
	write bool
}

func (c *call) rows(ctx context.Context, n *node, args []any) (*sql.Rows, error) {
	if c.stmt == nil {
		return n.db.QueryContext(ctx, c.query, args...)
	}
	st, err := c.stmt.prepared(ctx, n)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (c *call) exec(ctx context.Context, n *node, args []any) (sql.Result, error) {
	if c.stmt == nil {
		return n.db.ExecContext(ctx, c.query, args...)
	}
	st, err := c.stmt.prepared(ctx, n)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// rerouteRead decides where a failed routed read runs again: on the primary
// when a replica refused it as something only a primary can run (a write,
// SQLSTATE 25006, the classifier could not know of, e.g. in a volatile
// function; 55000 or 0A000, see refusedByStandby: ReasonMisroute), on
// another eligible node when the connection failed before any row came back,
// the node refused the login (a role or database not replicated there yet),
// or a replica cancelled it for a conflict with recovery (ReasonRetry; not
// when the node was pinned: a read demanded of the primary must not quietly
// come from a replica). It returns nil when the read must not run again.
// Writes never run again.
func (db *DB) rerouteRead(ctx context.Context, rc ctxRoute, d decision, write bool, err error) (*node, Reason) {
	n := d.n
	db.signal(n, err)
	if write || ctx.Err() != nil {
		return nil, 0
	}
	t := db.table.Load()
	switch {
	case refusedByStandby(err) && n != t.primary:
		p, perr := db.primaryNode(ctx)
		if perr != nil || p == n {
			return nil, 0
		}
		n.misroutes.Add(1)
		return p, ReasonMisroute
	case (isConnError(err) || loginRefused(err) || recoveryConflict(err) && n != t.primary) && !d.pinned:
		other, _, rerr := db.replicaNode(ctx, rc, t, n)
		if rerr != nil || other == n {
			return nil, 0
		}
		n.retries.Add(1)
		return other, ReasonRetry
	}
	return nil, 0
}

func (db *DB) queryCall(ctx context.Context, c call, args []any) (*sql.Rows, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	start := db.hookStart()
	rc := routeOf(ctx)
	d, err := db.route(ctx, rc, c.query, c.write)
	if err != nil {
		db.observe(ctx, start, nil, d.why, c.query, c.write, err)
		return nil, err
	}
	if c.write {
		d.n.writesSent.Add(1)
	}
	rows, err := c.rows(ctx, d.n, args)
	d.n.count(c.write, err)
	db.observe(ctx, start, d.n, d.why, c.query, c.write, err)
	if err == nil {
		if c.write {
			if lost := db.lostPrimary(d.n, rows); lost != nil {
				db.noteWrite(rc.session) // it may have committed
				return nil, lost
			}
			db.noteQueryWrite(ctx, rc.session, rows)
		}
		return rows, nil
	}
	again, why := db.rerouteRead(ctx, rc, d, c.write, err)
	if again == nil {
		if c.write && isConnError(err) {
			db.noteWrite(rc.session) // sent, and maybe committed: its outcome is unknown
		}
		return nil, nodeErr(d.n, "query", err)
	}
	start = db.hookStart()
	rows, err = c.rows(ctx, again, args)
	again.count(c.write, err)
	db.observe(ctx, start, again, why, c.query, c.write, err)
	if err != nil {
		db.signal(again, err)
		return nil, nodeErr(again, "query", err)
	}
	if why == ReasonMisroute {
		if lost := db.lostPrimary(again, rows); lost != nil {
			db.noteWrite(rc.session)
			return nil, lost
		}
		db.noteQueryWrite(ctx, rc.session, rows) // it wrote after all
	}
	return rows, nil
}

// lostPrimary closes rows of a writing query and returns ErrPrimaryLost
// (from n) when n is no longer the primary as they come back, as execCall
// does for an Exec: their first row comes back once the statement ran, and
// a server that hung while it was the primary sends it when it resumes,
// after another node took its place. It returns nil when n still is.
func (db *DB) lostPrimary(n *node, rows interface{ Close() error }) error {
	if db.stillPrimary(n) {
		return nil
	}
	rows.Close()
	return nodeErr(n, "query", ErrPrimaryLost)
}

func (db *DB) execCall(ctx context.Context, c call, args []any) (sql.Result, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	start := db.hookStart()
	rc := routeOf(ctx)
	d, err := db.route(ctx, rc, c.query, true)
	if err != nil {
		db.observe(ctx, start, nil, d.why, c.query, true, err)
		return nil, err
	}
	d.n.writesSent.Add(1)
	res, err := c.exec(ctx, d.n, args)
	d.n.count(true, err)
	db.observe(ctx, start, d.n, d.why, c.query, true, err)
	if err != nil {
		db.signal(d.n, err)
		if isConnError(err) {
			// The connection failed after the statement was sent, maybe
			// after the server committed it: the session must not read
			// from a replica until the primary's position covers it.
			db.noteWrite(rc.session)
		}
		return nil, nodeErr(d.n, "exec", err)
	}
	db.noteWrite(rc.session)
	if !db.stillPrimary(d.n) {
		return nil, nodeErr(d.n, "exec", ErrPrimaryLost)
	}
	return res, nil
}
