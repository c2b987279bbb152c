package fakedriver_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCtx returns a context that ends with the test or after 10 s.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openDB opens c with at most one connection, closed at the end of the test.
func openDB(t *testing.T, c *fakedriver.Connector) *sql.DB {
	t.Helper()
	db := sql.OpenDB(c)
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { assert.NoError(t, db.Close()) })
	return db
}

// sqlStater is what error classifiers look for, as with pgconn.PgError and pq.Error.
type sqlStater interface{ SQLState() string }

func queryNode(ctx context.Context, db *sql.DB) (string, error) {
	var node string
	err := db.QueryRowContext(ctx, "SELECT 1").Scan(&node)
	return node, err
}

func TestDefaultAnswerIsNodeName(t *testing.T) {
	ctx := testCtx(t)
	c := fakedriver.New("replica1")
	db := openDB(t, c)

	assert.Equal(t, "replica1", c.Name())
	node, err := queryNode(ctx, db)
	require.NoError(t, err)
	assert.Equal(t, "replica1", node)

	rows, err := db.QueryContext(ctx, "SELECT * FROM t WHERE id = $1", 7)
	require.NoError(t, err)
	cols, err := rows.Columns()
	require.NoError(t, err)
	assert.Equal(t, []string{fakedriver.DefaultColumn}, cols)
	n := 0
	for rows.Next() {
		n++
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	assert.Equal(t, 1, n)

	res, err := db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	affected, err := res.RowsAffected()
	require.NoError(t, err)
	assert.EqualValues(t, 1, affected)
	id, err := res.LastInsertId()
	require.NoError(t, err)
	assert.EqualValues(t, 0, id)
}

func TestCounters(t *testing.T) {
	tests := []struct {
		name string
		run  func(ctx context.Context, db *sql.DB) error
		want map[fakedriver.Op]int // ops not listed must be 0; OpConnect is always 1
	}{
		{
			name: "query",
			run: func(ctx context.Context, db *sql.DB) error {
				_, err := queryNode(ctx, db)
				return err
			},
			want: map[fakedriver.Op]int{fakedriver.OpQuery: 1},
		},
		{
			name: "exec",
			run: func(ctx context.Context, db *sql.DB) error {
				_, err := db.ExecContext(ctx, "UPDATE t SET x = 1")
				return err
			},
			want: map[fakedriver.Op]int{fakedriver.OpExec: 1},
		},
		{
			name: "ping",
			run:  func(ctx context.Context, db *sql.DB) error { return db.PingContext(ctx) },
			want: map[fakedriver.Op]int{fakedriver.OpPing: 1},
		},
		{
			name: "prepared query and exec",
			run: func(ctx context.Context, db *sql.DB) error {
				st, err := db.PrepareContext(ctx, "SELECT 1")
				if err != nil {
					return err
				}
				defer st.Close()
				var node string
				if err := st.QueryRowContext(ctx).Scan(&node); err != nil {
					return err
				}
				_, err = st.ExecContext(ctx)
				return err
			},
			want: map[fakedriver.Op]int{fakedriver.OpPrepare: 1, fakedriver.OpQuery: 1, fakedriver.OpExec: 1},
		},
		{
			name: "commit",
			run: func(ctx context.Context, db *sql.DB) error {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, "UPDATE t SET x = 1"); err != nil {
					return err
				}
				return tx.Commit()
			},
			want: map[fakedriver.Op]int{fakedriver.OpBegin: 1, fakedriver.OpExec: 1, fakedriver.OpCommit: 1},
		},
		{
			name: "rollback",
			run: func(ctx context.Context, db *sql.DB) error {
				tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable})
				if err != nil {
					return err
				}
				return tx.Rollback()
			},
			want: map[fakedriver.Op]int{fakedriver.OpBegin: 1, fakedriver.OpRollback: 1},
		},
	}
	all := []fakedriver.Op{
		fakedriver.OpConnect, fakedriver.OpQuery, fakedriver.OpExec, fakedriver.OpPrepare,
		fakedriver.OpBegin, fakedriver.OpCommit, fakedriver.OpRollback, fakedriver.OpPing,
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			c := fakedriver.New("n")
			db := openDB(t, c)
			require.NoError(t, tt.run(ctx, db))
			for _, op := range all {
				want := tt.want[op]
				if op == fakedriver.OpConnect {
					want = 1
				}
				assert.Equal(t, want, c.Count(op), "Count(%s)", op)
			}
			assert.Equal(t, 1, c.OpenConns())
			assert.Zero(t, c.Count("no such op"))
			assert.Empty(t, c.Calls(), "recording is off by default")
		})
	}
}

func TestRecord(t *testing.T) {
	ctx := testCtx(t)
	c := fakedriver.New("n")
	db := openDB(t, c)
	c.SetRecord(true)

	_, err := queryNode(ctx, db)
	require.NoError(t, err)

	ro, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	require.NoError(t, err)
	var node string
	require.NoError(t, ro.QueryRowContext(ctx, "SELECT a FROM t").Scan(&node))
	require.NoError(t, ro.Commit())

	rw, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = rw.ExecContext(ctx, "DELETE FROM t")
	require.NoError(t, err)
	require.NoError(t, rw.Rollback())

	want := []fakedriver.Call{
		{Op: fakedriver.OpConnect},
		{Op: fakedriver.OpQuery, SQL: "SELECT 1"},
		{Op: fakedriver.OpBegin, InTx: true, ReadOnlyTx: true},
		{Op: fakedriver.OpQuery, SQL: "SELECT a FROM t", InTx: true, ReadOnlyTx: true},
		{Op: fakedriver.OpCommit, InTx: true, ReadOnlyTx: true},
		{Op: fakedriver.OpBegin, InTx: true},
		{Op: fakedriver.OpExec, SQL: "DELETE FROM t", InTx: true},
		{Op: fakedriver.OpRollback, InTx: true},
	}
	calls := c.Calls()
	assert.Equal(t, want, calls)

	calls[0].SQL = "changed"
	assert.Equal(t, want, c.Calls(), "Calls returns a copy")

	c.SetRecord(false)
	_, err = queryNode(ctx, db)
	require.NoError(t, err)
	assert.Equal(t, want, c.Calls(), "nothing logged while recording is off")
	assert.Equal(t, 3, c.Count(fakedriver.OpQuery), "counted while recording is off")
}

func TestReadOnlyTxRefusesExec(t *testing.T) {
	ctx := testCtx(t)
	c := fakedriver.New("replica1")
	db := openDB(t, c)

	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback() })
	_, err = tx.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	var st sqlStater
	require.ErrorAs(t, err, &st)
	assert.Equal(t, fakedriver.CodeReadOnlySQLTransaction, st.SQLState())

	var node string
	require.NoError(t, tx.QueryRowContext(ctx, "SELECT 1").Scan(&node))
	assert.Equal(t, "replica1", node)
}

func TestHookInjectsErrors(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name string
		op   fakedriver.Op
		hook error
		run  func(ctx context.Context, db *sql.DB) error
	}{
		{"connect", fakedriver.OpConnect, errBoom, func(ctx context.Context, db *sql.DB) error {
			_, err := queryNode(ctx, db)
			return err
		}},
		{"ping", fakedriver.OpPing, errBoom, func(ctx context.Context, db *sql.DB) error { return db.PingContext(ctx) }},
		{"query", fakedriver.OpQuery, errBoom, func(ctx context.Context, db *sql.DB) error {
			_, err := queryNode(ctx, db)
			return err
		}},
		{"exec", fakedriver.OpExec, fakedriver.ReadOnlyError(), func(ctx context.Context, db *sql.DB) error {
			_, err := db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
			return err
		}},
		{"prepare", fakedriver.OpPrepare, errBoom, func(ctx context.Context, db *sql.DB) error {
			st, err := db.PrepareContext(ctx, "SELECT 1")
			if err == nil {
				_ = st.Close()
			}
			return err
		}},
		{"begin", fakedriver.OpBegin, errBoom, func(ctx context.Context, db *sql.DB) error {
			tx, err := db.BeginTx(ctx, nil)
			if err == nil {
				_ = tx.Rollback()
			}
			return err
		}},
		{"commit", fakedriver.OpCommit, fakedriver.AdminShutdownError(), func(ctx context.Context, db *sql.DB) error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			return tx.Commit()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			c := fakedriver.New("n")
			db := openDB(t, c)
			var seen atomic.Int64
			c.SetHook(func(_ context.Context, op fakedriver.Op, _ string) error {
				if op != tt.op {
					return nil
				}
				seen.Add(1)
				return tt.hook
			})

			err := tt.run(ctx, db)
			require.ErrorIs(t, err, tt.hook)
			assert.EqualValues(t, 1, seen.Load())
			assert.Equal(t, 1, c.Count(tt.op), "a failed op is counted")

			c.SetHook(nil)
			require.NoError(t, tt.run(ctx, db), "no error once the hook is removed")
		})
	}
}

func TestHookSeesQuery(t *testing.T) {
	ctx := testCtx(t)
	c := fakedriver.New("n")
	db := openDB(t, c)
	var mu sync.Mutex
	var got []string
	c.SetHook(func(_ context.Context, op fakedriver.Op, query string) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, string(op)+":"+query)
		return nil
	})
	_, err := queryNode(ctx, db)
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"connect:", "query:SELECT 1"}, got)
}

func TestHookBadConnDiscardsConn(t *testing.T) {
	t.Run("database/sql retries on a new conn", func(t *testing.T) {
		ctx := testCtx(t)
		c := fakedriver.New("n")
		db := openDB(t, c)
		var failed atomic.Bool
		c.SetHook(func(_ context.Context, op fakedriver.Op, _ string) error {
			if op == fakedriver.OpQuery && failed.CompareAndSwap(false, true) {
				return driver.ErrBadConn
			}
			return nil
		})

		node, err := queryNode(ctx, db)
		require.NoError(t, err)
		assert.Equal(t, "n", node)
		assert.Equal(t, 2, c.Count(fakedriver.OpQuery))
		assert.Equal(t, 2, c.Count(fakedriver.OpConnect), "the broken conn was replaced")
		assert.Equal(t, 1, c.OpenConns(), "the broken conn was closed")
	})

	t.Run("broken inside a transaction", func(t *testing.T) {
		ctx := testCtx(t)
		c := fakedriver.New("n")
		db := openDB(t, c)
		tx, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		c.SetHook(func(_ context.Context, op fakedriver.Op, _ string) error {
			if op == fakedriver.OpExec {
				return fmt.Errorf("connection reset: %w", driver.ErrBadConn)
			}
			return nil
		})
		_, err = tx.ExecContext(ctx, "UPDATE t SET x = 1")
		require.ErrorIs(t, err, driver.ErrBadConn)
		_, err = tx.QueryContext(ctx, "SELECT 1")
		require.ErrorIs(t, err, driver.ErrBadConn, "a broken conn stays broken")
		_ = tx.Rollback()
		assert.Equal(t, 0, c.OpenConns(), "database/sql discarded the broken conn")

		c.SetHook(nil)
		_, err = queryNode(ctx, db)
		require.NoError(t, err)
		assert.Equal(t, 2, c.Count(fakedriver.OpConnect))
	})

	t.Run("driver conn reports itself invalid", func(t *testing.T) {
		ctx := testCtx(t)
		c := fakedriver.New("n")
		dc, err := c.Connect(ctx)
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, dc.Close()) })
		require.Implements(t, (*driver.Validator)(nil), dc)
		require.Implements(t, (*driver.SessionResetter)(nil), dc)
		assert.True(t, dc.(driver.Validator).IsValid())
		require.NoError(t, dc.(driver.SessionResetter).ResetSession(ctx))

		c.SetHook(func(context.Context, fakedriver.Op, string) error { return driver.ErrBadConn })
		require.ErrorIs(t, dc.(driver.Pinger).Ping(ctx), driver.ErrBadConn)
		assert.False(t, dc.(driver.Validator).IsValid())
		require.ErrorIs(t, dc.(driver.SessionResetter).ResetSession(ctx), driver.ErrBadConn)
	})
}

func TestHookBlockingHonoursDeadline(t *testing.T) {
	for _, op := range []fakedriver.Op{fakedriver.OpConnect, fakedriver.OpQuery} {
		t.Run(string(op), func(t *testing.T) {
			c := fakedriver.New("n")
			db := openDB(t, c)
			c.SetHook(func(ctx context.Context, o fakedriver.Op, _ string) error {
				if o != op {
					return nil
				}
				<-ctx.Done()
				return ctx.Err()
			})
			ctx, cancel := context.WithTimeout(testCtx(t), 20*time.Millisecond)
			defer cancel()
			_, err := queryNode(ctx, db)
			require.ErrorIs(t, err, context.DeadlineExceeded)
		})
	}
}

func TestResponder(t *testing.T) {
	ctx := testCtx(t)
	c := fakedriver.New("replica1")
	db := openDB(t, c)
	const probe = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, $1::int"
	errNoTable := &fakedriver.Error{Code: "42P01", Message: `relation "nope" does not exist`}
	c.SetResponder(func(query string, args []driver.NamedValue) ([]string, [][]driver.Value, error) {
		switch query {
		case probe:
			return []string{"in_recovery", "lsn", "timeline"},
				[][]driver.Value{{true, "0/3000060", args[0].Value}, {false, "0/0", int64(0)}}, nil
		case "SELECT * FROM nope", "DELETE FROM nope":
			return nil, nil, errNoTable
		case "SELECT bad":
			return []string{"a", "b"}, [][]driver.Value{{1}}, nil
		}
		return nil, nil, nil
	})

	rows, err := db.QueryContext(ctx, probe, int64(3))
	require.NoError(t, err)
	cols, err := rows.Columns()
	require.NoError(t, err)
	assert.Equal(t, []string{"in_recovery", "lsn", "timeline"}, cols)
	type answer struct {
		inRecovery bool
		lsn        string
		timeline   int
	}
	var got []answer
	for rows.Next() {
		var a answer
		require.NoError(t, rows.Scan(&a.inRecovery, &a.lsn, &a.timeline))
		got = append(got, a)
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	assert.Equal(t, []answer{{true, "0/3000060", 3}, {false, "0/0", 0}}, got)

	_, err = db.QueryContext(ctx, "SELECT * FROM nope")
	require.ErrorIs(t, err, errNoTable)
	_, err = db.ExecContext(ctx, "DELETE FROM nope")
	require.ErrorIs(t, err, errNoTable)
	res, err := db.ExecContext(ctx, "DELETE FROM t")
	require.NoError(t, err)
	n, err := res.RowsAffected()
	require.NoError(t, err)
	assert.EqualValues(t, 1, n)

	_, err = db.QueryContext(ctx, "SELECT bad")
	require.Error(t, err, "rows that don't match the columns are refused")

	rows, err = db.QueryContext(ctx, "SELECT empty")
	require.NoError(t, err)
	assert.False(t, rows.Next())
	require.NoError(t, rows.Close())

	c.SetResponder(nil)
	node, err := queryNode(ctx, db)
	require.NoError(t, err)
	assert.Equal(t, "replica1", node, "default answer restored")
}

func TestSetDown(t *testing.T) {
	ctx := testCtx(t)
	c := fakedriver.New("n")
	db := openDB(t, c)
	_, err := queryNode(ctx, db)
	require.NoError(t, err)
	require.Equal(t, 1, c.OpenConns())

	var hooked atomic.Int64
	c.SetHook(func(context.Context, fakedriver.Op, string) error {
		hooked.Add(1)
		return nil
	})
	c.SetDown(true)
	assert.True(t, c.IsDown())

	// The pooled conn fails with ErrBadConn, database/sql dials again and
	// gets connection refused.
	_, err = queryNode(ctx, db)
	var opErr *net.OpError
	require.ErrorAs(t, err, &opErr)
	assert.Equal(t, "dial", opErr.Op)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.ErrorIs(t, db.PingContext(ctx), syscall.ECONNREFUSED)
	assert.Zero(t, hooked.Load(), "the hook is not called while down")
	assert.Equal(t, 0, c.OpenConns(), "the broken conn was discarded")

	dc, err := c.Connect(ctx)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	assert.Nil(t, dc)

	c.SetDown(false)
	node, err := queryNode(ctx, db)
	require.NoError(t, err)
	assert.Equal(t, "n", node)
	assert.Positive(t, hooked.Load())

	t.Run("open conn breaks", func(t *testing.T) {
		dc, err := c.Connect(ctx)
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, dc.Close()) })
		c.SetDown(true)
		err = dc.(driver.Pinger).Ping(ctx)
		c.SetDown(false)
		require.ErrorIs(t, err, driver.ErrBadConn)
		assert.False(t, dc.(driver.Validator).IsValid(), "still broken after the node came back")
	})
}

func TestReset(t *testing.T) {
	ctx := testCtx(t)
	c := fakedriver.New("n")
	db := openDB(t, c)
	c.SetRecord(true)
	_, err := queryNode(ctx, db)
	require.NoError(t, err)
	require.NotEmpty(t, c.Calls())
	require.Equal(t, 1, c.Count(fakedriver.OpQuery))

	c.Reset()
	assert.Zero(t, c.Count(fakedriver.OpQuery))
	assert.Zero(t, c.Count(fakedriver.OpConnect))
	assert.Empty(t, c.Calls())
	assert.Equal(t, 1, c.OpenConns(), "Reset leaves open conns alone")

	_, err = queryNode(ctx, db)
	require.NoError(t, err)
	assert.Equal(t, []fakedriver.Call{{Op: fakedriver.OpQuery, SQL: "SELECT 1"}}, c.Calls(), "still recording")
}

func TestErrorSQLState(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		code     string
		contains string
	}{
		{"read only", fakedriver.ReadOnlyError(), "25006", "fakedriver: ERROR: cannot execute INSERT in a read-only transaction (SQLSTATE 25006)"},
		{"admin shutdown", fakedriver.AdminShutdownError(), "57P01", "(SQLSTATE 57P01)"},
		{"custom", &fakedriver.Error{Code: "40001", Message: "could not serialize access"}, "40001", "fakedriver: ERROR: could not serialize access (SQLSTATE 40001)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wrapped := fmt.Errorf("node replica1: %w", tt.err)
			var st sqlStater
			require.ErrorAs(t, wrapped, &st)
			assert.Equal(t, tt.code, st.SQLState())
			var fe *fakedriver.Error
			require.ErrorAs(t, wrapped, &fe)
			assert.Equal(t, tt.code, fe.Code)
			assert.Contains(t, tt.err.Error(), tt.contains)
		})
	}
	assert.NotSame(t, fakedriver.ReadOnlyError(), fakedriver.ReadOnlyError(), "a new value each call")
}

func TestDriver(t *testing.T) {
	ctx := testCtx(t)
	c := fakedriver.New("primary")

	t.Run("connector's driver", func(t *testing.T) {
		d := c.Driver()
		dc, err := d.Open("primary")
		require.NoError(t, err)
		assert.Equal(t, 1, c.OpenConns())
		require.NoError(t, dc.Close())
		require.NoError(t, dc.Close(), "closing twice is harmless")
		assert.Equal(t, 0, c.OpenConns())

		_, err = d.Open("other")
		require.ErrorIs(t, err, fakedriver.ErrUnknownName)
	})

	t.Run("registered", func(t *testing.T) {
		driverName, err := fakedriver.Register(c, fakedriver.New("r1"))
		require.NoError(t, err)
		for _, name := range []string{"primary", "r1"} {
			db, err := sql.Open(driverName, name)
			require.NoError(t, err)
			node, err := queryNode(ctx, db)
			require.NoError(t, err)
			assert.Equal(t, name, node)
			require.NoError(t, db.Close())
		}
		db, err := sql.Open(driverName, "r9")
		require.ErrorIs(t, err, fakedriver.ErrUnknownName)
		assert.Nil(t, db)
	})

	t.Run("bad configuration", func(t *testing.T) {
		_, err := fakedriver.NewDriver(c, fakedriver.New("primary"))
		require.Error(t, err)
		_, err = fakedriver.NewDriver(c, nil)
		require.Error(t, err)
		_, err = fakedriver.Register(c, c)
		require.Error(t, err)
	})
}

func TestConcurrentUse(t *testing.T) {
	ctx := testCtx(t)
	c := fakedriver.New("n")
	db := sql.OpenDB(c)
	t.Cleanup(func() { assert.NoError(t, db.Close()) })
	c.SetRecord(true)

	const workers, perWorker = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				switch i % 4 {
				case 0:
					c.SetHook(func(context.Context, fakedriver.Op, string) error { return nil })
				case 1:
					c.SetHook(nil)
				case 2:
					c.SetResponder(func(string, []driver.NamedValue) ([]string, [][]driver.Value, error) {
						return []string{"w"}, [][]driver.Value{{int64(w)}}, nil
					})
				case 3:
					c.SetResponder(nil)
				}
				var v any
				assert.NoError(t, db.QueryRowContext(ctx, "SELECT 1").Scan(&v))
				_ = c.Count(fakedriver.OpQuery)
				_ = c.Calls()
			}
		})
	}
	wg.Wait()
	assert.Equal(t, workers*perWorker, c.Count(fakedriver.OpQuery))
	assert.Equal(t, c.Count(fakedriver.OpQuery)+c.Count(fakedriver.OpConnect), len(c.Calls()))
}

func ExampleNew() {
	primary, replica := fakedriver.New("primary"), fakedriver.New("replica1")
	pdb, rdb := sql.OpenDB(primary), sql.OpenDB(replica)
	defer pdb.Close()
	defer rdb.Close()

	replica.SetHook(func(_ context.Context, op fakedriver.Op, _ string) error {
		if op == fakedriver.OpExec {
			return fakedriver.ReadOnlyError()
		}
		return nil
	})

	var node string
	_ = rdb.QueryRow("SELECT 1").Scan(&node)
	_, err := rdb.Exec("INSERT INTO t VALUES (1)")
	fmt.Println(node, replica.Count(fakedriver.OpQuery), primary.Count(fakedriver.OpQuery))
	fmt.Println(err)
	// Output:
	// replica1 1 0
	// fakedriver: ERROR: cannot execute INSERT in a read-only transaction (SQLSTATE 25006)
}

func BenchmarkQueryRow(b *testing.B) {
	ctx := context.Background()
	db := sql.OpenDB(fakedriver.New("n"))
	defer db.Close()
	b.ReportAllocs()
	var node string
	for b.Loop() {
		if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&node); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkQueryRowParallel(b *testing.B) {
	ctx := context.Background()
	db := sql.OpenDB(fakedriver.New("n"))
	defer db.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var node string
		for pb.Next() {
			if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&node); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkExec(b *testing.B) {
	ctx := context.Background()
	db := sql.OpenDB(fakedriver.New("n"))
	defer db.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := db.ExecContext(ctx, "UPDATE t SET x = 1"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBeginCommit(b *testing.B) {
	ctx := context.Background()
	db := sql.OpenDB(fakedriver.New("n"))
	defer db.Close()
	b.ReportAllocs()
	for b.Loop() {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDriverQuery measures the fake alone, without database/sql.
func BenchmarkDriverQuery(b *testing.B) {
	ctx := context.Background()
	dc, err := fakedriver.New("n").Connect(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer dc.Close()
	q := dc.(driver.QueryerContext)
	dest := make([]driver.Value, 1)
	b.ReportAllocs()
	for b.Loop() {
		rows, err := q.QueryContext(ctx, "SELECT 1", nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := rows.Next(dest); err != nil {
			b.Fatal(err)
		}
		_ = rows.Close()
	}
}
