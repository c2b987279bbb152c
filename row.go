package dbrouter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"io"
	"reflect"
	"unsafe"
)

// A *sql.Row can only be made by database/sql, whose QueryRowContext is a
// QueryContext whose result it wraps in a Row. The router's QueryRowContext
// does the same: it runs the routed query and wraps its *sql.Rows, or its
// error, in a sqlRow.

// sqlRow has the layout of sql.Row, whose fields are unexported. The
// router's QueryRowContext is small enough to be inlined and declares its
// sqlRow itself, so the Row lives on the caller's stack, as the one *sql.DB's
// QueryRowContext makes does: it allocates no more than *sql.DB's.
type sqlRow struct {
	err  error
	rows *sql.Rows
}

// rowLayoutOK says sqlRow is laid out as sql.Row. If a Go release changes
// sql.Row, rows are wrapped through a throwaway handle instead (wrapRow):
// slower, never wrong.
var rowLayoutOK = sameLayout(reflect.TypeFor[sql.Row](), reflect.TypeFor[sqlRow]())

func sameLayout(a, b reflect.Type) bool {
	if a.Size() != b.Size() || a.NumField() != b.NumField() {
		return false
	}
	for i := range a.NumField() {
		f, g := a.Field(i), b.Field(i)
		if f.Name != g.Name || f.Type != g.Type || f.Offset != g.Offset {
			return false
		}
	}
	return true
}

// fill makes r the Row of rows or err. It returns nil when r is ready to be
// used as a *sql.Row, or, where sqlRow is not laid out as sql.Row, a Row of
// its own to use instead.
func (r *sqlRow) fill(rows *sql.Rows, err error) *sql.Row {
	if !rowLayoutOK {
		return wrapRow(rows, err)
	}
	r.rows, r.err = rows, err
	return nil
}

// asRow returns r as a *sql.Row. Call it only after fill returned nil.
func (r *sqlRow) asRow() *sql.Row { return (*sql.Row)(unsafe.Pointer(r)) }

// wrapRow makes a Row without unsafe, on the heap: a throwaway handle, whose one
// connection answers any query with rows (or fails with err), makes the Row.
func wrapRow(rows *sql.Rows, err error) *sql.Row {
	h := sql.OpenDB(rowConnector{rows: rows, err: err})
	defer h.Close()
	return h.QueryRowContext(context.Background(), "")
}

// rowConnector and rowConn serve wrapRow's one query.
type rowConnector struct {
	rows *sql.Rows
	err  error
}

func (c rowConnector) Connect(context.Context) (driver.Conn, error) {
	if c.err != nil {
		return nil, c.err
	}
	return rowConn(c), nil
}
func (c rowConnector) Driver() driver.Driver { return rowDriver(c) }

type rowDriver rowConnector

func (d rowDriver) Open(string) (driver.Conn, error) {
	return rowConnector(d).Connect(context.Background())
}

type rowConn rowConnector

func (c rowConn) Prepare(string) (driver.Stmt, error) { return nil, driver.ErrSkip }
func (c rowConn) Close() error                        { return nil }
func (c rowConn) Begin() (driver.Tx, error)           { return nil, driver.ErrSkip }
func (c rowConn) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	cols, err := c.rows.Columns()
	if err != nil {
		return nil, err
	}
	return &rowsReader{rows: c.rows, cols: cols}, nil
}

// rowsReader is a driver.Rows reading a *sql.Rows.
type rowsReader struct {
	rows *sql.Rows
	cols []string
}

func (r *rowsReader) Columns() []string { return r.cols }
func (r *rowsReader) Close() error      { return r.rows.Close() }
func (r *rowsReader) Next(dest []driver.Value) error {
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return io.EOF
	}
	vals := make([]any, len(dest))
	ptrs := make([]any, len(dest))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := r.rows.Scan(ptrs...); err != nil {
		return err
	}
	for i, v := range vals {
		dest[i] = v
	}
	return nil
}
