package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// requirePatroni skips under -short and fails (never skips) when Patroni,
// etcd or the server binaries are missing.
func requirePatroni(t *testing.T, bin string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd, Patroni and PostgreSQL servers; skipped with -short")
	}
	_, err := findPatroni(bin)
	require.NoError(t, err)
	_, err = findEtcd("")
	require.NoError(t, err)
	_, err = findBinaries()
	require.NoError(t, err)
}

// TestPatroni runs one cluster of the default Patroni (4 when
// .ci/patroni-setup.sh could fetch it) through every change and fault the
// harness offers, cheapest first, the crash last, then closes it.
func TestPatroni(t *testing.T) {
	requirePatroni(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	began := time.Now()
	pc := StartPatroniT(t, PatroniOptions{})
	t.Logf("PATRONI %s: leader + 2 streaming replicas in %v", pc.Version(), since(began))

	t.Run("starts a leader and two streaming replicas", func(t *testing.T) {
		st, err := pc.ClusterState(ctx)
		require.NoError(t, err)
		require.Len(t, st.Members, 3)
		leader, ok := st.Leader()
		require.True(t, ok, "no leader in %+v", st)
		assert.Equal(t, "running", leader.State)
		assert.Nil(t, leader.Lag, "leader has a lag")
		for _, ms := range st.Members {
			m := pc.Member(ms.Name)
			require.NotNil(t, m, "unknown member %s", ms.Name)
			assert.Equal(t, "127.0.0.1", ms.Host)
			assert.Equal(t, m.Port(), ms.Port)
			assert.Equal(t, m.RESTURL()+"/patroni", ms.APIURL)
			assert.Equal(t, leader.Timeline, ms.Timeline)
			if ms.Name != leader.Name {
				assert.True(t, ms.IsReplica(), "%s is %s", ms.Name, ms.Role)
				assert.Contains(t, []string{"streaming", "running"}, ms.State)
				assert.NotNil(t, ms.Lag, "%s: lag unknown", ms.Name)
			}
			var cn string
			require.NoError(t, m.QueryRow(ctx, "SELECT current_setting('cluster_name')", &cn))
			assert.Equal(t, m.Name(), cn, "cluster_name of %s", m.Name())
			assert.Equal(t, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", m.Port()), m.DSN())
		}
		assert.Len(t, pc.RESTURLs(), 3)
		for _, u := range pc.RESTURLs() {
			assert.True(t, strings.HasPrefix(u, "http://127.0.0.1:"), u)
		}
		l, err := pc.Leader(ctx)
		require.NoError(t, err)
		require.NoError(t, l.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"))
		insertPatroniRow(ctx, t, pc, 1)
	})

	t.Run("a frozen Patroni leaves its REST API hanging and its server running", func(t *testing.T) {
		r := aReplica(ctx, t, pc)
		require.NoError(t, pc.FreezePatroni(ctx, r.Name()))
		err := restGet(ctx, r, 500*time.Millisecond)
		assert.ErrorIs(t, err, context.DeadlineExceeded, "GET /cluster on frozen %s", r.Name())
		_, err = pc.ClusterState(ctx) // the others answer
		assert.NoError(t, err)
		var one int
		assert.NoError(t, r.QueryRow(ctx, "SELECT 1", &one), "server of frozen %s", r.Name())

		require.NoError(t, pc.Thaw(ctx, r.Name()))
		waitPatroni(ctx, t, "REST API of "+r.Name()+" answering again", func(ctx context.Context) error {
			return restGet(ctx, r, 500*time.Millisecond)
		})
		require.NoError(t, pc.WaitHealthy(ctx))
	})

	t.Run("a hung member answers nothing until thawed", func(t *testing.T) {
		r := aReplica(ctx, t, pc)
		require.NoError(t, pc.Hang(ctx, r.Name()))
		qctx, qcancel := context.WithTimeout(ctx, time.Second)
		var one int
		err := r.QueryRow(qctx, "SELECT 1", &one)
		qcancel()
		assert.Error(t, err, "hung %s answered", r.Name())
		assert.ErrorIs(t, restGet(ctx, r, 500*time.Millisecond), context.DeadlineExceeded)

		require.NoError(t, pc.Thaw(ctx, r.Name()))
		require.NoError(t, r.QueryRow(ctx, "SELECT 1", &one))
		require.NoError(t, pc.WaitHealthy(ctx))
	})

	t.Run("tags show in /cluster", func(t *testing.T) {
		r := aReplica(ctx, t, pc)
		require.NoError(t, pc.SetTags(ctx, r.Name(), map[string]any{"noloadbalance": true}))
		st, err := pc.ClusterState(ctx)
		require.NoError(t, err)
		ms, _ := st.Member(r.Name())
		assert.True(t, ms.Tag("noloadbalance"), "tags %v", ms.Tags)
		require.NoError(t, pc.SetTags(ctx, r.Name(), nil))
		st, err = pc.ClusterState(ctx)
		require.NoError(t, err)
		ms, _ = st.Member(r.Name())
		assert.False(t, ms.Tag("noloadbalance"), "tags %v", ms.Tags)
	})

	t.Run("a new member clones the leader; a removed one is gone for good", func(t *testing.T) {
		began := time.Now()
		m, err := pc.AddMember(ctx)
		require.NoError(t, err)
		t.Logf("PATRONI %s: new member %s streaming in %v", pc.Version(), m.Name(), since(began))
		assert.Len(t, pc.Members(), 4)
		assert.Contains(t, pc.RESTURLs(), m.RESTURL())
		waitPatroniRow(ctx, t, m, 1)
		require.NoError(t, pc.WaitHealthy(ctx))
		leader, err := pc.Leader(ctx)
		require.NoError(t, err)
		slots, err := leader.slotCount(ctx, m.Name())
		require.NoError(t, err)
		require.Equal(t, 1, slots, "leader %s has no slot for %s", leader.Name(), m.Name())

		began = time.Now()
		require.NoError(t, pc.RemoveMember(ctx, m.Name()))
		t.Logf("PATRONI %s: member removed in %v", pc.Version(), since(began))
		assert.Len(t, pc.Members(), 3)
		assert.NotContains(t, pc.RESTURLs(), m.RESTURL())
		assert.Same(t, m, pc.Member(m.Name()), "a removed member stays known")
		exists, err := pc.etcdExists(ctx, "/service/"+PatroniScope+"/members/"+m.Name())
		require.NoError(t, err)
		assert.False(t, exists, "key of %s still in etcd", m.Name())
		slots, err = leader.slotCount(ctx, m.Name())
		require.NoError(t, err)
		assert.Zero(t, slots, "leader %s still has a slot for %s", leader.Name(), m.Name())
		var one int
		assert.Error(t, m.QueryRow(ctx, "SELECT 1", &one), "server of removed %s answers", m.Name())
		assert.Error(t, pc.Restart(ctx, m.Name()), "a removed member restarted")

		require.NoError(t, pc.StartPostgresByHand(ctx, m.Name()))
		var cn string
		var inRecovery bool
		require.NoError(t, m.QueryRow(ctx, "SELECT current_setting('cluster_name'), pg_is_in_recovery()", &cn, &inRecovery))
		assert.Equal(t, m.Name(), cn)
		assert.True(t, inRecovery, "%s started by hand is not a replica", m.Name())
		st, err := pc.ClusterState(ctx)
		require.NoError(t, err)
		_, listed := st.Member(m.Name())
		assert.False(t, listed, "/cluster lists %s started by hand", m.Name())
		require.NoError(t, pc.WaitHealthy(ctx))
	})

	t.Run("switchover moves the leader", func(t *testing.T) {
		old, err := pc.Leader(ctx)
		require.NoError(t, err)
		to := aReplica(ctx, t, pc)
		began := time.Now()
		got, err := pc.Switchover(ctx, to.Name())
		require.NoError(t, err)
		tookOver := since(began)
		assert.Equal(t, to.Name(), got.Name())
		insertPatroniRow(ctx, t, pc, 2)
		require.NoError(t, pc.WaitHealthy(ctx))
		t.Logf("PATRONI %s: switchover %s -> %s: new leader takes writes after %v, %s streaming again after %v",
			pc.Version(), old.Name(), got.Name(), tookOver, old.Name(), since(began))
		waitPatroniRow(ctx, t, old, 2)
		_, err = pc.Switchover(ctx, got.Name())
		assert.Error(t, err, "switchover to the leader")
	})

	t.Run("a leader hung past ttl is replaced, and demoted when thawed", func(t *testing.T) {
		if !pc.HungLeaderFixed() {
			t.Skipf("Patroni %s gives the leader key back to a leader that hung past ttl (etcd3; fixed by patroni PR 2689 in 3.0.3)", pc.Version())
		}
		old, err := pc.Leader(ctx)
		require.NoError(t, err)
		began := time.Now()
		require.NoError(t, pc.Hang(ctx, old.Name()))
		got, err := pc.WaitLeader(ctx, old.Name())
		require.NoError(t, err)
		replaced := since(began)
		insertPatroniRow(ctx, t, pc, 3)

		began = time.Now()
		require.NoError(t, pc.Thaw(ctx, old.Name()))
		waitPatroni(ctx, t, old.Name()+" demoted", func(ctx context.Context) error {
			qctx, cancel := context.WithTimeout(ctx, patroniQueryTimeout)
			defer cancel()
			var inRecovery bool
			if err := old.QueryRow(qctx, "SELECT pg_is_in_recovery()", &inRecovery); err != nil {
				return err
			}
			if !inRecovery {
				return errors.New("still a primary")
			}
			return nil
		})
		demoted := since(began)
		require.NoError(t, pc.WaitHealthy(ctx))
		l, err := pc.Leader(ctx)
		require.NoError(t, err)
		assert.Equal(t, got.Name(), l.Name(), "the hung leader took the key back")
		waitPatroniRow(ctx, t, old, 3)
		t.Logf("PATRONI %s: leader %s hung -> %s leads and takes writes after %v (ttl %v); thawed, %s is a replica after %v, streaming after %v",
			pc.Version(), old.Name(), got.Name(), replaced, pc.TTL(), old.Name(), demoted, since(began))
	})

	t.Run("killing the leader elects another; the old one rejoins", func(t *testing.T) {
		began := time.Now()
		old, err := pc.KillLeader(ctx)
		require.NoError(t, err)
		var one int
		assert.Error(t, old.QueryRow(ctx, "SELECT 1", &one), "killed %s answers", old.Name())
		_, err = pc.ClusterState(ctx)
		require.NoError(t, err, "the others answer /cluster")
		got, err := pc.WaitLeader(ctx, old.Name())
		require.NoError(t, err)
		failover := since(began)
		insertPatroniRow(ctx, t, pc, 4)

		began = time.Now()
		require.NoError(t, pc.Restart(ctx, old.Name()))
		rejoin := since(began)
		require.NoError(t, pc.WaitHealthy(ctx))
		waitPatroniRow(ctx, t, old, 4)
		t.Logf("PATRONI %s: kill -9 of leader %s -> %s leads and takes writes after %v (ttl %v); %s rejoined, streaming, after %v",
			pc.Version(), old.Name(), got.Name(), failover, pc.TTL(), old.Name(), rejoin)
	})

	t.Run("close leaves nothing", func(t *testing.T) {
		testPatroniClose(t, pc)
	})
}

// TestPatroniDebianPackage runs Debian bookworm's Patroni 3.0.2 through a
// start and a switchover, when TestPatroni ran another version (Patroni 4
// under /opt/patroni4).
func TestPatroniDebianPackage(t *testing.T) {
	requirePatroni(t, PatroniBinDebian)
	def, err := findPatroni("")
	require.NoError(t, err)
	if def == PatroniBinDebian {
		t.Logf("TestPatroni already ran %s", PatroniBinDebian)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	began := time.Now()
	pc := StartPatroniT(t, PatroniOptions{Bin: PatroniBinDebian})
	require.True(t, strings.HasPrefix(pc.Version(), "3."), "version %s", pc.Version())
	t.Logf("PATRONI %s: leader + 2 streaming replicas in %v", pc.Version(), since(began))

	old, err := pc.Leader(ctx)
	require.NoError(t, err)
	require.NoError(t, old.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"))
	began = time.Now()
	got, err := pc.Switchover(ctx, "")
	require.NoError(t, err)
	tookOver := since(began)
	require.NoError(t, pc.WaitHealthy(ctx))
	t.Logf("PATRONI %s: switchover %s -> %s: new leader takes writes after %v, all streaming after %v",
		pc.Version(), old.Name(), got.Name(), tookOver, since(began))

	testPatroniClose(t, pc)
}

// TestPatroniCloseHalfStarted closes a cluster whose members never started:
// etcd runs, nothing else.
func TestPatroniCloseHalfStarted(t *testing.T) {
	requirePatroni(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bin, err := findPatroni("")
	require.NoError(t, err)
	etcdBin, err := findEtcd("")
	require.NoError(t, err)
	cred, err := postgresCredential("Patroni, etcd and the server binaries")
	require.NoError(t, err)
	pc := &PatroniCluster{bin: bin, cred: cred, logf: t.Logf, http: &http.Client{}}
	base, err := os.MkdirTemp("", "pgpatroni-")
	require.NoError(t, err)
	pc.base = base
	require.NoError(t, pc.chown(base))
	pc.env = patroniEnv(base, cred != nil)
	require.NoError(t, pc.startEtcd(ctx, etcdBin))
	require.NotEmpty(t, procsNaming(base+"/"), "etcd not running")
	testPatroniClose(t, pc)
}

// testPatroniClose closes pc and checks that no process naming its dir is
// left, that the dir is gone, and that Close again is a no-op.
func testPatroniClose(t *testing.T, pc *PatroniCluster) {
	t.Helper()
	base := pc.base
	require.NotEmpty(t, base)
	require.NoError(t, pc.Close())
	assert.Empty(t, describePIDs(procsNaming(base+"/")), "processes left after Close")
	_, err := os.Stat(base)
	assert.True(t, errors.Is(err, os.ErrNotExist), "%s still there: %v", base, err)
	assert.NoError(t, pc.Close(), "second Close")
}

// aReplica returns a member that /cluster shows as a replica.
func aReplica(ctx context.Context, t *testing.T, pc *PatroniCluster) *PatroniMember {
	t.Helper()
	st, err := pc.ClusterState(ctx)
	require.NoError(t, err)
	for _, ms := range st.Members {
		if ms.IsReplica() {
			if m := pc.Member(ms.Name); m != nil {
				return m
			}
		}
	}
	t.Fatalf("no replica in %+v", st)
	return nil
}

// restGet GETs /cluster from m's REST API with the given timeout.
func restGet(ctx context.Context, m *PatroniMember, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var st PatroniState
	return m.pc.getJSON(ctx, m.RESTURL()+"/cluster", &st)
}

// waitPatroni polls cond (pollCond: every 100 ms) until it returns nil, and
// fails the test when ctx ends first.
func waitPatroni(ctx context.Context, t *testing.T, what string, cond func(context.Context) error) {
	t.Helper()
	require.NoError(t, pollCond(ctx, what, cond))
}

// insertPatroniRow inserts row id into table t on the leader.
func insertPatroniRow(ctx context.Context, t *testing.T, pc *PatroniCluster, id int) {
	t.Helper()
	l, err := pc.Leader(ctx)
	require.NoError(t, err)
	require.NoError(t, l.Exec(ctx, "INSERT INTO t VALUES ($1)", id))
}

// waitPatroniRow waits until row id of table t is visible on m.
func waitPatroniRow(ctx context.Context, t *testing.T, m *PatroniMember, id int) {
	t.Helper()
	waitPatroni(ctx, t, fmt.Sprintf("row %d on %s", id, m.Name()), func(ctx context.Context) error {
		qctx, cancel := context.WithTimeout(ctx, patroniQueryTimeout)
		defer cancel()
		var n int
		if err := m.QueryRow(qctx, fmt.Sprintf("SELECT count(*) FROM t WHERE id = %d", id), &n); err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("%d rows", n)
		}
		return nil
	})
}

// TestPatroniSweepsOrphans checks that what a test binary left when it died
// without Close (its PostgreSQL servers outlive their Patroni) is killed and
// removed, and that the dir of a live owner is left alone.
func TestPatroniSweepsOrphans(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mkdir := func() string {
		dir, err := os.MkdirTemp("", "pgpatroni-")
		require.NoError(t, err)
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		return dir
	}
	// A process naming dir, with a child that does not (as a postmaster's).
	stray := func(dir string) *exec.Cmd {
		cmd := exec.Command("sh", "-c", "sleep 600; :", dir+"/m0/data")
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}

	orphan := mkdir()
	dead := exec.Command("true")
	require.NoError(t, dead.Run())
	require.NoError(t, os.WriteFile(orphan+"/owner", fmt.Appendf(nil, "%d 1\n", dead.Process.Pid), 0o644))
	orphanProc := stray(orphan)

	owned := mkdir()
	require.NoError(t, writeOwner(owned))
	ownedProc := stray(owned)

	waitPatroni(ctx, t, "the strays with their children", func(context.Context) error {
		if n := len(procsNaming(orphan + "/")); n != 2 {
			return fmt.Errorf("%d processes name %s", n, orphan)
		}
		return nil
	})
	sweepPatroniOrphans(ctx, t.Logf)

	_, err := os.Stat(orphan)
	assert.True(t, errors.Is(err, os.ErrNotExist), "orphan dir %s still there: %v", orphan, err)
	assert.Empty(t, describePIDs(procsNaming(orphan+"/")), "orphan processes left")
	assert.Error(t, orphanProc.Wait(), "orphan process not killed")
	_, err = os.Stat(owned)
	assert.NoError(t, err, "dir of a live owner removed")
	assert.True(t, alive(ownedProc.Process.Pid), "process of a live owner killed")
}
