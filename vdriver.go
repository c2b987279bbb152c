package dbrouter

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"reflect"
	"sync/atomic"
)

// Running statements on a node's driver connection, as database/sql would:
// through the Context interfaces when the driver has them, else by
// preparing, with the arguments converted by the driver's own rules.

// convertArgs converts args as database/sql converts them for dc: with its
// NamedValueChecker, and otherwise (or when it skips one) with
// driver.DefaultParameterConverter. The SQL() face takes arguments as they
// are (vconn.CheckNamedValue), so that the node's driver decides: pgx's
// accepts types database/sql's default conversion refuses.
func convertArgs(dc driver.Conn, args []driver.NamedValue) ([]driver.NamedValue, error) {
	checker, _ := dc.(driver.NamedValueChecker)
	out := args[:0] // in place: database/sql made args for this call alone
	for i := range args {
		nv := &args[i]
		if checker != nil {
			switch err := checker.CheckNamedValue(nv); {
			case err == nil:
				out = append(out, *nv)
				continue
			case errors.Is(err, driver.ErrRemoveArgument):
				continue
			case !errors.Is(err, driver.ErrSkip):
				return nil, err
			}
		}
		v, err := driver.DefaultParameterConverter.ConvertValue(nv.Value)
		if err != nil {
			return nil, err
		}
		nv.Value = v
		out = append(out, *nv)
	}
	return out, nil
}

func queryOn(ctx context.Context, dc driver.Conn, query string, args []driver.NamedValue) (driver.Rows, error) {
	args, err := convertArgs(dc, args)
	if err != nil {
		return nil, err
	}
	if q, ok := dc.(driver.QueryerContext); ok {
		rows, err := q.QueryContext(ctx, query, args)
		if !errors.Is(err, driver.ErrSkip) {
			return rows, err
		}
	}
	st, err := prepareOn(ctx, dc, query)
	if err != nil {
		return nil, err
	}
	var rows driver.Rows
	if sq, ok := st.(driver.StmtQueryContext); ok {
		rows, err = sq.QueryContext(ctx, args)
	} else {
		rows, err = st.Query(values(args)) //nolint:staticcheck // a driver from before contexts
	}
	if err != nil {
		st.Close()
		return nil, err
	}
	return &stmtRows{Rows: rows, st: st}, nil
}

func execOn(ctx context.Context, dc driver.Conn, query string, args []driver.NamedValue) (driver.Result, error) {
	args, err := convertArgs(dc, args)
	if err != nil {
		return nil, err
	}
	if e, ok := dc.(driver.ExecerContext); ok {
		res, err := e.ExecContext(ctx, query, args)
		if !errors.Is(err, driver.ErrSkip) {
			return res, err
		}
	}
	st, err := prepareOn(ctx, dc, query)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if se, ok := st.(driver.StmtExecContext); ok {
		return se.ExecContext(ctx, args)
	}
	return st.Exec(values(args)) //nolint:staticcheck // a driver from before contexts
}

func prepareOn(ctx context.Context, dc driver.Conn, query string) (driver.Stmt, error) {
	if p, ok := dc.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, query)
	}
	return dc.Prepare(query)
}

// checkOn prepares query on dc and closes it again: what makes an error in
// the SQL show at Prepare.
func checkOn(ctx context.Context, dc driver.Conn, query string) error {
	st, err := prepareOn(ctx, dc, query)
	if err != nil {
		return err
	}
	return st.Close()
}

func beginOn(ctx context.Context, dc driver.Conn, opts driver.TxOptions) (driver.Tx, error) {
	if b, ok := dc.(driver.ConnBeginTx); ok {
		return b.BeginTx(ctx, opts)
	}
	if opts.Isolation != 0 || opts.ReadOnly {
		return nil, errors.New("dbrouter: the driver supports no transaction options")
	}
	return dc.Begin() //nolint:staticcheck // a driver from before contexts
}

func pingOn(ctx context.Context, dc driver.Conn) error {
	if p, ok := dc.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func values(args []driver.NamedValue) []driver.Value {
	v := make([]driver.Value, len(args))
	for i, a := range args {
		v[i] = a.Value
	}
	return v
}

// stmtRows are rows of a statement prepared for them alone, closed with
// them.
type stmtRows struct {
	driver.Rows
	st driver.Stmt
}

func (r *stmtRows) Close() error { return errors.Join(r.Rows.Close(), r.st.Close()) }

// vrows are rows of the SQL() face. When they ran on a connection taken for
// them, it goes back to its pool once they are closed; a writing query's
// session entry ends then too.
type vrows struct {
	driver.Rows
	c       *vconn
	release *physConn    // nil when the rows run on a connection their vconn holds
	on      *physConn    // that connection, then
	over    *atomic.Bool // set on Close: a writing query, for sessions
}

var (
	_ driver.RowsNextResultSet              = (*vrows)(nil)
	_ driver.RowsColumnTypeScanType         = (*vrows)(nil)
	_ driver.RowsColumnTypeDatabaseTypeName = (*vrows)(nil)
	_ driver.RowsColumnTypeLength           = (*vrows)(nil)
	_ driver.RowsColumnTypeNullable         = (*vrows)(nil)
	_ driver.RowsColumnTypePrecisionScale   = (*vrows)(nil)
)

func (r *vrows) Close() error {
	err := r.Rows.Close()
	if r.release != nil {
		r.release.release(r.c.db, isConnError(err))
	}
	if p := r.on; p != nil {
		if p.rows--; p.rows == 0 && p.orphan {
			p.release(r.c.db, p.discard || isConnError(err)) // its vconn gave it up while these rows were read
		}
	}
	if r.over != nil {
		r.over.Store(true)
	}
	if c := r.c; r == &c.rows {
		*r = vrows{}
		c.rowsBusy = false
	}
	return err
}

// The optional interfaces database/sql looks for, passed through, or
// answered as database/sql answers for rows without them.

func (r *vrows) HasNextResultSet() bool {
	n, ok := r.Rows.(driver.RowsNextResultSet)
	return ok && n.HasNextResultSet()
}

func (r *vrows) NextResultSet() error {
	if n, ok := r.Rows.(driver.RowsNextResultSet); ok {
		return n.NextResultSet()
	}
	return io.EOF
}

var anyType = reflect.TypeFor[any]()

func (r *vrows) ColumnTypeScanType(i int) reflect.Type {
	if c, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return c.ColumnTypeScanType(i)
	}
	return anyType
}

func (r *vrows) ColumnTypeDatabaseTypeName(i int) string {
	if c, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return c.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *vrows) ColumnTypeLength(i int) (int64, bool) {
	if c, ok := r.Rows.(driver.RowsColumnTypeLength); ok {
		return c.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *vrows) ColumnTypeNullable(i int) (bool, bool) {
	if c, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return c.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *vrows) ColumnTypePrecisionScale(i int) (int64, int64, bool) {
	if c, ok := r.Rows.(driver.RowsColumnTypePrecisionScale); ok {
		return c.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}
