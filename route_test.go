package dbrouter

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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

func TestSwappedConfigurationWritesGoToTheRealPrimary(t *testing.T) {
	// The DSNs were given the wrong way round (or a failover happened while
	// the application was down): the first probe round in New fixes it
	// before any statement runs.
	f := newFakeNodes(t, 1)
	newFakePG(f.conns[0], true, 2)  // configured primary, really a replica
	newFakePG(f.conns[1], false, 2) // configured replica, really the primary
	db, err := New(f.dbs[0], f.dbs[1:], WithProbeInterval(time.Hour))
	require.NoError(t, err)
	defer db.Close()
	_, err = db.ExecContext(context.Background(), "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	assert.Equal(t, 1, f.conns[1].Count(fakedriver.OpExec))
	assert.Zero(t, f.conns[0].Count(fakedriver.OpExec))
	assert.Equal(t, "primary", served(t, db, context.Background(), "SELECT 1"), "its reads go to the real replica")
}
