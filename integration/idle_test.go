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

// TestIdleSessionTimeout runs the router on a server that ends every
// session idle for 300 ms (idle_session_timeout, set for the router's
// connections only), shorter than the probe interval: the connection the
// probes keep dies between probes, and so do the pools' idle connections.
// Beside it a raw *sql.DB on a replica shows what that does to statements.
// Through the router no read fails (a read that meets a dead connection,
// 57P05, runs again on another replica) and no probe fails, so not even
// WithFailureThreshold(1) marks a node down. (Before: 9-11 of 30 reads failed,
// as many as through the raw handle, and every other probe failed with
// 57P05, taken for the server's answer: the nodes' state stayed as the
// previous probe saw it.)
func TestIdleSessionTimeout(t *testing.T) {
	c := newCluster(t, 2)
	ctx := testContext(t, 2*time.Minute)
	const app = "dbrouter_idle_test"
	var dsns, names []string
	for _, n := range c.Nodes() {
		dsns = append(dsns, n.DSN()+"&idle_session_timeout=300ms&application_name="+app)
		names = append(names, n.Name())
	}
	var events eventLog
	db := openDSNs(t, dsns, names, dbrouter.WithEventHook(events.add), dbrouter.WithFailureThreshold(1))
	raw, err := sql.Open("pgx", dsns[1])
	require.NoError(t, err)
	defer raw.Close()

	// idled waits until the servers have ended every idle connection of
	// the router's and the raw handle's, well within the second after which
	// a pgx connection pings the server before it is reused.
	idled := func() {
		testwait.For(t, 10*time.Second, "the servers to end the idle sessions", func() (bool, error) {
			for _, n := range c.Nodes() {
				var left int
				if err := n.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '"+app+"' AND state = 'idle'", &left); err != nil || left > 0 {
					return false, err
				}
			}
			return true, nil
		})
	}
	const rounds, each = 10, 3
	var failed, rawFailed int
	var first, rawFirst error
	for range rounds {
		idled()
		for range each {
			if err := db.QueryRowContext(ctx, "SELECT 1").Scan(new(int)); err != nil {
				failed++
				first = err
			}
			if err := raw.QueryRowContext(ctx, "SELECT 1").Scan(new(int)); err != nil {
				rawFailed++
				rawFirst = err
			}
		}
	}
	t.Logf("REPORT: idle_session_timeout 300ms: %d of %d reads failed through the router, %d of %d through a raw handle (%v); events: %s",
		failed, rounds*each, rawFailed, rounds*each, rawFirst, events.String())
	assert.Positive(t, rawFailed, "the raw handle met no dead connection: the setup shows nothing")
	assert.Zero(t, failed, "reads failed through the router (last: %v)", first)
	for _, n := range db.Status().Nodes {
		assert.Equal(t, dbrouter.StateUp, n.State, n.Name)
		assert.NoError(t, n.LastError, "%s: a probe failed", n.Name)
	}
	assert.Zero(t, db.Status().EventCounts[dbrouter.EventNodeDown], "nodes marked down")
}
