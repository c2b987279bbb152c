package pgcluster

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// footprintFunc records, before Close, what a backend made for c (dirs and
// processes, containers and networks) and returns the check, run after Close,
// that none of it is left.
type footprintFunc func(ctx context.Context, t *testing.T, c *Cluster) (checkGone func(t *testing.T))

// testCluster is the behaviour every backend shares, run by TestLocalCluster
// and TestDockerCluster on a primary and two replicas: names and addresses,
// replication, apply delay, freeze/thaw, failover with the old primary coming
// back, stop/start of a replica, and a Close that leaves nothing behind
// (footprint is the backend's own check of that).
//
// The subtests run in order on one cluster, each building on the state the
// previous one left.
func testCluster(t *testing.T, backend string, footprint footprintFunc) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	c := StartT(t, Options{Backend: backend, Replicas: 2})
	require.Equal(t, backend, c.Backend())
	nodes := c.Nodes()
	require.Len(t, nodes, 3)
	n0, n1, n2 := nodes[0], nodes[1], nodes[2]

	t.Run("names_and_addresses", func(t *testing.T) {
		for i, n := range nodes {
			want := fmt.Sprintf("node%d", i)
			assert.Equal(t, want, n.Name())
			var got string
			require.NoError(t, n.QueryRow(ctx, "SELECT current_setting('cluster_name')", &got))
			assert.Equal(t, want, got, "cluster_name of %s", n.Name())
			inRecovery, err := n.InRecovery(ctx)
			require.NoError(t, err)
			assert.Equal(t, i > 0, inRecovery, "%s in recovery", n.Name())

			assert.Equal(t, "127.0.0.1:"+strconv.Itoa(n.Port()), n.Addr())
			u, err := url.Parse(n.DSN())
			require.NoError(t, err)
			assert.Equal(t, "postgres", u.Scheme, n.DSN())
			assert.Equal(t, "postgres", u.User.Username(), n.DSN())
			assert.Equal(t, n.Addr(), u.Host, "DSN address of %s", n.Name())
			assert.Equal(t, "/postgres", u.Path, n.DSN())
		}
		p, r := c.DSNs()
		assert.Equal(t, n0.DSN(), p)
		assert.Equal(t, []string{n1.DSN(), n2.DSN()}, r)
	})

	t.Run("replication", func(t *testing.T) {
		require.NoError(t, n0.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"))
		insertRow(ctx, t, n0, 1)
		waitRow(ctx, t, n1, 1)
		waitRow(ctx, t, n2, 1)
	})

	t.Run("apply_delay", func(t *testing.T) {
		// A short delay holds a row back on node2 for about that long.
		setApplyDelay(ctx, t, n2, 2*time.Second)
		insertRow(ctx, t, n0, 2)
		written := time.Now()
		waitRow(ctx, t, n1, 2) // no delay there
		cnt, err := rowCount(ctx, n2, 2)
		require.NoError(t, err)
		if time.Since(written) < time.Second {
			assert.Equal(t, 0, cnt, "row 2 visible on the delayed replica right away")
		}
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		defer dcancel()
		waitRow(dctx, t, n2, 2)
		t.Logf("row visible on delayed %s after %v", n2.Name(), since(written))
		assert.GreaterOrEqual(t, time.Since(written), 1500*time.Millisecond)

		// A long one holds it back until the delay is removed.
		setApplyDelay(ctx, t, n2, time.Hour)
		insertRow(ctx, t, n0, 3)
		waitRow(ctx, t, n1, 3)
		cnt, err = rowCount(ctx, n2, 3)
		require.NoError(t, err)
		assert.Equal(t, 0, cnt, "row 3 applied on node2 despite a 1h apply delay")
		setApplyDelay(ctx, t, n2, 0)
		waitRow(ctx, t, n2, 3)
	})

	t.Run("freeze_thaw", func(t *testing.T) {
		db, err := n1.Open()
		require.NoError(t, err)
		defer db.Close()
		require.NoError(t, n1.Freeze(ctx))
		require.NoError(t, n1.Freeze(ctx), "second Freeze is a no-op")
		qctx, qcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		began := time.Now()
		var one int
		err = db.QueryRowContext(qctx, "SELECT 1").Scan(&one)
		took := time.Since(began)
		qcancel()
		require.Error(t, err, "a frozen node answered")
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.GreaterOrEqual(t, took, 450*time.Millisecond, "failed before its deadline: %v", err)
		assert.Less(t, took, 3*time.Second, "failed long after its 500ms deadline")
		t.Logf("frozen %s: query failed after %v: %v", n1.Name(), took.Round(time.Millisecond), err)

		require.NoError(t, n1.Thaw(ctx))
		require.NoError(t, n1.WaitReady(ctx))
		waitFor(ctx, t, n1, "answering a pool opened before Freeze", func(ctx context.Context) (bool, error) {
			err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
			return err == nil && one == 1, err
		})
		insertRow(ctx, t, n0, 4)
		waitRow(ctx, t, n1, 4)
	})

	t.Run("failover", func(t *testing.T) {
		// Both replicas have everything the primary wrote, so both can follow node1.
		insertRow(ctx, t, n0, 5)
		waitRow(ctx, t, n1, 5)
		waitRow(ctx, t, n2, 5)
		oldDSN := n0.DSN()

		require.NoError(t, n0.Crash(ctx))
		require.NoError(t, n0.Crash(ctx), "Crash of a crashed node")
		requireDown(ctx, t, n0)

		began := time.Now()
		require.NoError(t, n1.Promote(ctx))
		t.Logf("promote %s: %v", n1.Name(), since(began))
		inRecovery, err := n1.InRecovery(ctx)
		require.NoError(t, err)
		require.False(t, inRecovery, "node1 still in recovery after Promote")
		insertRow(ctx, t, n1, 6)

		require.NoError(t, n2.Repoint(ctx, n1))
		require.NoError(t, n2.WaitStreaming(ctx))
		waitStreamsFrom(ctx, t, n2, n1)
		waitRow(ctx, t, n2, 6)
		var tli int
		require.NoError(t, n2.QueryRow(ctx, "SELECT received_tli FROM pg_stat_wal_receiver", &tli))
		assert.Equal(t, 2, tli, "node2 follows node1's new timeline")

		// The crashed old primary comes back on the same DSN, with its data,
		// as a primary on its old timeline (split brain).
		began = time.Now()
		require.NoError(t, n0.Start(ctx))
		t.Logf("restart %s: %v", n0.Name(), since(began))
		assert.Equal(t, oldDSN, n0.DSN(), "node0's DSN changed across a restart")
		db, err := sql.Open("pgx", oldDSN)
		require.NoError(t, err)
		defer db.Close()
		var name, wal string
		require.NoError(t, db.QueryRowContext(ctx,
			"SELECT current_setting('cluster_name'), pg_is_in_recovery(), pg_walfile_name(pg_current_wal_lsn())").
			Scan(&name, &inRecovery, &wal))
		assert.Equal(t, "node0", name)
		assert.False(t, inRecovery, "restarted old primary should come back as a primary")
		assert.True(t, strings.HasPrefix(wal, "00000001"), "node0 on timeline 1: %s", wal)
		cnt, err := rowCount(ctx, n0, 5)
		require.NoError(t, err)
		assert.Equal(t, 1, cnt, "node0 lost its data across crash + start")
	})

	t.Run("stop_start_replica", func(t *testing.T) {
		// node2 now follows node1: a restart keeps its data, its DSN and its new primary.
		dsn := n2.DSN()
		require.NoError(t, n2.Stop(ctx))
		requireDown(ctx, t, n2)
		insertRow(ctx, t, n1, 7)
		require.NoError(t, n2.Start(ctx))
		assert.Equal(t, dsn, n2.DSN(), "node2's DSN changed across a restart")
		inRecovery, err := n2.InRecovery(ctx)
		require.NoError(t, err)
		assert.True(t, inRecovery)
		require.NoError(t, n2.WaitStreaming(ctx))
		waitStreamsFrom(ctx, t, n2, n1)
		waitRow(ctx, t, n2, 7)
	})

	t.Run("close_after_freeze", func(t *testing.T) {
		require.NoError(t, n2.Freeze(ctx)) // Close must cope with a frozen node
		checkGone := footprint(ctx, t, c)
		require.NoError(t, c.Close())
		require.NoError(t, c.Close(), "second Close")
		checkGone(t)
	})
}

// waitFor polls cond with n.poll (every 50ms, 5s per try, two minutes at
// most) and fails the test when ctx ends first; what completes "NODE not …".
func waitFor(ctx context.Context, t *testing.T, n *Node, what string, cond func(context.Context) (bool, error)) {
	t.Helper()
	require.NoError(t, n.poll(ctx, what, cond))
}

// insertRow inserts the row id into table t on n.
func insertRow(ctx context.Context, t *testing.T, n *Node, id int) {
	t.Helper()
	require.NoError(t, n.Exec(ctx, "INSERT INTO t VALUES ($1)", id))
}

// rowCount counts the rows of table t with the given id on n.
func rowCount(ctx context.Context, n *Node, id int) (int, error) {
	var cnt int
	err := n.QueryRow(ctx, "SELECT count(*) FROM t WHERE id = "+strconv.Itoa(id), &cnt)
	return cnt, err
}

// waitRow waits until the row id of table t is visible on n.
func waitRow(ctx context.Context, t *testing.T, n *Node, id int) {
	t.Helper()
	waitFor(ctx, t, n, fmt.Sprintf("showing row %d", id), func(ctx context.Context) (bool, error) {
		cnt, err := rowCount(ctx, n, id)
		return cnt == 1, err
	})
}

// requireDown fails the test when n answers a query within 5s.
func requireDown(ctx context.Context, t *testing.T, n *Node) {
	t.Helper()
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var one int
	require.Error(t, n.QueryRow(qctx, "SELECT 1", &one), "%s answered", n.Name())
}

// setApplyDelay sets the replica's apply delay and waits until it reports
// the new setting.
func setApplyDelay(ctx context.Context, t *testing.T, n *Node, d time.Duration) {
	t.Helper()
	require.NoError(t, n.SetApplyDelay(ctx, d))
	want := strconv.FormatInt(d.Milliseconds(), 10)
	waitFor(ctx, t, n, "applying with a delay of "+d.String(), func(ctx context.Context) (bool, error) {
		var ms string
		err := n.QueryRow(ctx, "SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'", &ms)
		return ms == want, err
	})
}

// waitStreamsFrom waits until replica's WAL receiver streams from the address
// primary gives out for streaming (the host and port of its conninfo).
func waitStreamsFrom(ctx context.Context, t *testing.T, replica, primary *Node) {
	t.Helper()
	want := map[string]string{}
	for _, kv := range strings.Fields(primary.impl.conninfo()) {
		k, v, _ := strings.Cut(kv, "=")
		want[k] = v
	}
	waitFor(ctx, t, replica, "streaming from "+primary.Name(), func(ctx context.Context) (bool, error) {
		var host string
		var port int
		err := replica.QueryRow(ctx, "SELECT coalesce(max(sender_host), ''), coalesce(max(sender_port), 0) "+
			"FROM pg_stat_wal_receiver WHERE status = 'streaming'", &host, &port)
		return host == want["host"] && strconv.Itoa(port) == want["port"], err
	})
}
