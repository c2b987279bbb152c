package fakedriver

import (
	"context"
	"database/sql/driver"
	"errors"
	"sync/atomic"
)

var (
	errTxInProgress = errors.New("fakedriver: a transaction is already in progress on this connection")
	errNoTx         = errors.New("fakedriver: no transaction in progress on this connection")
)

// conn is one connection to a Connector. Like every driver.Conn it is used by
// one goroutine at a time; database/sql guarantees that.
type conn struct {
	c *Connector

	// Atomics: database/sql may ask IsValid from another goroutine.
	bad    atomic.Bool // broken: every operation fails with driver.ErrBadConn
	closed atomic.Bool

	// The transaction in progress, if any.
	inTx     bool
	readOnly bool
	txCtx    context.Context // the BeginTx context, passed to hooks by Commit and Rollback
}

var (
	_ driver.Conn               = (*conn)(nil)
	_ driver.ConnBeginTx        = (*conn)(nil)
	_ driver.ConnPrepareContext = (*conn)(nil)
	_ driver.QueryerContext     = (*conn)(nil)
	_ driver.ExecerContext      = (*conn)(nil)
	_ driver.Pinger             = (*conn)(nil)
	_ driver.SessionResetter    = (*conn)(nil)
	_ driver.Validator          = (*conn)(nil)
	_ driver.NamedValueChecker  = (*conn)(nil)
)

// enter counts and logs op, then returns the error op must fail with, if any:
// the node is down, the connection is broken, or the hook said so.
func (cn *conn) enter(ctx context.Context, op opIndex, query string, inTx, readOnly bool) error {
	c := cn.c
	c.note(op, query, inTx, readOnly)
	if c.down.Load() {
		cn.bad.Store(true)
		return driver.ErrBadConn
	}
	if cn.bad.Load() {
		return driver.ErrBadConn
	}
	if err := c.callHook(ctx, op, query); err != nil {
		if errors.Is(err, driver.ErrBadConn) {
			cn.bad.Store(true)
		}
		return err
	}
	return nil
}

// QueryContext answers query with the responder or the default answer.
func (cn *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if err := cn.enter(ctx, iQuery, query, cn.inTx, cn.readOnly); err != nil {
		return nil, err
	}
	return cn.c.query(query, args)
}

// ExecContext runs query; inside a read-only transaction it fails with
// ReadOnlyError.
func (cn *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if err := cn.enter(ctx, iExec, query, cn.inTx, cn.readOnly); err != nil {
		return nil, err
	}
	if cn.inTx && cn.readOnly {
		return nil, ReadOnlyError()
	}
	return cn.c.exec(query, args)
}

// PrepareContext returns a statement that runs query on this connection.
func (cn *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if err := cn.enter(ctx, iPrepare, query, cn.inTx, cn.readOnly); err != nil {
		return nil, err
	}
	return &stmt{cn: cn, query: query}, nil
}

// Prepare is PrepareContext with context.Background.
func (cn *conn) Prepare(query string) (driver.Stmt, error) {
	return cn.PrepareContext(context.Background(), query)
}

// BeginTx starts a transaction. Every isolation level is accepted;
// opts.ReadOnly is kept for the log and makes Exec fail with ReadOnlyError.
func (cn *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if err := cn.enter(ctx, iBegin, "", true, opts.ReadOnly); err != nil {
		return nil, err
	}
	if cn.inTx {
		return nil, errTxInProgress
	}
	cn.inTx, cn.readOnly, cn.txCtx = true, opts.ReadOnly, ctx
	return (*tx)(cn), nil
}

// Begin is BeginTx with context.Background and default options.
//
// Deprecated: Drivers should implement ConnBeginTx instead (or additionally).
func (cn *conn) Begin() (driver.Tx, error) {
	return cn.BeginTx(context.Background(), driver.TxOptions{})
}

// Ping checks the connection.
func (cn *conn) Ping(ctx context.Context) error {
	return cn.enter(ctx, iPing, "", cn.inTx, cn.readOnly)
}

// ResetSession reports driver.ErrBadConn for a broken connection, so
// database/sql discards it instead of reusing it.
func (cn *conn) ResetSession(context.Context) error {
	if cn.bad.Load() {
		return driver.ErrBadConn
	}
	return nil
}

// IsValid reports whether the connection may go back to the pool.
func (cn *conn) IsValid() bool { return !cn.bad.Load() }

// CheckNamedValue accepts every argument as it is.
func (cn *conn) CheckNamedValue(*driver.NamedValue) error { return nil }

// Close closes the connection; closing twice is harmless.
func (cn *conn) Close() error {
	if cn.closed.CompareAndSwap(false, true) {
		cn.bad.Store(true)
		cn.c.openConns.Add(-1)
	}
	return nil
}

// endTx ends the transaction in progress with op (iCommit or iRollback). The
// transaction is over even when the operation fails.
func (cn *conn) endTx(op opIndex) error {
	if !cn.inTx {
		return errNoTx
	}
	ctx := cn.txCtx
	err := cn.enter(ctx, op, "", true, cn.readOnly)
	cn.inTx, cn.readOnly, cn.txCtx = false, false, nil
	return err
}

// tx is the transaction in progress on a conn: the conn itself under another
// method set, so beginning a transaction allocates nothing.
type tx conn

var _ driver.Tx = (*tx)(nil)

// Commit commits the transaction. Its hook gets the BeginTx context.
func (t *tx) Commit() error { return (*conn)(t).endTx(iCommit) }

// Rollback rolls the transaction back. Its hook gets the BeginTx context.
func (t *tx) Rollback() error { return (*conn)(t).endTx(iRollback) }
