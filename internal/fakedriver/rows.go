package fakedriver

import (
	"database/sql/driver"
	"fmt"
	"io"
)

// DefaultColumn is the name of the single column of the default answer.
const DefaultColumn = "node"

// query answers a query with the responder or the default answer.
func (c *Connector) query(query string, args []driver.NamedValue) (driver.Rows, error) {
	r := c.respond()
	if r == nil {
		rs := &rows{def: true, val: c.nameValue}
		rs.one[0] = DefaultColumn
		rs.cols = rs.one[:]
		return rs, nil
	}
	cols, data, err := r(query, args)
	if err != nil {
		return nil, err
	}
	for i, row := range data {
		if len(row) != len(cols) {
			return nil, fmt.Errorf("fakedriver: responder row %d has %d values for %d columns", i, len(row), len(cols))
		}
	}
	return &rows{cols: cols, data: data}, nil
}

// exec runs an exec with the responder, if any, for its error.
func (c *Connector) exec(query string, args []driver.NamedValue) (driver.Result, error) {
	if r := c.respond(); r != nil {
		if _, _, err := r(query, args); err != nil {
			return nil, err
		}
	}
	return result{}, nil
}

// rows is a result set: the default answer (def) or a responder's rows.
type rows struct {
	cols []string
	data [][]driver.Value
	pos  int

	// The default answer lives in the rows value itself: one allocation per
	// query, and no slice shared between queries.
	def bool
	one [1]string
	val driver.Value
}

var _ driver.Rows = (*rows)(nil)

func (r *rows) Columns() []string { return r.cols }

func (r *rows) Close() error { return nil }

func (r *rows) Next(dest []driver.Value) error {
	if r.def {
		if r.pos > 0 {
			return io.EOF
		}
		r.pos++
		dest[0] = r.val
		return nil
	}
	if r.pos >= len(r.data) {
		return io.EOF
	}
	copy(dest, r.data[r.pos])
	r.pos++
	return nil
}

// result is every successful Exec's result: LastInsertId 0, RowsAffected 1.
type result struct{}

var _ driver.Result = result{}

func (result) LastInsertId() (int64, error) { return 0, nil }
func (result) RowsAffected() (int64, error) { return 1, nil }
