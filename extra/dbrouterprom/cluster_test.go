package dbrouterprom

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/pgcluster"
	"github.com/dbrouter/dbrouter/internal/testwait"
)

// TestCollectorOnCluster scrapes a DB over a real PostgreSQL primary and two
// streaming replicas (internal/pgcluster), its nodes named by their
// cluster_name. Skipped under -short.
func TestCollectorOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster: skipped under -short")
	}
	c := pgcluster.StartT(t, pgcluster.Options{Replicas: 2})
	var dsns, names []string
	for _, n := range c.Nodes() {
		dsns = append(dsns, n.DSN())
		names = append(names, n.Name())
	}
	primary, replicas := names[0], names[1:]
	h := newHistogram(t)
	// A generous probe timeout: a busy machine must not mark a healthy node
	// down while the test counts where statements went.
	db, err := dbrouter.Open("pgx", dsns[0], dsns[1:], dbrouter.WithNames(primary, replicas...),
		dbrouter.WithStatementHook(h.Observe), dbrouter.WithProbeTimeout(10*time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, db.Close()) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(NewCollector(db)))
	require.NoError(t, reg.Register(h))
	scrape := func() map[string]float64 {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		return values(mfs)
	}
	testwait.Until(t, 20*time.Second, "both replicas readable", func() bool {
		v := scrape()
		return v[`dbrouter_node_readable{node="`+replicas[0]+`"}`] == 1 && v[`dbrouter_node_readable{node="`+replicas[1]+`"}`] == 1
	})

	reads := func(v map[string]float64) float64 {
		return v[`dbrouter_statements_total{node="`+replicas[0]+`",route="read"}`] +
			v[`dbrouter_statements_total{node="`+replicas[1]+`",route="read"}`]
	}
	before := scrape()
	for range 6 {
		var name string
		require.NoError(t, db.QueryRowContext(ctx, "SELECT current_setting('cluster_name')").Scan(&name))
		assert.Contains(t, replicas, name)
	}
	_, err = db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS dbrouterprom_t (id int)")
	require.NoError(t, err)
	v := scrape()

	assert.Equal(t, reads(before)+6, reads(v), "6 reads counted on the replicas")
	assert.Equal(t, before[`dbrouter_statements_total{node="`+primary+`",route="write"}`]+1,
		v[`dbrouter_statements_total{node="`+primary+`",route="write"}`], "the write counted on the primary")
	assert.Equal(t, 1.0, v[`dbrouter_node_primary{node="`+primary+`"}`])
	for _, n := range names {
		assert.Equal(t, 1.0, v[`dbrouter_node_up{node="`+n+`"}`], n)
		assert.Equal(t, 0.0, v[`dbrouter_node_fenced{node="`+n+`"}`], n)
		assert.Contains(t, v, `dbrouter_replica_lag_bytes{node="`+n+`"}`)
		assert.Greater(t, v[`dbrouter_probe_duration_seconds{node="`+n+`"}`], 0.0, n)
		for _, pool := range []string{"go_sql_max_open_connections", "go_sql_open_connections", "go_sql_in_use_connections",
			"go_sql_idle_connections", "go_sql_wait_count_total", "go_sql_wait_duration_seconds_total",
			"go_sql_max_idle_closed_total", "go_sql_max_idle_time_closed_total", "go_sql_max_lifetime_closed_total"} {
			assert.Contains(t, v, pool+`{db_name="`+n+`"}`)
		}
	}
	for _, r := range replicas {
		assert.Equal(t, 0.0, v[`dbrouter_node_primary{node="`+r+`"}`], r)
		assert.Equal(t, 1.0, v[`dbrouter_node_readable{node="`+r+`"}`], r)
	}
	assert.GreaterOrEqual(t, v[`go_sql_open_connections{db_name="`+primary+`"}`], 1.0, "the write's connection")
	assert.Equal(t, 6.0, v[`dbrouter_statement_duration_seconds{node="`+replicas[0]+`",route="read"}`]+
		v[`dbrouter_statement_duration_seconds{node="`+replicas[1]+`",route="read"}`], "the histogram timed the reads")
	assert.Equal(t, 1.0, v[`dbrouter_statement_duration_seconds{node="`+primary+`",route="write"}`])

	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
}
