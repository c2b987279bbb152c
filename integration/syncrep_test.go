package integration

import (
	"database/sql"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/testwait"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSynchronousStandbyDown: the primary waits for a synchronous standby
// (synchronous_standby_names = node2) that is stopped, so every commit
// waits on the primary until node2 is back. That is the server's rule, not
// a failure: the router marks nothing down and promotes nothing (with
// WithAutoPromote(1s) on), reads go on from node1, and once node2 is back
// the waiting write commits, on node0.
func TestSynchronousStandbyDown(t *testing.T) {
	c := newCluster(t, 2)
	ctx := testContext(t, 2*time.Minute)
	p, r1, r2 := c.Primary(), c.Replicas()[0], c.Replicas()[1]
	require.NoError(t, p.Exec(ctx, "CREATE TABLE syncrep (id int)"))
	require.NoError(t, p.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = '"+r2.Name()+"'"))
	require.NoError(t, p.Exec(ctx, "SELECT pg_reload_conf()"))
	testwait.For(t, 30*time.Second, r2.Name()+" synchronous", func() (bool, error) {
		var n int
		err := p.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE application_name = '"+r2.Name()+"' AND sync_state = 'sync'", &n)
		return n == 1, err
	})
	var events eventLog
	db := openRouter(t, c, dbrouter.WithAutoPromote(time.Second), dbrouter.WithEventHook(events.add))
	require.Equal(t, p.Name(), servedBy(t, dbrouter.UsePrimary(ctx), db))

	require.NoError(t, r2.Stop(ctx))
	wrote := scanAsync(func() *sql.Row {
		return db.QueryRowContext(ctx, "INSERT INTO syncrep VALUES (1) RETURNING current_setting('cluster_name')")
	})
	testwait.For(t, 10*time.Second, "the write waiting for the synchronous standby", func() (bool, error) {
		var n int
		err := p.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'", &n)
		return n == 1, err
	})
	// Three times the promotion delay, reading all along: the write waits,
	// every read is served, by node1.
	began, reads := time.Now(), 0
	for time.Since(began) < 3*time.Second {
		assert.Equal(t, r1.Name(), servedBy(t, ctx, db), "read %d", reads)
		reads++
		select {
		case r := <-wrote:
			t.Fatalf("the write returned while the synchronous standby was down: %+v", r)
		default:
		}
	}
	st := db.Status()
	assert.Equal(t, p.Name(), st.Primary)
	s, _ := st.Node(p.Name())
	assert.Equal(t, dbrouter.StateUp, s.State, "the primary, whose commits wait for its standby")
	assert.Zero(t, st.EventCounts[dbrouter.EventPromoted]+st.EventCounts[dbrouter.EventPromoteFailed], "a promotion was tried")
	assert.False(t, events.has(dbrouter.EventNodeDown, p.Name()))
	assert.Zero(t, st.EventCounts[dbrouter.EventNoPrimary])

	require.NoError(t, r2.Start(ctx))
	select {
	case r := <-wrote:
		require.NoError(t, r.err)
		assert.Equal(t, p.Name(), r.node)
	case <-time.After(time.Minute):
		t.Fatal("the write never committed after the synchronous standby came back")
	}
	t.Logf("REPORT: synchronous standby %s down %v: the write waited, %d of %d reads served by %s meanwhile, 0 failed; primary up, 0 promotions; the write committed on %s once %s was back",
		r2.Name(), time.Since(began).Round(time.Millisecond), reads, reads, r1.Name(), p.Name(), r2.Name())
}
