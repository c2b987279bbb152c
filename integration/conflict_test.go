package integration

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/testwait"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRecoveryConflict: a hot standby cancels a read that holds back the
// WAL it replays (max_standby_streaming_delay, here 50 ms on replica1,
// hot_standby_feedback off everywhere: the primary vacuumed rows the read's
// snapshot still needed) with 40001,
// "canceling statement due to conflict with recovery". Through a raw handle
// on the replica the read fails; through the router it runs once more on
// another node and succeeds, and replica1 stays up. (Before: the router
// returned the 40001, as the raw handle does.)
func TestRecoveryConflict(t *testing.T) {
	c := newCluster(t, 2)
	ctx := testContext(t, 2*time.Minute)
	p, r1 := c.Primary(), c.Replicas()[0]
	for _, r := range c.Replicas() { // the harness turns feedback on; a replica's xmin would keep the rows
		require.NoError(t, r.Exec(ctx, "ALTER SYSTEM SET hot_standby_feedback = off"))
	}
	require.NoError(t, r1.Exec(ctx, "ALTER SYSTEM SET max_standby_streaming_delay = '50ms'"))
	for _, r := range c.Replicas() {
		require.NoError(t, r.Exec(ctx, "SELECT pg_reload_conf()"))
	}
	testwait.For(t, 30*time.Second, "the replicas' xmin gone from the primary", func() (bool, error) {
		var held int
		err := p.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_stat_replication WHERE backend_xmin IS NOT NULL)
			+ (SELECT count(*) FROM pg_replication_slots WHERE xmin IS NOT NULL)`, &held)
		return held == 0, err
	})
	require.NoError(t, p.Exec(ctx, "CREATE TABLE conflict (id int)"))
	db := openRouter(t, c)
	raw, err := r1.Open()
	require.NoError(t, err)
	defer raw.Close()

	// The read holds its snapshot for a second; while it runs on replica1,
	// the primary deletes and vacuums the rows it could see.
	const long = "SELECT current_setting('cluster_name') FROM pg_sleep(1)"
	conflict := func(q interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}) (string, error) {
		require.NoError(t, p.Exec(ctx, "INSERT INTO conflict SELECT generate_series(1, 1000)"))
		waitCaughtUp(t, ctx, c)
		done := scanAsync(func() *sql.Row { return q.QueryRowContext(ctx, long) })
		testwait.For(t, 10*time.Second, "the read running on replica1", func() (bool, error) {
			var n int
			err := r1.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%FROM pg_sleep(1)%' AND state = 'active' AND pid <> pg_backend_pid()", &n)
			return n == 1, err
		})
		require.NoError(t, p.Exec(ctx, "DELETE FROM conflict"))
		require.NoError(t, p.Exec(ctx, "VACUUM conflict"))
		select {
		case a := <-done:
			return a.node, a.err
		case <-time.After(30 * time.Second):
			t.Fatal("the read never ended")
			return "", nil
		}
	}

	_, err = conflict(raw)
	var pe *pgconn.PgError
	require.ErrorAs(t, err, &pe, "the raw handle's read was not cancelled: the setup shows nothing")
	require.Equal(t, "40001", pe.Code, "%v", err)
	t.Logf("raw handle on %s: %v", r1.Name(), err)

	const rounds = 3
	var served []string
	for i := range rounds {
		// Round robin: after a read on replica2, the next goes to replica1.
		testwait.For(t, 10*time.Second, "a read on replica2", func() (bool, error) {
			return servedBy(t, ctx, db) == c.Replicas()[1].Name(), nil
		})
		name, err := conflict(db)
		require.NoError(t, err, "round %d: the cancelled read was not run again", i)
		served = append(served, name)
		assert.NotEqual(t, r1.Name(), name, "round %d", i)
	}
	s, _ := db.Status().Node(r1.Name())
	t.Logf("REPORT: recovery conflicts on %s: the raw handle's read failed (40001); %d of %d routed reads ran again, on %v, 0 failed; %s retries %d, state %s",
		r1.Name(), rounds, rounds, served, r1.Name(), s.Retries, s.State)
	assert.Equal(t, uint64(rounds), s.Retries)
	assert.Equal(t, dbrouter.StateUp, s.State)
}
