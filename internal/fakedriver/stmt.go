package fakedriver

import (
	"context"
	"database/sql/driver"
)

// stmt is a statement prepared on a conn. Its executions are counted and
// logged as OpQuery and OpExec, like the conn's own.
type stmt struct {
	cn    *conn
	query string
}

var (
	_ driver.Stmt             = (*stmt)(nil)
	_ driver.StmtQueryContext = (*stmt)(nil)
	_ driver.StmtExecContext  = (*stmt)(nil)
)

// NumInput returns -1: the fake does not check the number of arguments.
func (s *stmt) NumInput() int { return -1 }

// Close releases nothing; a statement holds no resources.
func (s *stmt) Close() error { return nil }

// QueryContext runs the statement as conn.QueryContext would.
func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return s.cn.QueryContext(ctx, s.query, args)
}

// ExecContext runs the statement as conn.ExecContext would.
func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return s.cn.ExecContext(ctx, s.query, args)
}

// Query is QueryContext with context.Background.
//
// Deprecated: Drivers should implement StmtQueryContext instead (or additionally).
func (s *stmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), named(args))
}

// Exec is ExecContext with context.Background.
//
// Deprecated: Drivers should implement StmtExecContext instead (or additionally).
func (s *stmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), named(args))
}

// named converts positional arguments to named values with ordinals from 1.
func named(args []driver.Value) []driver.NamedValue {
	nv := make([]driver.NamedValue, len(args))
	for i, v := range args {
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return nv
}
