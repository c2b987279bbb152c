package dbrouter

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/dbrouter/dbrouter/internal/sqlclass"
)

// Stmt is a prepared statement that routes every call as the DB does: a read
// to an eligible replica, a write to the current primary. It is prepared
// lazily on each node it meets, and follows a failover. Make one with
// PrepareRouted; it is safe for concurrent use. Close it when done.
type Stmt struct {
	db    *DB
	query string
	write bool

	server bool // prepared on the servers; else each call sends the text (WithServerPreparedStatements)
	closed atomic.Bool
	on     sync.Map // *node -> *stmtOn
}

// call returns s's call: through its statements prepared on the nodes, or
// as its text.
func (s *Stmt) call(write bool) call {
	c := call{query: s.query, write: write}
	if s.server {
		c.stmt = s
	}
	return c
}

// stmtOn is a Stmt on one node.
type stmtOn struct {
	st atomic.Pointer[sql.Stmt] // nil until prepared there
	// lock (a channel of one, so a caller waiting for it honours its
	// context) serializes preparing there: a node that hangs delays only
	// the calls routed to it, and never Close.
	lock chan struct{}
}

// slot returns s's state on n. Meeting a node for the first time, it also
// lets go of the statements prepared on nodes that left the DB (members of
// OpenDiscovered's source that left, or came back at a new address as new
// nodes), so a long-lived Stmt does not keep one per node it ever met.
func (s *Stmt) slot(n *node) *stmtOn {
	if o, ok := s.on.Load(n); ok {
		return o.(*stmtOn)
	}
	s.on.Range(func(k, v any) bool {
		if gone := k.(*node); gone.ctx.Err() != nil && s.on.CompareAndDelete(gone, v) {
			if st := v.(*stmtOn).st.Swap(nil); st != nil {
				st.Close()
			}
		}
		return true
	})
	o, _ := s.on.LoadOrStore(n, &stmtOn{lock: make(chan struct{}, 1)})
	return o.(*stmtOn)
}

// PrepareRouted returns a statement that routes per call, prepares lazily on
// each node it meets and follows failover: the long-lived choice. It is
// prepared at once on the node that serves it now, so syntax errors show
// here.
func (db *DB) PrepareRouted(ctx context.Context, query string) (*Stmt, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	s := &Stmt{db: db, query: query, write: !sqlclass.Classify(query), server: db.cfg.serverPrepare}
	if !s.server {
		return s, nil // WithServerPreparedStatements(false): each call sends the text
	}
	d, err := db.route(ctx, routeOf(ctx), query, s.write)
	if err != nil {
		return nil, err
	}
	if _, err := s.prepared(ctx, d.n); err != nil {
		return nil, err
	}
	return s, nil
}

// prepared returns the statement prepared on n, preparing it there first if
// need be.
func (s *Stmt) prepared(ctx context.Context, n *node) (*sql.Stmt, error) {
	o := s.slot(n)
	if st := o.st.Load(); st != nil {
		return st, nil
	}
	select {
	case o.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, nodeErr(n, "prepare", ctx.Err())
	}
	defer func() { <-o.lock }()
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if st := o.st.Load(); st != nil {
		return st, nil
	}
	st, err := n.db.PrepareContext(ctx, s.query)
	if err != nil {
		s.db.signal(n, err)
		return nil, nodeErr(n, "prepare", err)
	}
	o.st.Store(st)
	if s.closed.Load() {
		// Close ran while this was being prepared: close it here.
		if st := o.st.Swap(nil); st != nil {
			st.Close()
		}
		return nil, ErrClosed
	}
	return st, nil
}

func (s *Stmt) usable() error {
	if s.closed.Load() || s.db.closed.Load() {
		return ErrClosed
	}
	return nil
}

// QueryContext runs the statement as DB.QueryContext runs its query.
func (s *Stmt) QueryContext(ctx context.Context, args ...any) (*sql.Rows, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	return s.db.queryCall(ctx, s.call(s.write), args)
}

// Query runs the statement as QueryContext. Query uses context.Background
// internally; to specify the context, use QueryContext.
func (s *Stmt) Query(args ...any) (*sql.Rows, error) {
	return s.QueryContext(context.Background(), args...)
}

// QueryRowContext runs the statement as DB.QueryRowContext runs its query.
func (s *Stmt) QueryRowContext(ctx context.Context, args ...any) *sql.Row {
	var r sqlRow // inlined, r stays on the caller's stack: see DB.QueryRowContext
	return s.queryRow(ctx, args, &r)
}

func (s *Stmt) queryRow(ctx context.Context, args []any, r *sqlRow) *sql.Row {
	var rows *sql.Rows
	err := s.usable()
	if err == nil {
		rows, err = s.db.queryCall(ctx, s.call(s.write), args)
	}
	if row := r.fill(rows, err); row != nil {
		return row
	}
	return r.asRow()
}

// QueryRow runs the statement as QueryRowContext. QueryRow uses
// context.Background internally; to specify the context, use QueryRowContext.
func (s *Stmt) QueryRow(args ...any) *sql.Row {
	return s.QueryRowContext(context.Background(), args...)
}

// ExecContext runs the statement on the primary, as DB.ExecContext.
func (s *Stmt) ExecContext(ctx context.Context, args ...any) (sql.Result, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	return s.db.execCall(ctx, s.call(true), args)
}

// Exec runs the statement as ExecContext. Exec uses context.Background
// internally; to specify the context, use ExecContext.
func (s *Stmt) Exec(args ...any) (sql.Result, error) {
	return s.ExecContext(context.Background(), args...)
}

// Close closes the statement on every node it was prepared on. It is
// idempotent. A Stmt is not closed by DB.Close: close it yourself, or its
// statements stay prepared on handles given to New.
func (s *Stmt) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	var errs []error
	s.on.Range(func(k, v any) bool {
		if st := v.(*stmtOn).st.Swap(nil); st != nil {
			errs = append(errs, nodeErr(k.(*node), "close", st.Close()))
		}
		return true
	})
	return errors.Join(errs...)
}
