package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLocalCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int // sign
	}{
		{"15", "15", 0},
		{"9.6", "10", -1},
		{"16", "15", 1},
		{"10", "9.6", 1},
		{"15.2", "15", 1},
		{"x", "1", -1},
	} {
		t.Run(tc.a+"_vs_"+tc.b, func(t *testing.T) {
			got := compareVersions(tc.a, tc.b)
			assert.Equal(t, tc.want, max(-1, min(1, got)), "compareVersions(%q, %q) = %d", tc.a, tc.b, got)
		})
	}
}

// requireLocal skips under -short and fails (never skips) when the local
// binaries are missing.
func requireLocal(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts PostgreSQL servers; skipped with -short")
	}
	if _, err := findBinaries(); err != nil {
		t.Fatal(err)
	}
}

// waitUntil polls cond every 50ms until it returns true or ctx ends.
func waitUntil(ctx context.Context, t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	var last error
	for {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := cond(qctx)
		cancel()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v (last error: %v)", what, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// rowCount counts rows of table t with the given id on n.
func rowCount(ctx context.Context, n *Node, id int) (int, error) {
	var cnt int
	err := n.QueryRow(ctx, "SELECT count(*) FROM t WHERE id = "+strconv.Itoa(id), &cnt)
	return cnt, err
}

// waitRow waits until the row with id is visible on n.
func waitRow(ctx context.Context, t *testing.T, n *Node, id int) {
	t.Helper()
	waitUntil(ctx, t, fmt.Sprintf("row %d on %s", id, n.Name()), func(ctx context.Context) (bool, error) {
		cnt, err := rowCount(ctx, n, id)
		return cnt == 1, err
	})
}

// nodePIDs returns the postmaster pid of every running node and the pids of its children.
func nodePIDs(c *Cluster) []int {
	var pids []int
	for _, n := range c.nodes {
		ln := n.impl.(*localNode)
		pm, err := ln.postmasterPID()
		if err != nil {
			continue
		}
		pids = append(pids, pm)
		pids = append(pids, childrenOf(pm)...)
	}
	return pids
}

// leftovers returns the live processes among pids and those whose command line mentions base.
func leftovers(pids []int, base string) []string {
	var left []string
	for _, pid := range pids {
		if alive(pid) {
			left = append(left, fmt.Sprintf("%d %q", pid, procCmdline(pid)))
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if cmd := procCmdline(pid); alive(pid) && strings.Contains(cmd, base) {
			left = append(left, fmt.Sprintf("%d %q", pid, cmd))
		}
	}
	return left
}

func TestLocalCluster(t *testing.T) {
	requireLocal(t)
	began := time.Now()
	c := StartT(t, Options{Backend: BackendLocal, Replicas: 2})
	t.Logf("local primary + 2 replicas started in %v", time.Since(began).Round(time.Millisecond))
	require.Equal(t, BackendLocal, c.Backend())

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodes := c.Nodes()
	require.Len(t, nodes, 3)
	n0, n1, n2 := nodes[0], nodes[1], nodes[2]
	base := c.impl.(*localCluster).base

	t.Run("cluster_name", func(t *testing.T) {
		for i, n := range nodes {
			want := fmt.Sprintf("node%d", i)
			assert.Equal(t, want, n.Name())
			var got string
			require.NoError(t, n.QueryRow(ctx, "SELECT current_setting('cluster_name')", &got))
			assert.Equal(t, want, got)
			inRecovery, err := n.InRecovery(ctx)
			require.NoError(t, err)
			assert.Equal(t, i > 0, inRecovery, "%s in recovery", n.Name())
			assert.True(t, strings.HasPrefix(n.DSN(), "postgres://postgres@127.0.0.1:"+strconv.Itoa(n.Port())+"/"), n.DSN())
		}
		p, r := c.DSNs()
		assert.Equal(t, n0.DSN(), p)
		assert.Equal(t, []string{n1.DSN(), n2.DSN()}, r)
	})

	t.Run("replication", func(t *testing.T) {
		require.NoError(t, n0.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, at text)"))
		require.NoError(t, n0.Exec(ctx, "INSERT INTO t VALUES (1, 'node0')"))
		waitRow(ctx, t, n1, 1)
		waitRow(ctx, t, n2, 1)
	})

	t.Run("apply_delay", func(t *testing.T) {
		require.NoError(t, n2.SetApplyDelay(ctx, 2*time.Second))
		var delay string
		require.NoError(t, n2.QueryRow(ctx, "SELECT current_setting('recovery_min_apply_delay')", &delay))
		require.Equal(t, "2s", delay)
		require.NoError(t, n0.Exec(ctx, "INSERT INTO t VALUES (2, 'node0')"))
		written := time.Now()
		waitRow(ctx, t, n1, 2) // no delay there
		cnt, err := rowCount(ctx, n2, 2)
		require.NoError(t, err)
		if time.Since(written) < time.Second {
			assert.Equal(t, 0, cnt, "row visible on the delayed replica right away")
		}
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		defer dcancel()
		waitRow(dctx, t, n2, 2)
		t.Logf("row visible on delayed %s after %v", n2.Name(), time.Since(written).Round(time.Millisecond))
		assert.GreaterOrEqual(t, time.Since(written), 1500*time.Millisecond)
		require.NoError(t, n2.SetApplyDelay(ctx, 0))
	})

	t.Run("freeze_thaw", func(t *testing.T) {
		require.NoError(t, n1.Freeze(ctx))
		require.NoError(t, n1.Freeze(ctx), "second Freeze is a no-op")
		qctx, qcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		t0 := time.Now()
		var one int
		err := n1.QueryRow(qctx, "SELECT 1", &one)
		took := time.Since(t0)
		qcancel()
		require.Error(t, err, "query on a frozen node")
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.GreaterOrEqual(t, took, 450*time.Millisecond, "failed before its deadline: %v", err)
		assert.Less(t, took, 3*time.Second, "failed long after its deadline")
		t.Logf("frozen %s: query failed after %v: %v", n1.Name(), took.Round(time.Millisecond), err)

		require.NoError(t, n1.Thaw(ctx))
		require.NoError(t, n1.WaitReady(ctx))
		require.NoError(t, n0.Exec(ctx, "INSERT INTO t VALUES (3, 'node0')"))
		waitRow(ctx, t, n1, 3)
	})

	t.Run("stop_start_replica", func(t *testing.T) {
		require.NoError(t, n2.Stop(ctx))
		var one int
		require.Error(t, n2.QueryRow(ctx, "SELECT 1", &one), "query on a stopped node")
		require.NoError(t, n0.Exec(ctx, "INSERT INTO t VALUES (4, 'node0')"))
		require.NoError(t, n2.Start(ctx))
		inRecovery, err := n2.InRecovery(ctx)
		require.NoError(t, err)
		assert.True(t, inRecovery)
		require.NoError(t, n2.WaitStreaming(ctx))
		waitRow(ctx, t, n2, 4)
	})

	t.Run("failover", func(t *testing.T) {
		// Both replicas have everything the primary wrote, so both can follow node1.
		require.NoError(t, n0.Exec(ctx, "INSERT INTO t VALUES (5, 'node0')"))
		waitRow(ctx, t, n1, 5)
		waitRow(ctx, t, n2, 5)

		require.NoError(t, n0.Crash(ctx))
		var one int
		require.Error(t, n0.QueryRow(ctx, "SELECT 1", &one), "query on a crashed node")

		t0 := time.Now()
		require.NoError(t, n1.Promote(ctx))
		t.Logf("promote took %v", time.Since(t0).Round(time.Millisecond))
		inRecovery, err := n1.InRecovery(ctx)
		require.NoError(t, err)
		require.False(t, inRecovery)
		require.NoError(t, n1.Exec(ctx, "INSERT INTO t VALUES (6, 'node1')"))

		require.NoError(t, n2.Repoint(ctx, n1))
		require.NoError(t, n2.WaitStreaming(ctx))
		waitRow(ctx, t, n2, 6)
		var tli int
		require.NoError(t, n2.QueryRow(ctx, "SELECT received_tli FROM pg_stat_wal_receiver", &tli))
		assert.Equal(t, 2, tli, "node2 follows node1's new timeline")

		// The crashed old primary comes back as a primary on its old timeline.
		require.NoError(t, n0.Start(ctx))
		inRecovery, err = n0.InRecovery(ctx)
		require.NoError(t, err)
		assert.False(t, inRecovery, "split brain: node0 is a primary again")
		var wal string
		require.NoError(t, n0.QueryRow(ctx, "SELECT pg_walfile_name(pg_current_wal_lsn())", &wal))
		assert.True(t, strings.HasPrefix(wal, "00000001"), "node0 on timeline 1: %s", wal)
	})

	t.Run("close_after_freeze", func(t *testing.T) {
		require.NoError(t, n2.Freeze(ctx))
		pids := nodePIDs(c)
		require.NotEmpty(t, pids)
		require.NoError(t, c.Close())
		require.NoError(t, c.Close(), "second Close")
		_, err := os.Stat(base)
		assert.True(t, errors.Is(err, os.ErrNotExist), "base dir %s still there: %v", base, err)
		assert.Empty(t, leftovers(pids, base), "postgres processes left after Close")
	})
}

// TestLocalCloseHalfStarted closes a cluster whose replica never started: the
// primary runs, the replica's data dir is missing.
func TestLocalCloseHalfStarted(t *testing.T) {
	requireLocal(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := &Cluster{backend: BackendLocal, logf: t.Logf}
	require.NoError(t, startLocal(ctx, c, Options{}))
	lc := c.impl.(*localCluster)
	ghost := &localNode{lc: lc, dir: lc.base + "/ghost", logPath: lc.base + "/ghost.log"}
	ghost.n = &Node{c: c, name: "ghost", host: "127.0.0.1", impl: ghost}
	lc.nodes = append(lc.nodes, ghost)

	pids := nodePIDs(c)
	require.NotEmpty(t, pids)
	require.NoError(t, c.Close())
	_, err := os.Stat(lc.base)
	assert.True(t, errors.Is(err, os.ErrNotExist), "base dir %s still there: %v", lc.base, err)
	assert.Empty(t, leftovers(pids, lc.base))
}
