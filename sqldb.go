package dbrouter

import (
	"context"
	"database/sql"
	"errors"
	"sync"

	"github.com/dbrouter/dbrouter/internal/sqlclass"
)

// The *sql.DB method set, with the same signatures and semantics unless a
// method's doc says otherwise. Each XContext method is the implementation;
// X is a one-line wrapper that uses context.Background.

// QueryContext runs a query that returns rows. A read goes to a replica
// chosen by the balancer; a query that may write (see the package
// documentation) goes to the primary. A read refused by a replica as a write
// runs again on the primary; a read whose connection failed before any row
// came back runs again once on another eligible node.
func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return db.queryCall(ctx, call{query: query, write: !sqlclass.Classify(query)}, args)
}

// Query runs a query that returns rows. Query uses context.Background
// internally; to specify the context, use QueryContext.
func (db *DB) Query(query string, args ...any) (*sql.Rows, error) {
	return db.QueryContext(context.Background(), query, args...)
}

// QueryRowContext runs a query expected to return at most one row, routed as
// QueryContext. Errors are deferred to the Row's Scan (or Err), as with
// *sql.DB; a node's error is a *NodeError there too.
func (db *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	// Small enough to be inlined, so that r, like the Row *sql.DB's
	// QueryRowContext makes, stays on the caller's stack.
	var r sqlRow
	return db.queryRow(ctx, query, args, &r)
}

// queryRow runs QueryRowContext's query and returns its result as r, made a
// *sql.Row (see sqlRow.fill).
func (db *DB) queryRow(ctx context.Context, query string, args []any, r *sqlRow) *sql.Row {
	rows, err := db.queryCall(ctx, call{query: query, write: !sqlclass.Classify(query)}, args)
	if row := r.fill(rows, err); row != nil {
		return row
	}
	return r.asRow()
}

// QueryRow runs a query expected to return at most one row. QueryRow uses
// context.Background internally; to specify the context, use QueryRowContext.
func (db *DB) QueryRow(query string, args ...any) *sql.Row {
	return db.QueryRowContext(context.Background(), query, args...)
}

// ExecContext runs a statement that returns no rows on the primary. It is
// never run again by the router.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return db.execCall(ctx, call{query: query, write: true}, args)
}

// Exec runs a statement that returns no rows on the primary. Exec uses
// context.Background internally; to specify the context, use ExecContext.
func (db *DB) Exec(query string, args ...any) (sql.Result, error) {
	return db.ExecContext(context.Background(), query, args...)
}

// BeginTx starts a transaction on the primary, pinned there for its whole
// life. With opts.ReadOnly it starts on a replica instead (unless
// WithReadOnlyTxOnReplica(false), or the isolation level is SERIALIZABLE,
// which standbys refuse). A read-only transaction whose BEGIN fails on a
// broken connection is begun once more on another eligible node.
//
// It is a transaction of the SQL() face: its node is chosen when BEGIN is
// about to be sent (a node that lost its role while the transaction waited
// for a connection is not used), and errors inside it are passive health
// signals, as on routed statements.
func (db *DB) BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	return db.face.BeginTx(ctx, opts)
}

// Begin starts a transaction on the primary. Begin uses context.Background
// internally; to specify the context, use BeginTx.
func (db *DB) Begin() (*sql.Tx, error) {
	return db.BeginTx(context.Background(), nil)
}

// PrepareContext creates a prepared statement with exactly the *sql.DB
// signature, of the SQL() face: routed every time it runs, to whatever node
// then serves it (a read to a replica, a write to the primary), so it
// follows a failover. The driver prepares it on each node it meets (pgx
// does, with its statement cache). It is prepared once now, on the node that
// would serve it, so that errors in the SQL show here.
func (db *DB) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	return db.face.PrepareContext(ctx, query)
}

// Prepare creates a prepared statement as PrepareContext. Prepare uses
// context.Background internally; to specify the context, use PrepareContext.
func (db *DB) Prepare(query string) (*sql.Stmt, error) {
	return db.PrepareContext(context.Background(), query)
}

// Conn returns a single connection to the primary, for session state that
// must stay on one connection: every statement on it goes to the primary.
// It is a connection of the SQL() face, so its statements are routed when
// they are sent: they follow a new primary, until one leaves state in the
// server session (SET, LISTEN, a temporary table, an advisory lock, …);
// from then on they run on that server session, and fail with
// ErrSessionMoved if its node stops being the primary.
func (db *DB) Conn(ctx context.Context) (*sql.Conn, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	c, err := db.face.Conn(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.Raw(func(dc any) error {
		dc.(*vconn).primaryOnly = true
		return nil
	}); err != nil {
		c.Close()
		return nil, err
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
