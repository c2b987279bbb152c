package integration

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/pgcluster"
	"github.com/dbrouter/dbrouter/internal/testwait"
	"github.com/dbrouter/dbrouter/patroni"
)

// patroniSourceDSN is the DSN the harness's members share, without a host:
// user postgres (trust on 127.0.0.1), database postgres.
const patroniSourceDSN = "postgres://postgres@/postgres?sslmode=disable&connect_timeout=5"

// sourceTimeout is the request timeout of the Source under test: short, so
// that with every Patroni frozen the test stays well inside the leader key's
// ttl (10 s on Patroni 3.0.2) and no failover starts meanwhile.
const sourceTimeout = 500 * time.Millisecond

// briefMembers writes members as "m0* m1- m2": * marks the Primary, -
// NoLoadBalance.
func briefMembers(ms []dbrouter.Member) string {
	var parts []string
	for _, m := range ms {
		s := m.Name
		if m.Primary {
			s += "*"
		}
		if m.NoLoadBalance {
			s += "-"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// primaries returns the names of the members marked Primary.
func primaries(ms []dbrouter.Member) []string {
	var out []string
	for _, m := range ms {
		if m.Primary {
			out = append(out, m.Name)
		}
	}
	return out
}

// checkMemberDSNs opens each member's DSN with pgx and checks that it
// reaches that member's server (its cluster_name is the member's name) and
// that the server is in recovery unless the member is the Primary.
func checkMemberDSNs(ctx context.Context, t *testing.T, ms []dbrouter.Member) {
	t.Helper()
	for _, m := range ms {
		db, err := sql.Open("pgx", m.DSN)
		require.NoError(t, err, m.Name)
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var inRecovery bool
		var name string
		err = db.QueryRowContext(qctx, "SELECT pg_is_in_recovery(), current_setting('cluster_name')").Scan(&inRecovery, &name)
		cancel()
		require.NoError(t, db.Close())
		require.NoError(t, err, m.Name)
		assert.Equal(t, m.Name, name, "the DSN of %s reaches another server", m.Name)
		assert.Equal(t, !m.Primary, inRecovery, "%s: Primary %v, pg_is_in_recovery() %v", m.Name, m.Primary, inRecovery)
	}
}

// TestPatroniSource points a patroni.Source at a real Patroni cluster
// (etcd + 3 members): the members and the leader, DSNs that reach each
// server, the noloadbalance tag, a switchover, REST APIs frozen one by one
// and all at once.
func TestPatroniSource(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	pc := pgcluster.StartPatroniT(t, pgcluster.PatroniOptions{})
	t.Logf("PATRONI SOURCE on Patroni %s", pc.Version())
	src, err := patroni.NewWithOptions(patroniSourceDSN, pc.RESTURLs(), patroni.WithRequestTimeout(sourceTimeout))
	require.NoError(t, err)
	t.Cleanup(src.CloseIdleConnections)

	t.Run("lists the members with the leader, DSNs that connect", func(t *testing.T) {
		leader, err := pc.Leader(ctx)
		require.NoError(t, err)
		ms, err := src.Discover(ctx)
		require.NoError(t, err)
		require.Len(t, ms, 3, briefMembers(ms))
		var names, want []string
		for _, m := range ms {
			names = append(names, m.Name)
			assert.False(t, m.NoLoadBalance, m.Name)
			assert.NotContains(t, m.DSN, "127.0.0.1:0", m.Name)
		}
		for _, m := range pc.Members() {
			want = append(want, m.Name())
		}
		sort.Strings(want)
		assert.Equal(t, want, names)
		assert.Equal(t, []string{leader.Name()}, primaries(ms))
		checkMemberDSNs(ctx, t, ms)

		// The keyword/value form of the DSN works as well.
		kv, err := patroni.New("user=postgres dbname=postgres sslmode=disable connect_timeout=5", pc.RESTURLs()...)
		require.NoError(t, err)
		defer kv.CloseIdleConnections()
		kms, err := kv.Discover(ctx)
		require.NoError(t, err)
		assert.Equal(t, briefMembers(ms), briefMembers(kms))
		checkMemberDSNs(ctx, t, kms)

		// How long a Discover takes against a live REST API.
		var took []time.Duration
		for range 20 {
			began := time.Now()
			_, err := src.Discover(ctx)
			took = append(took, time.Since(began))
			require.NoError(t, err)
		}
		slices.Sort(took)
		t.Logf("PATRONI SOURCE: Discover against a live REST API: median %v, max %v (20 calls)", took[len(took)/2], took[len(took)-1])
	})

	t.Run("shows the noloadbalance tag", func(t *testing.T) {
		leader, err := pc.Leader(ctx)
		require.NoError(t, err)
		replica := aPatroniReplica(t, pc, leader.Name())
		require.NoError(t, pc.SetTags(ctx, replica, map[string]any{"noloadbalance": true}))
		ms, err := src.Discover(ctx)
		require.NoError(t, err)
		for _, m := range ms {
			assert.Equal(t, m.Name == replica, m.NoLoadBalance, "%s: %s", m.Name, briefMembers(ms))
		}
		require.NoError(t, pc.SetTags(ctx, replica, nil))
		ms, err = src.Discover(ctx)
		require.NoError(t, err)
		for _, m := range ms {
			assert.False(t, m.NoLoadBalance, "%s: %s", m.Name, briefMembers(ms))
		}
	})

	t.Run("follows a switchover", func(t *testing.T) {
		old, err := pc.Leader(ctx)
		require.NoError(t, err)

		// What Discover reports while it happens, every 50 ms.
		var mu sync.Mutex
		var seen []string
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				ms, err := src.Discover(ctx)
				s := briefMembers(ms)
				if err != nil {
					s = "error"
				}
				mu.Lock()
				if len(seen) == 0 || seen[len(seen)-1] != s {
					seen = append(seen, s)
				}
				mu.Unlock()
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		})
		began := time.Now()
		got, err := pc.Switchover(ctx, "")
		if err != nil {
			close(stop)
			wg.Wait()
			require.NoError(t, err)
		}
		took := time.Since(began)
		var ms []dbrouter.Member
		testwait.For(t, 30*time.Second, "Discover naming "+got.Name()+" the leader", func() (bool, error) {
			var err error
			ms, err = src.Discover(ctx)
			return err == nil && slices.Equal(primaries(ms), []string{got.Name()}), err
		})
		shown := time.Since(began)
		require.NoError(t, pc.WaitHealthy(ctx))
		close(stop)
		wg.Wait()
		mu.Lock()
		t.Logf("PATRONI SOURCE: switchover %s -> %s: the new leader takes writes after %v, Discover names it after %v; Discover saw: %s",
			old.Name(), got.Name(), took, shown, strings.Join(seen, " | "))
		mu.Unlock()

		testwait.For(t, 30*time.Second, "Discover listing all 3 members again", func() (bool, error) {
			var err error
			ms, err = src.Discover(ctx)
			return err == nil && len(ms) == 3, err
		})
		assert.Equal(t, []string{got.Name()}, primaries(ms))
		checkMemberDSNs(ctx, t, ms)
	})

	t.Run("REST APIs frozen", func(t *testing.T) {
		members := pc.Members()
		require.Len(t, members, 3)
		t.Cleanup(func() {
			for _, m := range members {
				assert.NoError(t, pc.Thaw(context.Background(), m.Name()))
			}
		})
		frozenAt := time.Now()
		// Two of three frozen: the third answers for the cluster.
		for _, m := range members[:2] {
			require.NoError(t, pc.FreezePatroni(ctx, m.Name()))
		}
		began := time.Now()
		ms, err := src.Discover(ctx)
		took := time.Since(began)
		require.NoError(t, err)
		assert.Len(t, ms, 3, briefMembers(ms))
		assert.Len(t, primaries(ms), 1, briefMembers(ms))
		assert.Less(t, took, 2*sourceTimeout+time.Second)
		began = time.Now()
		_, err = src.Discover(ctx)
		again := time.Since(began)
		require.NoError(t, err)
		assert.Less(t, again, sourceTimeout, "the next Discover asked a frozen API first")
		t.Logf("PATRONI SOURCE: 2 of 3 REST APIs frozen: Discover answers in %v, then in %v (it starts with the one that answered)", took, again)

		// All frozen: ErrUnreachable within the timeout per URL.
		require.NoError(t, pc.FreezePatroni(ctx, members[2].Name()))
		began = time.Now()
		_, err = src.Discover(ctx)
		took = time.Since(began)
		require.Error(t, err)
		assert.ErrorIs(t, err, patroni.ErrUnreachable)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		var ue *patroni.URLError
		assert.True(t, errors.As(err, &ue))
		assert.GreaterOrEqual(t, took, 3*sourceTimeout)
		assert.Less(t, took, 3*sourceTimeout+time.Second, "frozen REST APIs held Discover past the timeout per URL")
		t.Logf("PATRONI SOURCE: every REST API frozen: Discover gives up after %v (3 URLs x %v): %v", took, sourceTimeout, err)

		for _, m := range members {
			require.NoError(t, pc.Thaw(ctx, m.Name()))
		}
		thawed := time.Now()
		t.Logf("PATRONI SOURCE: Patroni frozen for %v in all (ttl %v)", thawed.Sub(frozenAt), pc.TTL())
		testwait.For(t, 30*time.Second, "Discover answering after Thaw", func() (bool, error) {
			var err error
			ms, err = src.Discover(ctx)
			return err == nil && len(primaries(ms)) == 1, err
		})
		t.Logf("PATRONI SOURCE: Discover answers %v after Thaw: %s", time.Since(thawed), briefMembers(ms))
		require.NoError(t, pc.WaitHealthy(ctx))
	})
}

// aPatroniReplica returns the name of a member other than leader.
func aPatroniReplica(t *testing.T, pc *pgcluster.PatroniCluster, leader string) string {
	t.Helper()
	for _, m := range pc.Members() {
		if m.Name() != leader {
			return m.Name()
		}
	}
	t.Fatal("no replica")
	return ""
}

// TestPatroniSourceDebianPackage points a Source at Debian bookworm's
// Patroni 3.0.2, which reports replicas "running" rather than "streaming",
// when TestPatroniSource ran another version: the members, the leader and
// DSNs that reach each server.
func TestPatroniSourceDebianPackage(t *testing.T) {
	skipShort(t)
	def := os.Getenv("DBROUTER_PATRONI") // what StartPatroni runs by default
	if def == "" && isExecutable(pgcluster.PatroniBin4) {
		def = pgcluster.PatroniBin4
	}
	if def == "" || def == pgcluster.PatroniBinDebian {
		t.Logf("TestPatroniSource already ran %s", pgcluster.PatroniBinDebian)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pc := pgcluster.StartPatroniT(t, pgcluster.PatroniOptions{Bin: pgcluster.PatroniBinDebian})
	require.True(t, strings.HasPrefix(pc.Version(), "3."), "version %s", pc.Version())
	src, err := patroni.New(patroniSourceDSN, pc.RESTURLs()...)
	require.NoError(t, err)
	t.Cleanup(src.CloseIdleConnections)

	leader, err := pc.Leader(ctx)
	require.NoError(t, err)
	ms, err := src.Discover(ctx)
	require.NoError(t, err)
	require.Len(t, ms, 3, briefMembers(ms))
	assert.Equal(t, []string{leader.Name()}, primaries(ms))
	checkMemberDSNs(ctx, t, ms)
	t.Logf("PATRONI SOURCE on Patroni %s: %s", pc.Version(), briefMembers(ms))
}

// isExecutable reports whether path is a file with an execute bit.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode().Perm()&0o111 != 0
}
