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
	st, err := c.stmt.on(ctx, n)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (c *call) exec(ctx context.Context, n *node, args []any) (sql.Result, error) {
	if c.stmt == nil {
		return n.db.ExecContext(ctx, c.query, args...)
	}
	st, err := c.stmt.on(ctx, n)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// rerouteRead decides where a failed routed read runs again: on the primary
// when a replica refused it as something only a primary can run (a write,
// SQLSTATE 25006, the classifier could not know of, e.g. in a volatile
// function; 55000 or 0A000, see refusedByStandby; misroute is then true), on another
// eligible node when the connection failed before any row came back (not
// when the node was pinned: a read demanded of the primary must not quietly
// come from a replica). It returns nil when the read must not run again.
// Writes never run again.
func (db *DB) rerouteRead(ctx context.Context, rc ctxRoute, n *node, pinned, write bool, err error) (again *node, misroute bool) {
	db.signal(n, err)
	if write || ctx.Err() != nil {
		return nil, false
	}
	t := db.table.Load()
	switch {
	case refusedByStandby(err) && n != t.primary:
		p, perr := db.primaryNode(ctx)
		if perr != nil || p == n {
			return nil, false
		}
		n.misroutes.Add(1)
		return p, true
	case isConnError(err) && !pinned:
		other, rerr := db.replicaNode(ctx, rc, t, n)
		if rerr != nil || other == n {
			return nil, false
		}
		n.retries.Add(1)
		return other, false
	}
	return nil, false
}

func (db *DB) queryCall(ctx context.Context, c call, args []any) (*sql.Rows, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	rc := routeOf(ctx)
	n, pinned, err := db.route(ctx, rc, c.query, c.write)
	if err != nil {
		return nil, err
	}
	rows, err := c.rows(ctx, n, args)
	n.count(c.write, err)
	if err == nil {
		if c.write {
			db.noteQueryWrite(ctx, rc.session, rows)
		}
		return rows, nil
	}
	again, misroute := db.rerouteRead(ctx, rc, n, pinned, c.write, err)
	if again == nil {
		if c.write && isConnError(err) {
			db.noteWrite(rc.session) // sent, and maybe committed: its outcome is unknown
		}
		return nil, nodeErr(n, "query", err)
	}
	rows, err = c.rows(ctx, again, args)
	again.count(c.write, err)
	if err != nil {
		db.signal(again, err)
		return nil, nodeErr(again, "query", err)
	}
	if misroute {
		db.noteQueryWrite(ctx, rc.session, rows) // it wrote after all
	}
	return rows, nil
}

func (db *DB) execCall(ctx context.Context, c call, args []any) (sql.Result, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	rc := routeOf(ctx)
	n, _, err := db.route(ctx, rc, c.query, true)
	if err != nil {
		return nil, err
	}
	res, err := c.exec(ctx, n, args)
	n.count(true, err)
	if err != nil {
		db.signal(n, err)
		if isConnError(err) {
			// The connection failed after the statement was sent, maybe
			// after the server committed it: the session must not read
			// from a replica until the primary's position covers it.
			db.noteWrite(rc.session)
		}
		return nil, nodeErr(n, "exec", err)
	}
	db.noteWrite(rc.session)
	return res, nil
}
