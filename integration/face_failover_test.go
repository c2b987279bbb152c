package integration

import (
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/testwait"
)

// TestFailoverQueuedWrite: a write through SQL() or a prepared statement,
// routed to the primary and queued for one of its connections (the pool
// exhausted) while a replica is promoted and the old primary fenced, lands
// on the new primary once a connection is free: it is routed again when it
// is about to be sent, not when it was called. (It once ran on the fenced
// node.)
func TestFailoverQueuedWrite(t *testing.T) {
	for _, f := range []face{viaSQL, viaStmts} {
		t.Run("through "+string(f), func(t *testing.T) {
			c := newCluster(t, 2)
			ctx := testContext(t, 2*time.Minute)
			n0, n1 := c.Primary(), c.Replicas()[0]
			db := openRouter(t, c)
			db.SetMaxOpenConns(1)
			createLoadTable(t, ctx, db, "queued_t")
			waitReplicated(t, ctx, c, "queued_t")
			_, write := f.statements(t, db, "queued_t")

			// The primary's one connection is busy in a transaction.
			tx, err := db.BeginTx(ctx, nil)
			require.NoError(t, err)
			var txNode string
			require.NoError(t, tx.QueryRowContext(ctx, whoServes).Scan(&txNode))
			require.Equal(t, n0.Name(), txNode)
			waits := nodeStatus(t, db, n0.Name()).Pool.WaitCount

			done := scanAsync(func() *sql.Row { return write(ctx, 1) })
			testwait.Until(t, time.Minute, "the write queued for the primary's connection", func() bool {
				return nodeStatus(t, db, n0.Name()).Pool.WaitCount > waits
			})

			promote(t, ctx, n1) // n0 keeps running as a primary, on the older timeline
			testwait.Until(t, time.Minute, "node1 the primary, node0 fenced", func() bool {
				return db.Status().Primary == n1.Name() && nodeStatus(t, db, n0.Name()).State == dbrouter.StateFenced
			})
			before := nodeStatus(t, db, n0.Name())
			require.Error(t, tx.Commit(), "a transaction on the node that lost its role")

			var r outcome
			select {
			case r = <-done:
			case <-ctx.Done():
				t.Fatal("the queued write never returned")
			}
			require.NoError(t, r.err)
			assert.Equal(t, n1.Name(), r.node, "the queued write ran on the new primary")
			var rows int
			require.NoError(t, n0.QueryRow(ctx, "SELECT count(*) FROM queued_t", &rows))
			assert.Zero(t, rows, "nothing was written on the fenced node")
			assert.Equal(t, before.Writes, nodeStatus(t, db, n0.Name()).Writes)
		})
	}
}
