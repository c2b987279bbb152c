package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
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

// nodePIDs returns the postmaster of every running node and its children.
func nodePIDs(c *Cluster) []proc {
	var procs []proc
	add := func(pid int) {
		if p, ok := procOf(pid); ok {
			procs = append(procs, p)
		}
	}
	for _, n := range c.nodes {
		ln := n.impl.(*localNode)
		pm, err := ln.postmasterPID()
		if err != nil {
			continue
		}
		add(pm)
		for _, pid := range childrenOf(pm) {
			add(pid)
		}
	}
	return procs
}

// survivors describes the processes of procs that are still alive.
func survivors(procs []proc) []string {
	var left []string
	for _, p := range procs {
		if p.alive() {
			st, ppid, _ := procStat(p.pid)
			left = append(left, fmt.Sprintf("%d %q state %c parent %d started %d", p.pid, procCmdline(p.pid), st, ppid, p.start))
		}
	}
	return left
}

// leftovers returns the processes of procs still alive and those whose
// command line mentions base (a unique temp dir).
func leftovers(procs []proc, base string) []string {
	left := survivors(procs)
	for _, pid := range procsNaming(base) {
		left = append(left, fmt.Sprintf("%d %q", pid, procCmdline(pid)))
	}
	return left
}

// localFootprint records the cluster's temp dir and the processes of its
// running nodes; the check fails when the dir or any of them outlives Close.
func localFootprint(_ context.Context, t *testing.T, c *Cluster) func(*testing.T) {
	t.Helper()
	base := c.impl.(*localCluster).base
	pids := nodePIDs(c)
	require.NotEmpty(t, pids, "no running postgres process before Close")
	return func(t *testing.T) {
		t.Helper()
		_, err := os.Stat(base)
		assert.True(t, errors.Is(err, os.ErrNotExist), "base dir %s still there: %v", base, err)
		assert.Empty(t, leftovers(pids, base), "postgres processes left after Close")
	}
}

// TestLocalCluster runs the shared suite (testCluster) on local binaries.
func TestLocalCluster(t *testing.T) {
	requireLocal(t)
	testCluster(t, BackendLocal, localFootprint)
}

// startCloseTest starts a local cluster for a test of its Close, which the
// test calls; ctx ends with the test.
func startCloseTest(t *testing.T) (context.Context, *Cluster, *localCluster) {
	t.Helper()
	requireLocal(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	c := &Cluster{backend: BackendLocal, logf: t.Logf}
	require.NoError(t, startLocal(ctx, c, Options{}))
	return ctx, c, c.impl.(*localCluster)
}

// TestLocalCloseHalfStarted closes a cluster whose replica never started: the
// primary runs, the replica's data dir is missing.
func TestLocalCloseHalfStarted(t *testing.T) {
	ctx, c, lc := startCloseTest(t)
	ghost := &localNode{lc: lc, dir: lc.base + "/ghost", logPath: lc.base + "/ghost.log"}
	ghost.n = &Node{c: c, name: "ghost", host: "127.0.0.1", impl: ghost}
	lc.nodes = append(lc.nodes, ghost)

	checkGone := localFootprint(ctx, t, c)
	require.NoError(t, c.Close())
	checkGone(t)
}

// TestLocalCloseWhenPgCtlFails closes a cluster whose pg_ctl stop fails
// while every server runs: Close falls back to SIGKILL of what works in each
// data directory, and leaves neither a process nor the temp dir behind.
func TestLocalCloseWhenPgCtlFails(t *testing.T) {
	ctx, c, lc := startCloseTest(t)
	lc.bin.pgCtl = "/bin/false"

	checkGone := localFootprint(ctx, t, c)
	require.NoError(t, c.Close())
	checkGone(t)
}

// TestLocalKill: Kill is kill -9 of the postmaster. A session idle on the
// node ends with it (its backend sees the postmaster gone), no process of
// the node is left, and Start brings the primary back with its data,
// through crash recovery.
func TestLocalKill(t *testing.T) {
	requireLocal(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := StartT(t, Options{})
	n := c.Primary()
	require.NoError(t, n.Exec(ctx, "CREATE TABLE t (id int)"))
	insertRow(ctx, t, n, 1)
	db, err := n.Open()
	require.NoError(t, err)
	defer db.Close()
	conn, err := db.Conn(ctx) // a backend idle at the kill
	require.NoError(t, err)
	defer conn.Close()
	pids := nodePIDs(c)
	require.Greater(t, len(pids), 1, "a postmaster and its children")
	dir := n.impl.(*localNode).dir
	require.Greater(t, len(procsWorkingIn(dir)), 1, "the node's processes, by their working directory")

	began := time.Now()
	require.NoError(t, n.Kill(ctx))
	t.Logf("kill -9 of %s's postmaster: every process gone in %v", n.Name(), since(began))
	left, inDir := survivors(pids), describePIDs(procsWorkingIn(dir))
	if len(left) > 0 || inDir != "" {
		t.Logf("after Kill: left %v; in the data directory: %s", left, inDir) // one line, ahead of a CI log's cut
	}
	assert.Empty(t, left, "processes of the node left after Kill")
	assert.Empty(t, inDir, "processes working in the node's data directory after Kill")
	requireDown(ctx, t, n)
	var one int
	assert.Error(t, conn.QueryRowContext(ctx, "SELECT 1").Scan(&one), "the idle session survived")
	require.NoError(t, n.Kill(ctx), "Kill of a killed node")

	require.NoError(t, n.Start(ctx))
	inRecovery, err := n.InRecovery(ctx)
	require.NoError(t, err)
	assert.False(t, inRecovery, "back as a primary")
	cnt, err := rowCount(ctx, n, 1)
	require.NoError(t, err)
	assert.Equal(t, 1, cnt, "the row written before the kill")
}
