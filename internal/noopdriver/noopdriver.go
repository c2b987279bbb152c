// Package noopdriver is a database/sql driver that does no I/O at all: every
// query returns one row with one column holding int64(1), every exec affects
// one row. It measures what a layer above database/sql costs per call, with
// nothing else in the way.
package noopdriver

import (
	"context"
	"database/sql/driver"
	"io"
)

// Connector opens no-op connections. Use it with sql.OpenDB.
type Connector struct{}

var (
	_ driver.Connector      = Connector{}
	_ driver.QueryerContext = (*conn)(nil)
	_ driver.ExecerContext  = (*conn)(nil)
	_ driver.ConnBeginTx    = (*conn)(nil)
)

// Connect returns a new connection.
func (Connector) Connect(context.Context) (driver.Conn, error) { return &conn{}, nil }

// Driver returns the driver.
func (Connector) Driver() driver.Driver { return Driver{} }

// Driver is the no-op driver, for sql.Register.
type Driver struct{}

// Open returns a new connection; the name is ignored.
func (Driver) Open(string) (driver.Conn, error) { return &conn{}, nil }

type conn struct{ rows rows }

func (c *conn) Prepare(string) (driver.Stmt, error) { return stmt{}, nil }
func (c *conn) Close() error                        { return nil }
func (c *conn) Begin() (driver.Tx, error)           { return tx{}, nil }
func (c *conn) BeginTx(context.Context, driver.TxOptions) (driver.Tx, error) {
	return tx{}, nil
}

func (c *conn) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	c.rows.done = false
	return &c.rows, nil
}

func (c *conn) ExecContext(context.Context, string, []driver.NamedValue) (driver.Result, error) {
	return driver.RowsAffected(1), nil
}

type stmt struct{}

func (stmt) Close() error                               { return nil }
func (stmt) NumInput() int                              { return -1 }
func (stmt) Exec([]driver.Value) (driver.Result, error) { return driver.RowsAffected(1), nil }
func (stmt) Query([]driver.Value) (driver.Rows, error)  { return &rows{}, nil }

type tx struct{}

func (tx) Commit() error   { return nil }
func (tx) Rollback() error { return nil }

// rows is one row of one column. A connection reuses its own: database/sql
// runs one query at a time on a connection, so the driver allocates nothing.
type rows struct{ done bool }

var columns = []string{"v"}

func (r *rows) Columns() []string { return columns }
func (r *rows) Close() error      { return nil }
func (r *rows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	dest[0] = int64(1)
	return nil
}
