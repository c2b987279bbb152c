package fakedriver

import (
	"context"
	"database/sql/driver"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// Hook runs before every operation on a node, OpConnect and OpPing included;
// a non-nil error is returned by that operation instead of running it. query
// is the statement for OpQuery, OpExec and OpPrepare and "" otherwise.
//
// ctx is the operation's context; for OpCommit and OpRollback, which have none
// in database/sql/driver, it is the context given to BeginTx. A hook may block
// until ctx is done to simulate a hung server, and should then return
// ctx.Err(). Returning driver.ErrBadConn (or an error wrapping it) also breaks
// the connection, so database/sql discards it.
//
// Hooks run concurrently from every goroutine using the node, so they must be
// safe for concurrent use.
type Hook func(ctx context.Context, op Op, query string) error

// Responder computes the answer to a statement in place of the default one
// (one row, one column "node" holding the connector's name).
//
// For a query, columns and rows make the result set; every row must have
// len(columns) values, of the types database/sql/driver allows. For an exec,
// only err is used: nil gives RowsAffected 1. A non-nil err is returned by the
// operation as is.
//
// args belongs to the caller and must not be kept after the call returns. The
// fake does not modify the returned slices, but hands columns to the caller of
// sql.Rows.Columns. Responders run concurrently and must be safe for
// concurrent use.
type Responder func(query string, args []driver.NamedValue) (columns []string, rows [][]driver.Value, err error)

// Connector is one fake database node. Open it with sql.OpenDB. It implements
// driver.Connector and is safe for concurrent use.
type Connector struct {
	// Immutable after New.
	name      string
	nameValue driver.Value // name, boxed once so default answers don't allocate
	drv       *Driver

	// Atomics.
	counts    [numOps]atomic.Int64
	openConns atomic.Int64
	closes    atomic.Int64
	record    atomic.Bool
	down      atomic.Bool
	hook      atomic.Pointer[Hook]
	responder atomic.Pointer[Responder]

	mu    sync.Mutex // protects following fields
	calls []Call
}

var _ driver.Connector = (*Connector)(nil)

// New returns a node called name, up, with no hook or responder, and with
// recording off.
func New(name string) *Connector {
	c := &Connector{name: name, nameValue: name}
	c.drv = &Driver{nodes: map[string]*Connector{name: c}}
	return c
}

// Name returns the name given to New.
func (c *Connector) Name() string { return c.name }

// Driver returns a *Driver that knows only this connector: its Open and
// OpenConnector accept this connector's name as the DSN and fail with
// ErrUnknownName for any other. Use NewDriver for a driver over several nodes.
func (c *Connector) Driver() driver.Driver { return c.drv }

// Connect opens a new connection to the node. It is counted as OpConnect.
// While the node is down it fails with a *net.OpError whose Err is
// syscall.ECONNREFUSED; otherwise the hook may fail it.
func (c *Connector) Connect(ctx context.Context) (driver.Conn, error) {
	c.note(iConnect, "", false, false)
	if c.down.Load() {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	if err := c.callHook(ctx, iConnect, ""); err != nil {
		return nil, err
	}
	c.openConns.Add(1)
	return &conn{c: c}, nil
}

// Close only counts: database/sql calls it when a *sql.DB opened over this
// connector closes (a driver.Connector that is an io.Closer), so tests can
// tell whether a handle was closed.
func (c *Connector) Close() error {
	c.closes.Add(1)
	return nil
}

// Closes returns how many times Close was called.
func (c *Connector) Closes() int { return int(c.closes.Load()) }

// OpenConns returns how many connections were opened and not yet closed.
// Reset does not change it.
func (c *Connector) OpenConns() int { return int(c.openConns.Load()) }

// SetHook makes h run before every operation on this node; nil removes the
// hook. Operations already past their hook are not affected.
func (c *Connector) SetHook(h Hook) {
	if h == nil {
		c.hook.Store(nil)
		return
	}
	c.hook.Store(&h)
}

// SetResponder makes r answer this node's queries and execs; nil restores the
// default answers.
func (c *Connector) SetResponder(r Responder) {
	if r == nil {
		c.responder.Store(nil)
		return
	}
	c.responder.Store(&r)
}

// SetDown takes the node down (true) or brings it back up (false). While it is
// down, OpConnect fails with a *net.OpError (dial tcp: connection refused) and
// every operation on an open connection fails with driver.ErrBadConn and breaks
// that connection, which stays broken after the node comes back, as after a
// server restart. The hook is not called while the node is down.
func (c *Connector) SetDown(down bool) { c.down.Store(down) }

// IsDown reports whether SetDown(true) is in effect.
func (c *Connector) IsDown() bool { return c.down.Load() }

// callHook runs the hook, if any, for op.
func (c *Connector) callHook(ctx context.Context, op opIndex, query string) error {
	h := c.hook.Load()
	if h == nil {
		return nil
	}
	return (*h)(ctx, ops[op], query)
}

// respond returns the responder, or nil for the default answers.
func (c *Connector) respond() Responder {
	if r := c.responder.Load(); r != nil {
		return *r
	}
	return nil
}
