package pgcluster

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
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

// startDockerT starts a primary + 2 replicas and logs how long it took.
func startDockerT(t *testing.T) *Cluster {
	t.Helper()
	began := time.Now()
	c := StartT(t, Options{Backend: BackendDocker, Replicas: 2})
	t.Logf("docker: 3-node cluster (primary + 2 streaming replicas) in %v", time.Since(began).Round(time.Millisecond))
	return c
}

// dockerWaitUntil polls cond every 50ms until it returns true or ctx ends.
func dockerWaitUntil(ctx context.Context, t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
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

// dockerRows counts the rows of t with the given id on n.
func dockerRows(ctx context.Context, n *Node, id int) (int, error) {
	var cnt int
	err := n.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM t WHERE id = %d", id), &cnt)
	return cnt, err
}

// dockerWaitRow waits until the row with id is visible on n.
func dockerWaitRow(ctx context.Context, t *testing.T, n *Node, id int) {
	t.Helper()
	dockerWaitUntil(ctx, t, fmt.Sprintf("row %d on %s", id, n.Name()), func(ctx context.Context) (bool, error) {
		cnt, err := dockerRows(ctx, n, id)
		return cnt == 1, err
	})
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

// TestDockerCluster checks a fresh cluster: names, addresses, replication,
// apply delay, freeze/thaw, and that Close leaves nothing behind.
func TestDockerCluster(t *testing.T) {
	requireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := startDockerT(t)
	require.Equal(t, BackendDocker, c.Backend())
	nodes := c.Nodes()
	require.Len(t, nodes, 3)
	primary, r1, r2 := nodes[0], nodes[1], nodes[2]

	t.Run("names and addresses", func(t *testing.T) {
		for i, n := range nodes {
			var name string
			require.NoError(t, n.QueryRow(ctx, "SELECT current_setting('cluster_name')", &name))
			assert.Equal(t, fmt.Sprintf("node%d", i), name)
			assert.Equal(t, name, n.Name())
			u, err := url.Parse(n.DSN())
			require.NoError(t, err)
			assert.Equal(t, "127.0.0.1", u.Hostname(), "DSN host of %s", n.Name())
			assert.Equal(t, fmt.Sprintf("127.0.0.1:%d", n.Port()), n.Addr())
			inRecovery, err := n.InRecovery(ctx)
			require.NoError(t, err)
			assert.Equal(t, i > 0, inRecovery, "%s in recovery", n.Name())
		}
		p, rs := c.DSNs()
		assert.Equal(t, primary.DSN(), p)
		assert.Equal(t, []string{r1.DSN(), r2.DSN()}, rs)
	})

	t.Run("replication", func(t *testing.T) {
		require.NoError(t, primary.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"))
		require.NoError(t, primary.Exec(ctx, "INSERT INTO t VALUES (1)"))
		dockerWaitRow(ctx, t, r1, 1)
		dockerWaitRow(ctx, t, r2, 1)
	})

	t.Run("apply delay", func(t *testing.T) {
		require.NoError(t, r2.SetApplyDelay(ctx, time.Hour))
		dockerWaitUntil(ctx, t, "recovery_min_apply_delay on node2", func(ctx context.Context) (bool, error) {
			var ms string
			err := r2.QueryRow(ctx, "SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'", &ms)
			return ms == "3600000", err
		})
		require.NoError(t, primary.Exec(ctx, "INSERT INTO t VALUES (2)"))
		dockerWaitRow(ctx, t, r1, 2)
		// node2 received the commit but holds it back for an hour.
		cnt, err := dockerRows(ctx, r2, 2)
		require.NoError(t, err)
		assert.Equal(t, 0, cnt, "row 2 applied on node2 despite a 1h apply delay")
		require.NoError(t, r2.SetApplyDelay(ctx, 0))
		dockerWaitRow(ctx, t, r2, 2)
	})

	t.Run("freeze and thaw", func(t *testing.T) {
		db, err := r1.Open()
		require.NoError(t, err)
		defer db.Close()
		require.NoError(t, r1.Freeze(ctx))
		qctx, qcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		began := time.Now()
		var one int
		err = db.QueryRowContext(qctx, "SELECT 1").Scan(&one)
		took := time.Since(began)
		qcancel()
		assert.Error(t, err, "a frozen node answered")
		assert.ErrorIs(t, qctx.Err(), context.DeadlineExceeded)
		assert.GreaterOrEqual(t, took, 450*time.Millisecond, "failed before its deadline: %v", err)
		assert.Less(t, took, 3*time.Second, "failed long after its 500ms deadline")

		require.NoError(t, r1.Thaw(ctx))
		dockerWaitUntil(ctx, t, "node1 answers after thaw", func(ctx context.Context) (bool, error) {
			err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
			return err == nil && one == 1, err
		})
	})

	t.Run("close removes everything", func(t *testing.T) {
		id := dockerClusterOf(t, c).id
		ctrs, nets := dockerLabeled(ctx, t, id)
		require.Equal(t, 3, ctrs, "containers labeled %s=%s before Close", dockerLabel, id)
		require.Equal(t, 1, nets, "networks labeled %s=%s before Close", dockerLabel, id)
		require.NoError(t, r2.Freeze(ctx)) // Close must cope with a paused container
		require.NoError(t, c.Close())
		ctrs, nets = dockerLabeled(ctx, t, id)
		assert.Zero(t, ctrs, "containers left after Close")
		assert.Zero(t, nets, "networks left after Close")
		assert.NoError(t, c.Close(), "second Close")
	})
}

// TestDockerFailover crashes the primary, promotes node1, re-points node2 at
// it, and brings the old primary back on its old DSN.
func TestDockerFailover(t *testing.T) {
	requireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := startDockerT(t)
	nodes := c.Nodes()
	old, r1, r2 := nodes[0], nodes[1], nodes[2]
	oldDSN := old.DSN()

	require.NoError(t, old.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"))
	require.NoError(t, old.Exec(ctx, "INSERT INTO t VALUES (1)"))
	dockerWaitRow(ctx, t, r1, 1)
	dockerWaitRow(ctx, t, r2, 1)

	require.NoError(t, old.Crash(ctx))
	require.NoError(t, old.Crash(ctx), "Crash of a crashed node")
	var one int
	qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
	assert.Error(t, old.QueryRow(qctx, "SELECT 1", &one), "crashed node0 answered")
	qcancel()

	began := time.Now()
	require.NoError(t, r1.Promote(ctx))
	t.Logf("promote node1: %v", time.Since(began).Round(time.Millisecond))
	inRecovery, err := r1.InRecovery(ctx)
	require.NoError(t, err)
	require.False(t, inRecovery, "node1 still in recovery after Promote")

	require.NoError(t, r2.Repoint(ctx, r1))
	require.NoError(t, r2.WaitStreaming(ctx))
	dockerWaitUntil(ctx, t, "node2 streams from node1", func(ctx context.Context) (bool, error) {
		var sender string
		err := r2.QueryRow(ctx, "SELECT coalesce(max(sender_host), '') FROM pg_stat_wal_receiver WHERE status = 'streaming'", &sender)
		return sender == "node1", err
	})
	require.NoError(t, r1.Exec(ctx, "INSERT INTO t VALUES (2)"))
	dockerWaitRow(ctx, t, r2, 2)

	// The old primary comes back on the same DSN, as a primary (split brain).
	began = time.Now()
	require.NoError(t, old.Start(ctx))
	t.Logf("restart node0: %v", time.Since(began).Round(time.Millisecond))
	assert.Equal(t, oldDSN, old.DSN(), "node0's DSN changed across a restart")
	db, err := sql.Open("pgx", oldDSN)
	require.NoError(t, err)
	defer db.Close()
	var name string
	require.NoError(t, db.QueryRowContext(ctx, "SELECT current_setting('cluster_name'), pg_is_in_recovery()").Scan(&name, &inRecovery))
	assert.Equal(t, "node0", name)
	assert.False(t, inRecovery, "restarted old primary should come back as a primary")
	cnt, err := dockerRows(ctx, old, 1)
	require.NoError(t, err)
	assert.Equal(t, 1, cnt, "node0 lost its data across crash + start")

	// Stop / Start keeps the data and the DSN too.
	require.NoError(t, r2.Stop(ctx))
	require.NoError(t, r2.Start(ctx))
	require.NoError(t, r2.WaitStreaming(ctx))
	assert.Equal(t, "node1", func() string {
		var sender string
		assert.NoError(t, r2.QueryRow(ctx, "SELECT coalesce(max(sender_host), '') FROM pg_stat_wal_receiver", &sender))
		return sender
	}(), "node2 forgot its new primary across a restart")
	dockerWaitRow(ctx, t, r2, 2)
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
		ctrs, nets := dockerLabeled(ctx, t, id)
		assert.Zero(t, ctrs, "containers left after Close")
		assert.Zero(t, nets, "networks left after Close")
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
		ctrs, nets := dockerLabeled(ctx, t, id)
		assert.Zero(t, ctrs, "containers left after Close")
		assert.Zero(t, nets, "networks left after Close")
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
