package dbrouterprom

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter"
)

func TestCollectorExposition(t *testing.T) {
	s := dbrouter.Status{
		Primary: "db1",
		Nodes: []dbrouter.NodeStatus{{
			Name: "db1", Role: dbrouter.RolePrimary, State: dbrouter.StateUp, Latency: 1500 * time.Microsecond,
			Writes: 7, Errors: 1,
			Pool: sql.DBStats{MaxOpenConnections: 10, OpenConnections: 3, InUse: 1, Idle: 2, WaitCount: 4,
				WaitDuration: 1500 * time.Millisecond, MaxIdleClosed: 5, MaxIdleTimeClosed: 6, MaxLifetimeClosed: 7},
		}, {
			Name: "db2", Role: dbrouter.RoleReplica, State: dbrouter.StateUp, Readable: true,
			LagBytes: 14152, LagTime: 1250 * time.Millisecond, Latency: 250 * time.Microsecond,
			Reads: 40, Errors: 2, Misroutes: 3, Retries: 4,
		}},
		EventCounts: map[dbrouter.EventKind]uint64{dbrouter.EventNodeDown: 2, dbrouter.EventPrimaryChanged: 1},
	}
	const want = `
# HELP dbrouter_events_total Router events since the DB was opened, by kind (node_down, primary_changed, fenced, …).
# TYPE dbrouter_events_total counter
dbrouter_events_total{kind="fenced"} 0
dbrouter_events_total{kind="member_joined"} 0
dbrouter_events_total{kind="member_left"} 0
dbrouter_events_total{kind="missing_grant"} 0
dbrouter_events_total{kind="no_primary"} 0
dbrouter_events_total{kind="node_down"} 2
dbrouter_events_total{kind="node_up"} 0
dbrouter_events_total{kind="primary_changed"} 1
dbrouter_events_total{kind="promote_failed"} 0
dbrouter_events_total{kind="promoted"} 0
dbrouter_events_total{kind="replica_excluded"} 0
dbrouter_events_total{kind="replica_included"} 0
dbrouter_events_total{kind="role_changed"} 0
dbrouter_events_total{kind="source_reachable"} 0
dbrouter_events_total{kind="source_unreachable"} 0
dbrouter_events_total{kind="statement_clash"} 0
dbrouter_events_total{kind="unfenced"} 0
# HELP dbrouter_misroutes_total Reads the node refused as writes (SQLSTATE 25006), run again on the primary.
# TYPE dbrouter_misroutes_total counter
dbrouter_misroutes_total{node="db1"} 0
dbrouter_misroutes_total{node="db2"} 3
# HELP dbrouter_node_fenced 1 while the node is fenced: it says it is a primary but lost to a higher timeline, and serves nothing.
# TYPE dbrouter_node_fenced gauge
dbrouter_node_fenced{node="db1"} 0
dbrouter_node_fenced{node="db2"} 0
# HELP dbrouter_node_primary 1 for the node that takes writes now, else 0.
# TYPE dbrouter_node_primary gauge
dbrouter_node_primary{node="db1"} 1
dbrouter_node_primary{node="db2"} 0
# HELP dbrouter_node_readable 1 while the node serves reads (a replica that is up, on the primary's timeline and within the lag limit), else 0.
# TYPE dbrouter_node_readable gauge
dbrouter_node_readable{node="db1"} 0
dbrouter_node_readable{node="db2"} 1
# HELP dbrouter_node_up 1 while the node answers its probes (state up or fenced), 0 while it is down or not probed yet.
# TYPE dbrouter_node_up gauge
dbrouter_node_up{node="db1"} 1
dbrouter_node_up{node="db2"} 1
# HELP dbrouter_probe_duration_seconds How long the node's last probe took.
# TYPE dbrouter_probe_duration_seconds gauge
dbrouter_probe_duration_seconds{node="db1"} 0.0015
dbrouter_probe_duration_seconds{node="db2"} 0.00025
# HELP dbrouter_replica_lag_bytes WAL bytes the node has not replayed yet, behind the primary; 0 on the primary.
# TYPE dbrouter_replica_lag_bytes gauge
dbrouter_replica_lag_bytes{node="db1"} 0
dbrouter_replica_lag_bytes{node="db2"} 14152
# HELP dbrouter_replica_lag_seconds How long ago the primary was where the node has replayed to; 0 on the primary.
# TYPE dbrouter_replica_lag_seconds gauge
dbrouter_replica_lag_seconds{node="db1"} 0
dbrouter_replica_lag_seconds{node="db2"} 1.25
# HELP dbrouter_retries_total Reads whose connection failed on the node, run again on another node.
# TYPE dbrouter_retries_total counter
dbrouter_retries_total{node="db1"} 0
dbrouter_retries_total{node="db2"} 4
# HELP dbrouter_statement_errors_total Statements routed to the node that failed.
# TYPE dbrouter_statement_errors_total counter
dbrouter_statement_errors_total{node="db1"} 1
dbrouter_statement_errors_total{node="db2"} 2
# HELP dbrouter_statements_total Statements routed to the node, as reads (queries, read-only transactions) or as writes (Exec, write queries, transactions, Conn).
# TYPE dbrouter_statements_total counter
dbrouter_statements_total{node="db1",route="read"} 0
dbrouter_statements_total{node="db1",route="write"} 7
dbrouter_statements_total{node="db2",route="read"} 40
dbrouter_statements_total{node="db2",route="write"} 0
# HELP go_sql_idle_connections The number of idle connections.
# TYPE go_sql_idle_connections gauge
go_sql_idle_connections{db_name="db1"} 2
go_sql_idle_connections{db_name="db2"} 0
# HELP go_sql_in_use_connections The number of connections currently in use.
# TYPE go_sql_in_use_connections gauge
go_sql_in_use_connections{db_name="db1"} 1
go_sql_in_use_connections{db_name="db2"} 0
# HELP go_sql_max_idle_closed_total The total number of connections closed due to SetMaxIdleConns.
# TYPE go_sql_max_idle_closed_total counter
go_sql_max_idle_closed_total{db_name="db1"} 5
go_sql_max_idle_closed_total{db_name="db2"} 0
# HELP go_sql_max_idle_time_closed_total The total number of connections closed due to SetConnMaxIdleTime.
# TYPE go_sql_max_idle_time_closed_total counter
go_sql_max_idle_time_closed_total{db_name="db1"} 6
go_sql_max_idle_time_closed_total{db_name="db2"} 0
# HELP go_sql_max_lifetime_closed_total The total number of connections closed due to SetConnMaxLifetime.
# TYPE go_sql_max_lifetime_closed_total counter
go_sql_max_lifetime_closed_total{db_name="db1"} 7
go_sql_max_lifetime_closed_total{db_name="db2"} 0
# HELP go_sql_max_open_connections Maximum number of open connections to the database.
# TYPE go_sql_max_open_connections gauge
go_sql_max_open_connections{db_name="db1"} 10
go_sql_max_open_connections{db_name="db2"} 0
# HELP go_sql_open_connections The number of established connections both in use and idle.
# TYPE go_sql_open_connections gauge
go_sql_open_connections{db_name="db1"} 3
go_sql_open_connections{db_name="db2"} 0
# HELP go_sql_wait_count_total The total number of connections waited for.
# TYPE go_sql_wait_count_total counter
go_sql_wait_count_total{db_name="db1"} 4
go_sql_wait_count_total{db_name="db2"} 0
# HELP go_sql_wait_duration_seconds_total The total time blocked waiting for a new connection.
# TYPE go_sql_wait_duration_seconds_total counter
go_sql_wait_duration_seconds_total{db_name="db1"} 1.5
go_sql_wait_duration_seconds_total{db_name="db2"} 0
`
	assert.NoError(t, testutil.CollectAndCompare(fixed(s), strings.NewReader(want)))
}

func TestCollectorNodeStates(t *testing.T) {
	for _, tc := range []struct {
		name                           string
		node                           dbrouter.NodeStatus
		primary                        bool
		up, isPrimary, readable, fence float64
	}{
		{"primary", dbrouter.NodeStatus{Role: dbrouter.RolePrimary, State: dbrouter.StateUp}, true, 1, 1, 0, 0},
		{"replica", dbrouter.NodeStatus{Role: dbrouter.RoleReplica, State: dbrouter.StateUp, Readable: true}, false, 1, 0, 1, 0},
		{"lagging replica", dbrouter.NodeStatus{Role: dbrouter.RoleReplica, State: dbrouter.StateUp, LagExcluded: true}, false, 1, 0, 0, 0},
		{"fenced old primary", dbrouter.NodeStatus{Role: dbrouter.RolePrimary, State: dbrouter.StateFenced}, false, 1, 0, 0, 1},
		{"down", dbrouter.NodeStatus{Role: dbrouter.RoleReplica, State: dbrouter.StateDown}, false, 0, 0, 0, 0},
		{"down primary", dbrouter.NodeStatus{Role: dbrouter.RolePrimary, State: dbrouter.StateDown}, false, 0, 0, 0, 0},
		{"not probed yet", dbrouter.NodeStatus{Role: dbrouter.RoleReplica, State: dbrouter.StateUnknown}, false, 0, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.node.Name = "db1:5432/app"
			s := dbrouter.Status{Nodes: []dbrouter.NodeStatus{tc.node}}
			if tc.primary {
				s.Primary = tc.node.Name
			}
			v := values(gather(t, fixed(s)))
			assert.Equal(t, tc.up, v[`dbrouter_node_up{node="db1:5432/app"}`], "up")
			assert.Equal(t, tc.isPrimary, v[`dbrouter_node_primary{node="db1:5432/app"}`], "primary")
			assert.Equal(t, tc.readable, v[`dbrouter_node_readable{node="db1:5432/app"}`], "readable")
			assert.Equal(t, tc.fence, v[`dbrouter_node_fenced{node="db1:5432/app"}`], "fenced")
		})
	}
}

func TestCollectorEventKindsOfANewerRouter(t *testing.T) {
	// Kinds this package does not know are exported by their Code; two that
	// share one are added up, never sent twice.
	s := dbrouter.Status{EventCounts: map[dbrouter.EventKind]uint64{dbrouter.EventFenced: 1, 200: 2, 201: 3}}
	v := values(gather(t, fixed(s)))
	assert.Equal(t, 1.0, v[`dbrouter_events_total{kind="fenced"}`])
	assert.Equal(t, 5.0, v[`dbrouter_events_total{kind="`+dbrouter.EventKind(200).Code()+`"}`])
	assert.Len(t, v, len(eventKinds)+1)
}

func TestCollectorFromDB(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 2)
	db := f.router(t)
	c := NewCollector(db)
	for range 4 {
		var node string
		require.NoError(t, db.QueryRowContext(ctx, "SELECT 1").Scan(&node))
	}
	_, err := db.ExecContext(ctx, "DELETE FROM t")
	require.NoError(t, err)

	v := values(gather(t, c))
	assert.Equal(t, 1.0, v[`dbrouter_node_primary{node="primary"}`])
	assert.Equal(t, 1.0, v[`dbrouter_statements_total{node="primary",route="write"}`])
	assert.Equal(t, 0.0, v[`dbrouter_statements_total{node="primary",route="read"}`])
	assert.Equal(t, 4.0, v[`dbrouter_statements_total{node="replica1",route="read"}`]+v[`dbrouter_statements_total{node="replica2",route="read"}`])
	for _, name := range []string{"primary", "replica1", "replica2"} {
		assert.Equal(t, 1.0, v[`dbrouter_node_up{node="`+name+`"}`], name)
		assert.Contains(t, v, `go_sql_open_connections{db_name="`+name+`"}`)
	}
	for _, name := range []string{"replica1", "replica2"} {
		assert.Equal(t, 1.0, v[`dbrouter_node_readable{node="`+name+`"}`], name)
		assert.Equal(t, 0.0, v[`dbrouter_node_primary{node="`+name+`"}`], name)
	}

	// Each scrape reads the DB anew.
	for range 2 {
		var node string
		require.NoError(t, db.QueryRowContext(ctx, "SELECT 1").Scan(&node))
	}
	v2 := values(gather(t, c))
	assert.Equal(t, 6.0, v2[`dbrouter_statements_total{node="replica1",route="read"}`]+v2[`dbrouter_statements_total{node="replica2",route="read"}`])

	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	assert.Empty(t, problems)
}

// TestPoolMetricsAsDBStatsCollector checks that the pool's metrics are, byte
// for byte, what client_golang's own collectors.NewDBStatsCollector exports
// for the same *sql.DB, named by the node.
func TestPoolMetricsAsDBStatsCollector(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 0)
	db := f.router(t, dbrouter.WithNames("db1:5432/app"))
	db.SetMaxOpenConns(7)
	db.SetMaxIdleConns(1)
	// Two connections at once, so one is closed for SetMaxIdleConns.
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "DELETE FROM t")
	require.NoError(t, err)
	require.NoError(t, tx.Commit())

	names := []string{
		"go_sql_max_open_connections", "go_sql_open_connections", "go_sql_in_use_connections", "go_sql_idle_connections",
		"go_sql_wait_count_total", "go_sql_wait_duration_seconds_total", "go_sql_max_idle_closed_total",
		"go_sql_max_idle_time_closed_total", "go_sql_max_lifetime_closed_total",
	}
	theirs, err := testutil.CollectAndFormat(collectors.NewDBStatsCollector(f.dbs[0], "db1:5432/app"), expfmt.TypeTextPlain, names...)
	require.NoError(t, err)
	ours, err := testutil.CollectAndFormat(NewCollector(db), expfmt.TypeTextPlain, names...)
	require.NoError(t, err)
	assert.Equal(t, string(theirs), string(ours))
	assert.Equal(t, len(names), strings.Count(string(ours), "# TYPE"))
	assert.Contains(t, string(ours), `go_sql_max_open_connections{db_name="db1:5432/app"} 7`)
	assert.Contains(t, string(ours), `go_sql_max_idle_closed_total{db_name="db1:5432/app"} 1`)
}

func TestCollectorBadInput(t *testing.T) {
	t.Run("nil DB", func(t *testing.T) {
		reg := prometheus.NewPedanticRegistry()
		require.NoError(t, reg.Register(NewCollector(nil)))
		_, err := reg.Gather()
		assert.True(t, errors.Is(err, errNilDB), "%v", err)
	})
	t.Run("a node name that is not UTF-8", func(t *testing.T) {
		s := dbrouter.Status{Nodes: []dbrouter.NodeStatus{{Name: "db\xff"}, {Name: "db2"}}}
		reg := prometheus.NewPedanticRegistry()
		require.NoError(t, reg.Register(fixed(s)))
		mfs, err := reg.Gather()
		assert.Error(t, err, "the scrape says so")
		assert.Contains(t, values(mfs), `dbrouter_node_up{node="db2"}`, "and has the other nodes")
	})
}

// TestEveryEventKindIsExported: every kind of event is exported, at 0
// until it first happens (as the package doc says), so a rate or an alert
// over one starts from the first. (The discovery and pooler kinds were
// missing until they happened.)
func TestEveryEventKindIsExported(t *testing.T) {
	f := newFakeNodes(t, 1)
	db := f.router(t)
	v := values(gather(t, NewCollector(db)))
	for k := dbrouter.EventNodeDown; k <= dbrouter.EventStatementClash; k++ {
		_, ok := v[`dbrouter_events_total{kind="`+k.Code()+`"}`]
		assert.True(t, ok, "dbrouter_events_total{kind=%q} not exported", k.Code())
	}
}
