package dbrouter

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
	"github.com/dbrouter/dbrouter/internal/testwait"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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
	testwait.Until(t, 10*time.Second, "the prepare to hang", func() bool { return f.conns[1].Count(fakedriver.OpPrepare) > 0 })
	assert.Equal(t, "primary", served(t, stmtRow{st}, UsePrimary(ctx), ""), "other nodes are not blocked")
	require.NoError(t, st.Close(), "Close is not blocked")
	close(release)
	assert.ErrorIs(t, <-hung, ErrClosed, "the statement prepared after Close is closed again")
}

func TestPrepareRoutedFollowsAFailover(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1)
	st, err := pc.db.PrepareRouted(ctx, "UPDATE t SET a = $1")
	require.NoError(t, err)
	defer st.Close()
	_, err = st.ExecContext(ctx, 1)
	require.NoError(t, err)
	pc.pg[0].fail.Store(true)
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(2)
	pc.probe()
	pc.probe()
	require.Equal(t, "replica1", pc.db.Status().Primary)
	_, err = st.ExecContext(ctx, 2)
	require.NoError(t, err)
	assert.Equal(t, 1, pc.conns[1].Count(fakedriver.OpPrepare), "prepared on the new primary when first needed")
	assert.Equal(t, 1, pc.conns[1].Count(fakedriver.OpExec))
	assert.Equal(t, 1, pc.conns[0].Count(fakedriver.OpExec))
}

// TestAStmtLetsGoOfNodesThatLeft: a long-lived Stmt under OpenDiscovered,
// whose member m2 moves back and forth between two addresses (each time a
// new node): it keeps no statement prepared on a node that left.
func TestAStmtLetsGoOfNodesThatLeft(t *testing.T) {
	ctx := context.Background()
	d := newDiscovered(t)
	st, err := d.db.PrepareRouted(ctx, "SELECT 1")
	require.NoError(t, err)
	defer st.Close()
	for i := range 5 {
		d.src.set(nil, d.member("m0", true), d.member("m1", false), Member{Name: "m2", DSN: []string{"m2", "m3"}[i%2]})
		d.round()
		for range 6 {
			require.NoError(t, st.QueryRowContext(ctx).Scan(new(string)))
		}
	}
	live := map[*node]bool{}
	for _, n := range d.db.nodeList() {
		live[n] = true
	}
	stale := 0
	st.on.Range(func(k, _ any) bool {
		if !live[k.(*node)] {
			stale++
		}
		return true
	})
	assert.Zero(t, stale, "statements kept for nodes that left")
}
