package dbrouter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
)

// DBTX is the interface sqlc generates for database/sql.
type DBTX interface {
	ExecContext(context.Context, string, ...interface{}) (sql.Result, error)
	PrepareContext(context.Context, string) (*sql.Stmt, error)
	QueryContext(context.Context, string, ...interface{}) (*sql.Rows, error)
	QueryRowContext(context.Context, string, ...interface{}) *sql.Row
}

// ConnPool is gorm.ConnPool (gorm.io/gorm/interfaces.go).
type ConnPool interface {
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
	ExecContext(ctx context.Context, query string, args ...interface{}) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...interface{}) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...interface{}) *sql.Row
}

// sqlDB is the *sql.DB method set.
type sqlDB interface {
	DBTX
	Query(string, ...any) (*sql.Rows, error)
	QueryRow(string, ...any) *sql.Row
	Exec(string, ...any) (sql.Result, error)
	BeginTx(context.Context, *sql.TxOptions) (*sql.Tx, error)
	Begin() (*sql.Tx, error)
	Prepare(string) (*sql.Stmt, error)
	Conn(context.Context) (*sql.Conn, error)
	PingContext(context.Context) error
	Ping() error
	Close() error
	Stats() sql.DBStats
	Driver() driver.Driver
	SetMaxOpenConns(int)
	SetMaxIdleConns(int)
	SetConnMaxLifetime(time.Duration)
	SetConnMaxIdleTime(time.Duration)
}

var (
	_ DBTX     = (*DB)(nil)
	_ ConnPool = (*DB)(nil)
	_ sqlDB    = (*DB)(nil)
	_ sqlDB    = (*sql.DB)(nil) // the interface above is really *sql.DB's
)

func TestNewRejectsBadInput(t *testing.T) {
	f := newFakeNodes(t, 2)
	p, r1, r2 := f.dbs[0], f.dbs[1], f.dbs[2]
	tests := []struct {
		name     string
		primary  *sql.DB
		replicas []*sql.DB
		opts     []Option
		want     string
	}{
		{"nil primary", nil, nil, nil, "nil primary"},
		{"nil replica", p, []*sql.DB{r1, nil}, nil, "replica 1 is nil"},
		{"replica is primary", p, []*sql.DB{p}, nil, "is the primary"},
		{"same replica twice", p, []*sql.DB{r1, r1}, nil, "same handle"},
		{"nil option", p, nil, []Option{nil}, "nil Option"},
		{"zero probe interval", p, nil, []Option{WithProbeInterval(0)}, "WithProbeInterval"},
		{"negative probe timeout", p, nil, []Option{WithProbeTimeout(-time.Second)}, "WithProbeTimeout"},
		{"zero failure threshold", p, nil, []Option{WithFailureThreshold(0)}, "WithFailureThreshold"},
		{"negative primary wait", p, nil, []Option{WithPrimaryWait(-1)}, "WithPrimaryWait"},
		{"zero auto promote", p, nil, []Option{WithAutoPromote(0)}, "WithAutoPromote"},
		{"negative max lag", p, nil, []Option{WithMaxLag(-1, 0)}, "WithMaxLag"},
		{"zero backoff", p, nil, []Option{WithMaxBackoff(0)}, "WithMaxBackoff"},
		{"nil balancer", p, nil, []Option{WithBalancer(nil)}, "nil balancer"},
		{"nil dialect", p, nil, []Option{WithDialect(nil)}, "nil dialect"},
		{"nil logger", p, nil, []Option{WithLogger(nil)}, "nil logger"},
		{"nil hook", p, nil, []Option{WithEventHook(nil)}, "nil hook"},
		{"nil router", p, nil, []Option{WithRouter(nil)}, "router 0 is nil"},
		{"names count", p, []*sql.DB{r1}, []Option{WithNames("a")}, "1 names for 2 nodes"},
		{"names repeat", p, []*sql.DB{r1, r2}, []Option{WithNames("a", "b", "a")}, `"a" is used twice`},
		{"empty name", p, []*sql.DB{r1}, []Option{WithNames("a", "")}, "name 1 is empty"},
		{"zero session mode", p, nil, []Option{WithSessionMode(SessionMode{})}, "zero SessionMode"},
		{"zero session window", p, nil, []Option{WithSessionMode(SessionTime(0))}, "SessionTime"},
		{"negative causal wait", p, nil, []Option{WithSessionMode(SessionCausal(-1))}, "SessionCausal"},
		{"auto promote without PostgreSQL", p, nil, []Option{WithDialect(Generic()), WithAutoPromote(time.Second)}, "WithAutoPromote needs the PostgreSQL dialect"},
		{"max lag without PostgreSQL", p, nil, []Option{WithDialect(Generic()), WithMaxLag(1, 0)}, "WithMaxLag needs the PostgreSQL dialect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := New(tt.primary, tt.replicas, tt.opts...)
			require.Error(t, err)
			assert.Nil(t, db)
			assert.Contains(t, err.Error(), tt.want)
			assert.True(t, strings.HasPrefix(err.Error(), "dbrouter: "), err.Error())
		})
	}
}

func TestOpenRejectsBadInputAndClosesWhatItOpened(t *testing.T) {
	p, r1 := fakedriver.New("p"), fakedriver.New("r1")
	drv, err := fakedriver.Register(p, r1)
	require.NoError(t, err)
	tests := []struct {
		name     string
		driver   string
		primary  string
		replicas []string
		opts     []Option
		want     string
		closes   int // handles Open opened and must have closed again
	}{
		{"empty driver", "", "p", nil, nil, "empty driver name", 0},
		{"unknown driver", "no-such-driver", "p", nil, nil, `unknown driver "no-such-driver"`, 0},
		{"empty primary DSN", drv, "", nil, nil, "empty primary DSN", 0},
		{"empty replica DSN", drv, "p", []string{"r1", ""}, nil, "replica DSN 1 is empty", 0},
		{"same DSN twice", drv, "p", []string{"p"}, nil, "given twice", 0},
		{"third DSN fails to open", drv, "p", []string{"r1", "nope"}, nil, "nope", 2},
		{"bad option after opening", drv, "p", []string{"r1"}, []Option{WithProbeInterval(-1)}, "WithProbeInterval", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := p.Closes() + r1.Closes()
			db, err := Open(tt.driver, tt.primary, tt.replicas, tt.opts...)
			require.Error(t, err)
			assert.Nil(t, db)
			assert.Contains(t, err.Error(), tt.want)
			assert.Equal(t, tt.closes, p.Closes()+r1.Closes()-before, "handles closed again")
		})
	}
}

func TestOpenClosesItsHandlesNewLeavesThemOpen(t *testing.T) {
	p, r1 := fakedriver.New("p"), fakedriver.New("r1")
	drv, err := fakedriver.Register(p, r1)
	require.NoError(t, err)
	db, err := Open(drv, "p", []string{"r1"}, WithDialect(Generic()))
	require.NoError(t, err)
	assert.Equal(t, "r1", served(t, db, context.Background(), "SELECT 1"))
	require.NoError(t, db.Close())
	assert.Equal(t, 1, p.Closes())
	assert.Equal(t, 1, r1.Closes())

	f := newFakeNodes(t, 1)
	db2, err := New(f.dbs[0], f.dbs[1:], WithDialect(Generic()))
	require.NoError(t, err)
	require.NoError(t, db2.Close())
	assert.NoError(t, f.dbs[0].Ping(), "New's handles stay open")
	assert.NoError(t, f.dbs[1].Ping(), "New's handles stay open")
}

func TestRoutingRules(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 2)
	db := f.router(t)

	t.Run("reads round-robin over replicas", func(t *testing.T) {
		counts := map[string]int{}
		for range 100 {
			counts[served(t, db, ctx, "SELECT * FROM users WHERE id = $1")]++
		}
		assert.Equal(t, map[string]int{"replica1": 50, "replica2": 50}, counts)
	})
	t.Run("Query reads go to replicas", func(t *testing.T) {
		assert.Contains(t, firstRow(t, db, ctx, "select 1"), "replica")
	})
	writes := map[string]string{
		"INSERT RETURNING":   "INSERT INTO t (a) VALUES (1) RETURNING id",
		"SELECT FOR UPDATE":  "SELECT * FROM t WHERE id = 1 FOR UPDATE",
		"data-modifying CTE": "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
		"nextval":            "SELECT nextval('s')",
		"two statements":     "SELECT 1; SELECT 2",
	}
	for name, q := range writes {
		t.Run("write query to primary: "+name, func(t *testing.T) {
			assert.Equal(t, "primary", served(t, db, ctx, q))
		})
	}
	t.Run("Exec to primary", func(t *testing.T) {
		before := f.conns[0].Count(fakedriver.OpExec)
		_, err := db.ExecContext(ctx, "UPDATE t SET a = 1")
		require.NoError(t, err)
		assert.Equal(t, before+1, f.conns[0].Count(fakedriver.OpExec))
		assert.Zero(t, f.conns[1].Count(fakedriver.OpExec)+f.conns[2].Count(fakedriver.OpExec))
	})
	txTests := []struct {
		name string
		opts *sql.TxOptions
		want string // "primary" or "replica"
	}{
		{"read-write tx", nil, "primary"},
		{"read-only tx", &sql.TxOptions{ReadOnly: true}, "replica"},
		{"read-only serializable tx", &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelSerializable}, "primary"},
		{"read-only repeatable read tx", &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}, "replica"},
	}
	for _, tt := range txTests {
		t.Run(tt.name, func(t *testing.T) {
			tx, err := db.BeginTx(ctx, tt.opts)
			require.NoError(t, err)
			defer tx.Rollback()
			for range 3 { // pinned: every statement on the same node
				assert.Contains(t, served(t, tx, ctx, "SELECT 1"), tt.want)
			}
		})
	}
	t.Run("Conn on primary", func(t *testing.T) {
		c, err := db.Conn(ctx)
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, "primary", served(t, c, ctx, "SELECT 1"))
	})
	t.Run("UsePrimary forces the primary", func(t *testing.T) {
		pctx := UsePrimary(ctx)
		for range 4 {
			assert.Equal(t, "primary", served(t, db, pctx, "SELECT 1"))
		}
		tx, err := db.BeginTx(pctx, &sql.TxOptions{ReadOnly: true})
		require.NoError(t, err)
		defer tx.Rollback()
		assert.Equal(t, "primary", served(t, tx, ctx, "SELECT 1"))
	})
	t.Run("Prepare on the node serving the SQL", func(t *testing.T) {
		st, err := db.PrepareContext(ctx, "SELECT 1")
		require.NoError(t, err)
		defer st.Close()
		assert.Contains(t, served(t, st2row{st}, ctx, ""), "replica")
		wst, err := db.PrepareContext(ctx, "INSERT INTO t VALUES (1) RETURNING 1")
		require.NoError(t, err)
		defer wst.Close()
		assert.Equal(t, "primary", served(t, st2row{wst}, ctx, ""))
	})
	t.Run("Primary and Replica escape hatches", func(t *testing.T) {
		assert.Same(t, f.dbs[0], db.Primary())
		r := db.Replica()
		assert.True(t, r == f.dbs[1] || r == f.dbs[2])
	})
}

// st2row adapts a *sql.Stmt to served.
type st2row struct{ st *sql.Stmt }

func (s st2row) QueryRowContext(ctx context.Context, _ string, args ...any) *sql.Row {
	return s.st.QueryRowContext(ctx, args...)
}

func TestReadOnlyTxOnReplicaOff(t *testing.T) {
	f := newFakeNodes(t, 1)
	db := f.router(t, WithReadOnlyTxOnReplica(false))
	tx, err := db.BeginTx(context.Background(), &sql.TxOptions{ReadOnly: true})
	require.NoError(t, err)
	defer tx.Rollback()
	assert.Equal(t, "primary", served(t, tx, context.Background(), "SELECT 1"))
}

func TestZeroReplicasEverythingOnPrimary(t *testing.T) {
	f := newFakeNodes(t, 0)
	db := f.router(t)
	ctx := context.Background()
	for range 3 {
		assert.Equal(t, "primary", served(t, db, ctx, "SELECT 1"))
	}
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	require.NoError(t, err)
	assert.Equal(t, "primary", served(t, tx, ctx, "SELECT 1"))
	require.NoError(t, tx.Rollback())
	assert.Same(t, f.dbs[0], db.Replica())
}

func TestBalancers(t *testing.T) {
	ctx := context.Background()
	t.Run("random reaches every replica", func(t *testing.T) {
		f := newFakeNodes(t, 3)
		db := f.router(t, WithBalancer(Random()))
		counts := map[string]int{}
		for range 300 {
			counts[served(t, db, ctx, "SELECT 1")]++
		}
		assert.Len(t, counts, 3)
		assert.Zero(t, counts["primary"])
	})
	t.Run("least in flight avoids the busy replica", func(t *testing.T) {
		f := newFakeNodes(t, 2)
		db := f.router(t, WithBalancer(LeastInFlight()))
		// Hold rows open on replica1 (through its handle, so it is in use).
		rows, err := f.dbs[1].QueryContext(ctx, "SELECT 1")
		require.NoError(t, err)
		defer rows.Close()
		for range 10 {
			assert.Equal(t, "replica2", served(t, db, ctx, "SELECT 1"))
		}
	})
}

func TestCustomRouters(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 2)
	var seen []string
	db := f.router(t, WithNames("main", "r-a", "r-b"), WithRouter(
		func(_ context.Context, q string, write bool) Target {
			seen = append(seen, q)
			switch {
			case strings.Contains(q, "FROM billing"):
				return Primary
			case strings.Contains(q, "/* analytics */"):
				return NodeNamed("r-b")
			case strings.Contains(q, "/* to-replica */"):
				return Replica
			case strings.Contains(q, "/* unknown */"):
				return NodeNamed("nope")
			}
			return Default
		},
		func(_ context.Context, q string, write bool) Target {
			if strings.Contains(q, "FROM billing") {
				return NodeNamed("r-a") // never reached: the first router answered
			}
			return Default
		},
	))
	assert.Equal(t, "primary", served(t, db, ctx, "SELECT * FROM billing"))
	for range 4 {
		assert.Equal(t, "replica2", served(t, db, ctx, "SELECT /* analytics */ count(*) FROM events"))
	}
	// A router never sends a write to a replica.
	assert.Equal(t, "primary", served(t, db, ctx, "INSERT INTO events VALUES (1) RETURNING /* analytics */ 1"))
	assert.Equal(t, "primary", served(t, db, ctx, "INSERT INTO events VALUES (1) RETURNING /* to-replica */ 1"))
	_, err := db.ExecContext(ctx, "DELETE FROM events /* analytics */")
	require.NoError(t, err)
	assert.Zero(t, f.conns[2].Count(fakedriver.OpExec))
	// Unknown names fall back to the built-in rules.
	assert.Contains(t, served(t, db, ctx, "SELECT /* unknown */ 1"), "replica")
	assert.Contains(t, seen, "SELECT * FROM billing")

	// A down node is never chosen, whatever the router says.
	f.conns[2].SetDown(true)
	db.probeAll()
	db.probeAll() // two failures: down
	st := db.Status()
	rb, _ := st.Node("r-b")
	require.Equal(t, StateDown, rb.State)
	for range 4 {
		assert.Equal(t, "replica1", served(t, db, ctx, "SELECT /* analytics */ 1"))
	}
	assert.Equal(t, "Target node(r-b)", "Target "+NodeNamed("r-b").String())
}

func TestReplicaFallback(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 1)
	f.conns[1].SetDown(true)
	on := f.router(t)
	off := f.router(t, WithReplicaFallback(false))
	for _, db := range []*DB{on, off} {
		db.probeAll() // New probed once; this is the second failure
	}
	assert.Equal(t, "primary", served(t, on, ctx, "SELECT 1"))
	err := off.QueryRowContext(ctx, "SELECT 1").Scan(new(string))
	assert.ErrorIs(t, err, ErrNoReplica)
	_, err = off.QueryContext(ctx, "SELECT 1")
	assert.ErrorIs(t, err, ErrNoReplica)
	// Writes don't need a replica.
	_, err = off.ExecContext(ctx, "DELETE FROM t")
	assert.NoError(t, err)
}

func TestMisroutedReadRunsAgainOnPrimary(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 1)
	f.conns[1].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
		if op == fakedriver.OpQuery && strings.Contains(q, "my_volatile") {
			return fakedriver.ReadOnlyError()
		}
		return nil
	})
	db := f.router(t)
	assert.Equal(t, "primary", served(t, db, ctx, "SELECT my_volatile()"))
	assert.Equal(t, "primary", firstRow(t, db, ctx, "SELECT my_volatile()"))

	st := db.Status()
	r, _ := st.Node("replica1")
	assert.Equal(t, uint64(2), r.Misroutes)
	assert.Equal(t, uint64(2), r.Errors)
	p, _ := st.Node("primary")
	assert.Equal(t, uint64(2), p.Reads)
	// Other reads still go to the replica.
	assert.Equal(t, "replica1", served(t, db, ctx, "SELECT 1"))
}

func TestReadRetriedOnceOnConnectionError(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 2)
	db := f.router(t, withoutBackground())
	f.conns[1].SetDown(true) // the router does not probe it: the errors alone must not mark it down
	for range 6 {
		n := served(t, db, ctx, "SELECT 1")
		assert.NotEqual(t, "replica1", n)
	}
	r1, _ := db.Status().Node("replica1")
	assert.Equal(t, uint64(3), r1.Retries)
	assert.Equal(t, uint64(3), r1.Errors)

	// Both replicas and then the retry target failing: the error names the node.
	f.conns[2].SetDown(true)
	f.conns[0].SetDown(true)
	_, err := db.QueryContext(ctx, "SELECT 1")
	var ne *NodeError
	require.ErrorAs(t, err, &ne)
	assert.Contains(t, []string{"primary", "replica1", "replica2"}, ne.Node)
}

func TestWritesAreNeverRetried(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 1)
	db := f.router(t)
	f.conns[0].SetHook(func(_ context.Context, op fakedriver.Op, _ string) error {
		if op == fakedriver.OpExec || op == fakedriver.OpQuery {
			return fakedriver.AdminShutdownError()
		}
		return nil
	})
	_, err := db.ExecContext(ctx, "UPDATE t SET a = 1")
	var ne *NodeError
	require.ErrorAs(t, err, &ne)
	assert.Equal(t, "primary", ne.Node)
	assert.Equal(t, "exec", ne.Op)
	assert.Equal(t, "57P01", sqlState(err))
	err = db.QueryRowContext(ctx, "INSERT INTO t VALUES (1) RETURNING 1").Scan(new(string))
	assert.Equal(t, "57P01", sqlState(err))
	assert.Equal(t, 1, f.conns[0].Count(fakedriver.OpExec))
	assert.Equal(t, 0, f.conns[1].Count(fakedriver.OpExec)+f.conns[1].Count(fakedriver.OpQuery))
}

func TestUseAfterClose(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 1)
	db := f.router(t)
	st, err := db.PrepareRouted(ctx, "SELECT 1")
	require.NoError(t, err)
	require.NoError(t, db.Close())
	require.NoError(t, db.Close(), "Close is idempotent")

	_, err = db.QueryContext(ctx, "SELECT 1")
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, db.QueryRowContext(ctx, "SELECT 1").Scan(new(string)), ErrClosed)
	assert.ErrorIs(t, db.QueryRow("SELECT 1").Err(), ErrClosed)
	_, err = db.ExecContext(ctx, "DELETE FROM t")
	assert.ErrorIs(t, err, ErrClosed)
	_, err = db.BeginTx(ctx, nil)
	assert.ErrorIs(t, err, ErrClosed)
	_, err = db.Begin()
	assert.ErrorIs(t, err, ErrClosed)
	_, err = db.Prepare("SELECT 1")
	assert.ErrorIs(t, err, ErrClosed)
	_, err = db.PrepareRouted(ctx, "SELECT 1")
	assert.ErrorIs(t, err, ErrClosed)
	_, err = db.Conn(ctx)
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, db.Ping(), ErrClosed)
	_, err = st.Query()
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, st.QueryRow().Scan(new(string)), ErrClosed)
	_, err = st.Exec()
	assert.ErrorIs(t, err, ErrClosed)
	assert.NoError(t, st.Close())
	// Still no panic from the rest.
	_ = db.Stats()
	_ = db.Status()
	assert.NotNil(t, db.Driver())
}

func TestPrepareRoutedRoutesPerCallAndPreparesLazily(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 2)
	db := f.router(t)
	st, err := db.PrepareRouted(ctx, "SELECT name FROM users WHERE id = $1")
	require.NoError(t, err)
	counts := map[string]int{}
	for range 10 {
		var n string
		require.NoError(t, st.QueryRowContext(ctx, 1).Scan(&n))
		counts[n]++
	}
	assert.Equal(t, map[string]int{"replica1": 5, "replica2": 5}, counts)
	assert.Equal(t, 0, f.conns[0].Count(fakedriver.OpPrepare))
	assert.Equal(t, 1, f.conns[1].Count(fakedriver.OpPrepare))
	assert.Equal(t, 1, f.conns[2].Count(fakedriver.OpPrepare))

	rows, err := st.Query(1)
	require.NoError(t, err)
	require.NoError(t, rows.Close())
	assert.Equal(t, "primary", served(t, stmtRow{st}, UsePrimary(ctx), ""))

	w, err := db.PrepareRouted(ctx, "UPDATE users SET name = $1")
	require.NoError(t, err)
	_, err = w.ExecContext(ctx, "x")
	require.NoError(t, err)
	assert.Equal(t, 1, f.conns[0].Count(fakedriver.OpExec))
	require.NoError(t, st.Close())
	require.NoError(t, w.Close())
	_, err = st.Query(1)
	assert.ErrorIs(t, err, ErrClosed)
}

type stmtRow struct{ st *Stmt }

func (s stmtRow) QueryRowContext(ctx context.Context, _ string, args ...any) *sql.Row {
	return s.st.QueryRowContext(ctx, args...)
}

func TestStatsPingAndPoolSettings(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 2)
	db := f.router(t)
	db.SetMaxOpenConns(7)
	db.SetMaxIdleConns(3)
	db.SetConnMaxLifetime(time.Minute)
	db.SetConnMaxIdleTime(time.Minute)
	for _, h := range f.dbs {
		assert.Equal(t, 7, h.Stats().MaxOpenConnections)
	}
	assert.Equal(t, 21, db.Stats().MaxOpenConnections)
	require.NoError(t, db.PingContext(ctx))

	f.conns[0].SetHook(func(_ context.Context, op fakedriver.Op, _ string) error {
		if op == fakedriver.OpPing {
			return errors.New("boom")
		}
		return nil
	})
	err := db.PingContext(ctx)
	var ne *NodeError
	require.ErrorAs(t, err, &ne)
	assert.Equal(t, "primary", ne.Node)
}

func TestStatusCountsAndNames(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 1)
	db := f.router(t)
	for range 3 {
		served(t, db, ctx, "SELECT 1")
	}
	_, err := db.ExecContext(ctx, "DELETE FROM t")
	require.NoError(t, err)
	s := db.Status()
	require.Len(t, s.Nodes, 2)
	assert.Equal(t, "primary", s.Primary)
	p, r := s.Nodes[0], s.Nodes[1]
	assert.Equal(t, RolePrimary, p.ConfiguredRole)
	assert.Equal(t, RoleReplica, r.ConfiguredRole)
	assert.Equal(t, StateUp, r.State)
	assert.True(t, r.Readable)
	assert.Equal(t, uint64(1), p.Writes)
	assert.Equal(t, uint64(3), r.Reads)
	// A copy: changing it changes nothing.
	s.Nodes[0].Name = "changed"
	assert.Equal(t, "primary", db.Status().Nodes[0].Name)
}

func TestNameFromDSN(t *testing.T) {
	tests := []struct{ dsn, want string }{
		{"postgres://app:s3cret@db1.internal:5433/orders?sslmode=disable", "db1.internal:5433/orders"},
		{"postgresql://app@10.0.0.1/orders", "10.0.0.1/orders"},
		{"host=db2 port=6432 user=app password=s3cret dbname=orders", "db2:6432/orders"},
		{"host=db2 password='s3cret' dbname=orders", "db2:5432/orders"},
		{"app:s3cret@tcp(db3:3306)/orders?parseTime=true", "db3:3306/orders"},
		{"file:test.db", "node4"},
		{"host=db1 dbname=app password='x dbname=s3cret'", "db1:5432/app"},
		{`host=db1 password='it\'s s3cret' dbname='my db'`, "db1:5432/my db"},
		{"host=db1 password='unterminated s3cret", "node4"},
	}
	for _, tt := range tests {
		t.Run(tt.dsn, func(t *testing.T) {
			got := nameFromDSN(tt.dsn, 4)
			assert.Equal(t, tt.want, got)
			assert.NotContains(t, got, "s3cret")
		})
	}
	assert.Equal(t, []string{"a", "b", "a#2"}, uniqueNames([]string{"a", "b", "a"}))
}

func TestStmtHungPrepareBlocksOnlyItsNode(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 1)
	db := f.router(t, withoutBackground())
	st, err := db.PrepareRouted(UsePrimary(ctx), "SELECT 1") // prepared on the primary only
	require.NoError(t, err)
	release := make(chan struct{})
	f.conns[1].SetHook(func(ctx context.Context, op fakedriver.Op, _ string) error {
		if op == fakedriver.OpPrepare {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	hung := make(chan error, 1)
	go func() { // routed to the replica, whose prepare hangs
		hung <- st.QueryRowContext(ctx).Scan(new(string))
	}()
	waitFor(t, 10*time.Second, "the prepare to hang", func() bool { return f.conns[1].Count(fakedriver.OpPrepare) > 0 })
	assert.Equal(t, "primary", served(t, stmtRow{st}, UsePrimary(ctx), ""), "other nodes are not blocked")
	require.NoError(t, st.Close(), "Close is not blocked")
	close(release)
	assert.ErrorIs(t, <-hung, ErrClosed, "the statement prepared after Close is closed again")
}

// firstRow runs query through QueryContext and returns the first column of
// its first row: the node that served it, on the fake driver.
func firstRow(t *testing.T, db *DB, ctx context.Context, query string) string {
	t.Helper()
	rows, err := db.QueryContext(ctx, query)
	require.NoError(t, err)
	defer rows.Close()
	require.True(t, rows.Next())
	var n string
	require.NoError(t, rows.Scan(&n))
	return n
}
