package dbrouter

import (
	"context"
	"strings"
	"testing"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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

func TestRoutersNeverGetAFencedOrLaggingNode(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2, WithMaxLag(100, 0), WithRouter(func(_ context.Context, q string, _ bool) Target {
		return NodeNamed(q[len("SELECT /* ") : len(q)-len(" */ 1")])
	}))
	// replica1 is promoted; the configured primary is fenced; replica2 lags.
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(2)
	pc.pg[1].lsn.Store(10_000)
	pc.pg[2].timeline.Store(2)
	pc.pg[2].lsn.Store(10)
	pc.probe()
	pc.probe()
	require.Equal(t, StateFenced, nodeStatus(t, pc.db, "primary").State)
	require.True(t, nodeStatus(t, pc.db, "replica2").LagExcluded)
	assert.Equal(t, "replica1", served(t, pc.db, ctx, "SELECT /* primary */ 1"), "not the fenced node")
	assert.Equal(t, "replica1", served(t, pc.db, ctx, "SELECT /* replica2 */ 1"), "not the lagging replica")
}
