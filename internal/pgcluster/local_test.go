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

	checkGone := localFootprint(ctx, t, c)
	require.NoError(t, c.Close())
	checkGone(t)
}
