package pgcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
)

// requireDocker skips unless DBROUTER_TEST_BACKEND=docker: the local backend
// is the default, and CI runs these tests after .ci/docker-setup.sh with
// DBROUTER_TEST_BACKEND=docker DBROUTER_PG_IMAGE=dbrouter-pg:15. When asked
// for, a missing engine fails the test.
func requireDocker(t *testing.T) {
	t.Helper()
	if os.Getenv("DBROUTER_TEST_BACKEND") != BackendDocker {
		t.Skip("docker backend: set DBROUTER_TEST_BACKEND=docker (after .ci/docker-setup.sh) to run")
	}
	require.True(t, dockerAvailable(), "DBROUTER_TEST_BACKEND=docker but no Docker engine answers (run .ci/docker-setup.sh)")
}

// dockerLabeled counts the containers (all states) and networks carrying the
// cluster label with value id, as `docker ps -a` / `docker network ls`
// filtered by that label would.
func dockerLabeled(ctx context.Context, t *testing.T, id string) (containers, networks int) {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	require.NoError(t, err)
	defer cli.Close()
	f := make(client.Filters).Add("label", dockerLabel+"="+id)
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	require.NoError(t, err)
	ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: f})
	require.NoError(t, err)
	return len(cs.Items), len(ns.Items)
}

func dockerClusterOf(t *testing.T, c *Cluster) *dockerCluster {
	t.Helper()
	dc, ok := c.impl.(*dockerCluster)
	require.True(t, ok, "cluster impl is %T, want *dockerCluster", c.impl)
	return dc
}

func TestDockerNodeScript(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("no sh to check the node script with: %v", err)
	}
	for _, tc := range []struct {
		name, primary string
		want          []string
	}{
		{"node0", "", []string{"initdb -D", "--auth=trust", "host replication all all trust", "cluster_name=node0"}},
		{"node2", "node0", []string{"pg_basebackup -h node0", "-R -X stream", "cluster_name=node2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			script := dockerNodeScript(tc.name, tc.primary)
			for _, w := range tc.want {
				assert.Contains(t, script, w)
			}
			assert.Contains(t, script, "exec postgres")
			assert.Contains(t, script, "listen_addresses='*'")
			// The data dir is made only once: a restart must not run initdb
			// or pg_basebackup again.
			assert.Contains(t, script, "if [ ! -e "+dockerInitDone+" ]")
			out, err := exec.Command(sh, "-n", "-c", script).CombinedOutput()
			assert.NoError(t, err, "sh -n: %s", out)
		})
	}
}

func TestDockerHostOverrideRefused(t *testing.T) {
	t.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "192.0.2.1")
	err := dockerSetEnv()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "127.0.0.1")

	t.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
	assert.NoError(t, dockerSetEnv())
}

// dockerFootprint records the containers and the network carrying the
// cluster's label; the check fails when any of them outlives Close.
func dockerFootprint(ctx context.Context, t *testing.T, c *Cluster) func(*testing.T) {
	t.Helper()
	id := dockerClusterOf(t, c).id
	ctrs, nets := dockerLabeled(ctx, t, id)
	require.Equal(t, len(c.nodes), ctrs, "containers labeled %s=%s before Close", dockerLabel, id)
	require.Equal(t, 1, nets, "networks labeled %s=%s before Close", dockerLabel, id)
	return func(t *testing.T) {
		t.Helper()
		assertNoneLabeled(ctx, t, id)
	}
}

// assertNoneLabeled checks that no container or network carries the label of cluster id.
func assertNoneLabeled(ctx context.Context, t *testing.T, id string) {
	t.Helper()
	ctrs, nets := dockerLabeled(ctx, t, id)
	assert.Zero(t, ctrs, "containers left after Close")
	assert.Zero(t, nets, "networks left after Close")
}

// TestDockerCluster runs the shared suite (testCluster) on containers.
func TestDockerCluster(t *testing.T) {
	requireDocker(t)
	testCluster(t, BackendDocker, dockerFootprint)
}

// TestDockerFailedNode checks that a container that never becomes ready
// yields an error holding its last log lines, and that closing a
// half-started cluster removes what was made.
func TestDockerFailedNode(t *testing.T) {
	requireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, dockerSetEnv())

	t.Run("container exits", func(t *testing.T) {
		c := &Cluster{backend: BackendDocker, logf: t.Logf}
		id := dockerClusterID()
		image := os.Getenv(dockerImageEnv)
		if image == "" {
			image = dockerDefaultImage
		}
		dc := &dockerCluster{c: c, id: id, image: image}
		c.impl = dc
		t.Cleanup(func() { assert.NoError(t, c.Close()) })
		cli, err := testcontainers.NewDockerClientWithOpts(ctx)
		require.NoError(t, err)
		dc.cli = cli
		nw, err := tcnetwork.New(ctx, tcnetwork.WithLabels(map[string]string{dockerLabel: id}))
		require.NoError(t, err)
		dc.network = nw
		n := &Node{c: c, name: "node0", host: "127.0.0.1"}
		dn := &dockerNode{dc: dc, n: n, script: "echo pgcluster-test-marker: no server today >&2; exit 3"}
		n.impl = dn
		dc.nodes = append(dc.nodes, dn)
		c.nodes = []*Node{n}

		err = dn.create(ctx)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "pgcluster-test-marker: no server today", "error lacks the container's log")
		assert.Contains(t, err.Error(), "exit code 3")

		require.NoError(t, c.Close())
		assertNoneLabeled(ctx, t, id)
	})

	t.Run("start stopped half-way", func(t *testing.T) {
		// Cancel the start once the primary is up: the replica fails, and
		// Start must remove the primary and the network.
		sctx, scancel := context.WithCancel(ctx)
		defer scancel()
		c := &Cluster{backend: BackendDocker}
		c.logf = func(format string, args ...any) {
			msg := fmt.Sprintf(format, args...)
			t.Log(msg)
			if strings.Contains(msg, "node0 ready") {
				scancel()
			}
		}
		err := startDocker(sctx, c, Options{Replicas: 1})
		require.Error(t, err)
		t.Logf("startDocker stopped half-way: %v", err)
		require.NotNil(t, c.impl, "startDocker must set c.impl before failing half-way")
		id := dockerClusterOf(t, c).id
		ctrs, _ := dockerLabeled(ctx, t, id)
		assert.Positive(t, ctrs, "the primary should exist before Close")
		require.NoError(t, c.Close())
		assertNoneLabeled(ctx, t, id)
	})

	t.Run("image missing", func(t *testing.T) {
		c := &Cluster{backend: BackendDocker, logf: t.Logf}
		err := startDocker(ctx, c, Options{Image: "dbrouter-pgcluster-no-such-image:0"})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "never pulls")
		require.NotNil(t, c.impl)
		assert.NoError(t, c.Close())
	})
}

// When the engine's freezer refuses, Freeze stops the container's processes
// with SIGSTOP instead: the node must hang as a paused one does, and Thaw
// must bring it back.
func TestDockerFreezeBySignal(t *testing.T) {
	requireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := StartT(t, Options{Replicas: 0, Backend: BackendDocker})
	n := c.Primary()
	dn := n.impl.(*dockerNode)
	db, err := n.Open()
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.PingContext(ctx))

	_, ctr, err := dn.docker()
	require.NoError(t, err)
	require.NoError(t, dn.signalAll(ctx, ctr, "STOP"))
	dn.mu.Lock()
	dn.paused, dn.bySignal = true, true
	dn.mu.Unlock()
	qctx, qcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err = db.QueryRowContext(qctx, "SELECT 1").Scan(new(int))
	qcancel()
	assert.ErrorIs(t, err, context.DeadlineExceeded, "a node stopped by signals answered")

	require.NoError(t, n.Thaw(ctx))
	require.NoError(t, n.WaitReady(ctx))
	var one int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT 1").Scan(&one))
}
