package dbrouter

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
)

// The health state machine on fake PostgreSQL nodes. The tests run probes by
// hand (no background loop) on an injected clock, so nothing sleeps.

func nodeStatus(t *testing.T, db *DB, name string) NodeStatus {
	t.Helper()
	s, ok := db.Status().Node(name)
	require.True(t, ok, "no node %q", name)
	return s
}

// statements counts the queries and execs a node ran, probes aside.
func statements(c *fakedriver.Connector) int {
	n := 0
	for _, call := range c.Calls() {
		if (call.Op == fakedriver.OpQuery || call.Op == fakedriver.OpExec) && call.SQL != postgresProbe {
			n++
		}
	}
	return n
}

func TestProbeLearnsRolesAndPositions(t *testing.T) {
	pc := newPGCluster(t, 2)
	pc.pg[0].lsn.Store(5000)
	pc.pg[1].lsn.Store(4000)
	pc.probe()
	s := pc.db.Status()
	assert.Equal(t, "primary", s.Primary)
	p, r1 := s.Nodes[0], s.Nodes[1]
	assert.Equal(t, RolePrimary, p.Role)
	assert.Equal(t, StateUp, p.State)
	assert.Equal(t, uint64(5000), p.LSN)
	assert.Equal(t, uint32(1), p.Timeline)
	assert.Equal(t, RoleReplica, r1.Role)
	assert.True(t, r1.Readable)
	assert.True(t, r1.Streaming)
	assert.Equal(t, int64(1000), r1.LagBytes)
	assert.Equal(t, uint64(4000), r1.LSN)
}

func TestHysteresis(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2)

	pc.pg[0].fail.Store(true)
	pc.probe()
	assert.Equal(t, "primary", pc.db.Status().Primary, "one failed probe does not mark a node down")
	assert.Equal(t, StateUp, nodeStatus(t, pc.db, "primary").State)

	pc.probe()
	s := nodeStatus(t, pc.db, "primary")
	assert.Equal(t, StateDown, s.State, "the second failure in a row does")
	assert.Error(t, s.LastError)
	assert.Empty(t, pc.db.Status().Primary)
	assert.Contains(t, pc.eventKinds(), EventNodeDown)
	assert.Contains(t, pc.eventKinds(), EventNoPrimary)

	_, err := pc.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	assert.ErrorIs(t, err, ErrNoPrimary)
	assert.Contains(t, served(t, pc.db, ctx, "SELECT 1"), "replica", "reads keep flowing to replicas")

	pc.pg[0].fail.Store(false)
	pc.probe()
	assert.Equal(t, "primary", pc.db.Status().Primary, "one success brings it back")
	assert.Contains(t, pc.eventKinds(), EventNodeUp)
	_, err = pc.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	assert.NoError(t, err)
}

func TestFollowsPromotionAndFencesTheOldPrimary(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2)
	// The primary crashes; replica1 is promoted (timeline 2); replica2 still
	// follows the dead primary on timeline 1.
	pc.pg[0].fail.Store(true)
	pc.pg[2].streaming.Store(false)
	pc.probe()
	pc.probe()
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(2)
	pc.probe()

	s := pc.db.Status()
	assert.Equal(t, "replica1", s.Primary)
	r2 := nodeStatus(t, pc.db, "replica2")
	assert.True(t, r2.StaleTimeline, "a replica on an older timeline holds none of the new writes")
	assert.False(t, r2.Readable)
	for range 5 {
		assert.Equal(t, "replica1", served(t, pc.db, ctx, "SELECT 1"), "no eligible replica: reads use the new primary")
	}
	_, err := pc.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	assert.Equal(t, 1, pc.conns[1].Count(fakedriver.OpExec))

	// The old primary returns as a primary on its old timeline: fenced.
	for _, c := range pc.conns {
		c.Reset()
		c.SetRecord(true)
	}
	pc.pg[0].fail.Store(false)
	pc.probe()
	p := nodeStatus(t, pc.db, "primary")
	assert.Equal(t, StateFenced, p.State)
	assert.Equal(t, RolePrimary, p.Role)
	assert.Contains(t, pc.eventKinds(), EventFenced)
	for range 10 {
		served(t, pc.db, ctx, "SELECT 1")
		_, err := pc.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
		require.NoError(t, err)
	}
	assert.Zero(t, statements(pc.conns[0]), "a fenced node serves no reads and no writes")
	assert.Equal(t, 10, statements(pc.conns[1])-10, "10 writes on the new primary, and 10 reads (no replica is eligible)")

	// Re-pointed replica2 streams on timeline 2: it serves reads again.
	pc.pg[2].timeline.Store(2)
	pc.pg[2].streaming.Store(true)
	pc.probe()
	assert.True(t, nodeStatus(t, pc.db, "replica2").Readable)
	assert.Contains(t, pc.eventKinds(), EventReplicaIncluded)
	assert.Equal(t, "replica2", served(t, pc.db, ctx, "SELECT 1"))

	// The old primary is rebuilt as a replica of the new one: unfenced.
	pc.pg[0].inRecovery.Store(true)
	pc.pg[0].timeline.Store(2)
	pc.probe()
	p = nodeStatus(t, pc.db, "primary")
	assert.Equal(t, StateUp, p.State)
	assert.True(t, p.Readable)
	assert.Contains(t, pc.eventKinds(), EventUnfenced)
	assert.Equal(t, "replica1", pc.db.Status().Primary)
}

func TestTwoPrimariesHigherTimelineWinsAtOnce(t *testing.T) {
	pc := newPGCluster(t, 1)
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(2)
	pc.probe()
	assert.Equal(t, "replica1", pc.db.Status().Primary)
	assert.Equal(t, StateFenced, nodeStatus(t, pc.db, "primary").State)
	// The fence holds while the winner is down: the loser's data diverged.
	pc.pg[1].fail.Store(true)
	pc.probe()
	pc.probe()
	assert.Empty(t, pc.db.Status().Primary)
	assert.Equal(t, StateFenced, nodeStatus(t, pc.db, "primary").State)
}

func TestWritesWaitForAPrimary(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1, WithPrimaryWait(time.Minute))
	pc.pg[0].fail.Store(true)
	pc.probe()
	pc.probe()
	require.Empty(t, pc.db.Status().Primary)

	done := make(chan error, 1)
	go func() {
		_, err := pc.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("the write did not wait for a primary: %v", err)
	default:
	}
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(2)
	pc.probe()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the write did not proceed once a primary was known")
	}
	assert.Equal(t, 1, pc.conns[1].Count(fakedriver.OpExec))

	t.Run("bounded by the context", func(t *testing.T) {
		pc := newPGCluster(t, 1, WithPrimaryWait(time.Minute))
		pc.pg[0].fail.Store(true)
		pc.probe()
		pc.probe()
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		began := time.Now()
		_, err := pc.db.ExecContext(cctx, "INSERT INTO t VALUES (1)")
		assert.ErrorIs(t, err, ErrNoPrimary)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, time.Since(began), 5*time.Second)
		_, err = pc.db.BeginTx(cctx, nil)
		assert.ErrorIs(t, err, ErrNoPrimary)
	})
	t.Run("bounded by the option", func(t *testing.T) {
		pc := newPGCluster(t, 1, WithPrimaryWait(20*time.Millisecond))
		pc.pg[0].fail.Store(true)
		pc.probe()
		pc.probe()
		_, err := pc.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
		assert.ErrorIs(t, err, ErrNoPrimary)
		_, err = pc.db.Conn(ctx)
		assert.ErrorIs(t, err, ErrNoPrimary)
		assert.ErrorIs(t, pc.db.QueryRowContext(ctx, "INSERT INTO t VALUES (1) RETURNING 1").Scan(new(int)), ErrNoPrimary)
	})
}

func TestReplicaFlappingNeverMovesThePrimary(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2)
	for i := range 20 {
		pc.pg[1].fail.Store(i%3 != 0)
		pc.probe()
		assert.Equal(t, "primary", pc.db.Status().Primary)
		_, err := pc.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
		require.NoError(t, err)
	}
	assert.NotContains(t, pc.eventKinds(), EventPrimaryChanged)
	assert.NotContains(t, pc.eventKinds(), EventNoPrimary)
	assert.Contains(t, pc.eventKinds(), EventNodeDown)
	assert.Equal(t, 20, pc.conns[0].Count(fakedriver.OpExec))
}

func TestPassiveSignalAsksForOneCoalescedProbe(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1)
	r := pc.db.nodes[1]
	pc.conns[1].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
		if op == fakedriver.OpQuery && q == "SELECT broken" {
			return &fakedriver.Error{Code: "08006", Message: "connection failure"}
		}
		if op == fakedriver.OpQuery && q == "SELECT typo" {
			return &fakedriver.Error{Code: "42601", Message: "syntax error"}
		}
		return nil
	})
	_ = pc.db.QueryRowContext(ctx, "SELECT typo").Err()
	assert.Len(t, r.probeNow, 0, "a statement error says nothing about the node")
	for range 3 {
		_ = pc.db.QueryRowContext(ctx, "SELECT broken").Err()
	}
	assert.Len(t, r.probeNow, 1, "connection errors ask for one probe, coalesced")
	assert.Equal(t, StateUp, nodeStatus(t, pc.db, "replica1").State, "one error never marks a node down")
}

func TestAutoPromote(t *testing.T) {
	crash := func(t *testing.T, opts ...Option) *pgCluster {
		pc := newPGCluster(t, 2, opts...)
		pc.pg[1].lsn.Store(900)
		pc.pg[2].lsn.Store(1000)
		pc.pg[0].fail.Store(true)
		pc.probe()
		pc.probe()
		require.Empty(t, pc.db.Status().Primary)
		return pc
	}
	t.Run("promotes the most advanced replica once the replicas agree", func(t *testing.T) {
		pc := crash(t, WithAutoPromote(5*time.Second))
		pc.pg[1].streaming.Store(false)
		pc.pg[2].streaming.Store(false)
		pc.clock.advance(4 * time.Second)
		pc.probe()
		assert.Zero(t, pc.pg[2].promotes.Load(), "not before the configured time")
		pc.clock.advance(2 * time.Second)
		pc.probe()
		waitFor(t, 10*time.Second, "promotion", func() bool { return pc.pg[2].promotes.Load() == 1 })
		assert.Zero(t, pc.pg[1].promotes.Load())
		waitFor(t, 10*time.Second, "promotion finished", func() bool {
			pc.db.mu.Lock()
			defer pc.db.mu.Unlock()
			return !pc.db.hs.promoting
		})
		pc.probe()
		assert.Equal(t, "replica2", pc.db.Status().Primary)
		assert.Contains(t, pc.eventKinds(), EventPromoted)
	})
	t.Run("no promotion while a replica still streams", func(t *testing.T) {
		pc := crash(t, WithAutoPromote(time.Second))
		pc.pg[2].streaming.Store(false) // replica1 still streams from the primary: only we lost it
		for range 5 {
			pc.clock.advance(time.Second)
			pc.probe()
		}
		assert.Zero(t, pc.pg[1].promotes.Load()+pc.pg[2].promotes.Load())
		assert.Empty(t, pc.db.Status().Primary)
	})
	t.Run("no promotion when the receiver state is hidden from the probing role", func(t *testing.T) {
		pc := crash(t, WithAutoPromote(time.Second))
		pc.pg[1].streaming.Store(false)
		pc.pg[2].streaming.Store(false)
		pc.pg[1].hidden.Store(true)
		for range 5 {
			pc.clock.advance(time.Second)
			pc.probe()
		}
		assert.Zero(t, pc.pg[1].promotes.Load()+pc.pg[2].promotes.Load())
		assert.Equal(t, "hidden", nodeStatus(t, pc.db, "replica1").WALReceiver)
	})
	t.Run("off by default", func(t *testing.T) {
		pc := crash(t)
		pc.pg[1].streaming.Store(false)
		pc.pg[2].streaming.Store(false)
		pc.clock.advance(time.Hour)
		pc.probe()
		assert.Zero(t, pc.pg[1].promotes.Load()+pc.pg[2].promotes.Load())
	})
}

func TestMaxLagExcludesAndReadmits(t *testing.T) {
	ctx := context.Background()
	t.Run("bytes", func(t *testing.T) {
		pc := newPGCluster(t, 2, WithMaxLag(1000, 0))
		pc.pg[0].lsn.Store(10_000)
		pc.pg[1].lsn.Store(10_000)
		pc.pg[2].lsn.Store(5_000)
		pc.probe()
		pc.probe() // the primary's position is sampled once it is the primary
		r2 := nodeStatus(t, pc.db, "replica2")
		assert.True(t, r2.LagExcluded)
		assert.Equal(t, int64(5000), r2.LagBytes)
		for range 6 {
			assert.Equal(t, "replica1", served(t, pc.db, ctx, "SELECT 1"))
		}
		assert.Contains(t, pc.eventKinds(), EventReplicaExcluded)
		pc.pg[2].lsn.Store(10_000)
		pc.probe()
		assert.False(t, nodeStatus(t, pc.db, "replica2").LagExcluded)
		assert.Contains(t, pc.eventKinds(), EventReplicaIncluded)
	})
	t.Run("time, measured against the primary's positions", func(t *testing.T) {
		pc := newPGCluster(t, 1, WithMaxLag(0, 2*time.Second))
		pc.pg[0].lsn.Store(100)
		pc.pg[1].lsn.Store(100)
		pc.probe()
		pc.clock.advance(time.Second)
		pc.pg[0].lsn.Store(200) // a write the replica has not replayed
		pc.probe()
		r := nodeStatus(t, pc.db, "replica1")
		assert.Zero(t, r.LagTime)
		assert.False(t, r.LagExcluded)
		pc.clock.advance(3 * time.Second)
		pc.probe()
		r = nodeStatus(t, pc.db, "replica1")
		assert.Equal(t, 3*time.Second, r.LagTime)
		assert.True(t, r.LagExcluded)
		// Every replica over the limit: reads use the primary.
		assert.Equal(t, "primary", served(t, pc.db, ctx, "SELECT 1"))
		pc.pg[1].lsn.Store(200)
		pc.clock.advance(time.Minute) // an idle primary does not make it late
		pc.probe()
		r = nodeStatus(t, pc.db, "replica1")
		assert.Zero(t, r.LagTime)
		assert.False(t, r.LagExcluded)
	})
	t.Run("fallback off", func(t *testing.T) {
		pc := newPGCluster(t, 1, WithMaxLag(10, 0), WithReplicaFallback(false))
		pc.pg[0].lsn.Store(100)
		pc.probe()
		pc.probe()
		assert.ErrorIs(t, pc.db.QueryRowContext(ctx, "SELECT 1").Scan(new(string)), ErrNoReplica)
	})
}

func TestProbeCadence(t *testing.T) {
	pc := newPGCluster(t, 1, WithProbeInterval(5*time.Second), WithMaxBackoff(800*time.Millisecond))
	p, r := pc.db.nodes[0], pc.db.nodes[1]
	assert.Equal(t, 5*time.Second, pc.db.probeDelay(r), "all well: the probe interval")

	pc.pg[1].fail.Store(true)
	pc.probe()
	assert.Equal(t, DefaultFastProbeInterval, pc.db.probeDelay(r), "a failed probe is confirmed fast")
	pc.probe()
	var last time.Duration
	for range 10 {
		last = pc.db.probeDelay(r)
		assert.LessOrEqual(t, last, 800*time.Millisecond, "backoff is capped")
	}
	assert.Greater(t, last, DefaultFastProbeInterval, "a down node is probed with growing backoff")

	pc.pg[0].fail.Store(true)
	pc.probe()
	assert.Equal(t, DefaultFastProbeInterval, pc.db.probeDelay(p), "a suspect primary: probe fast")
}

func TestEventsAreEmittedWithoutTheLock(t *testing.T) {
	var calls int
	var pc *pgCluster
	pc = newPGCluster(t, 1, WithEventHook(func(e Event) {
		calls++
		_ = pc.db.Status() // deadlocks if the hook ran under DB.mu
	}))
	pc.pg[1].fail.Store(true)
	pc.probe()
	pc.probe()
	assert.Positive(t, calls)
}

func TestNoStateWrittenAfterClose(t *testing.T) {
	pc := newPGCluster(t, 1)
	require.NoError(t, pc.db.Close())
	before := pc.db.Status()
	pc.db.apply(pc.db.nodes[0], probeResult{err: sql.ErrConnDone}, 0)
	pc.db.apply(pc.db.nodes[0], probeResult{err: sql.ErrConnDone}, 0)
	assert.Equal(t, before, pc.db.Status())
}

func TestBackgroundProbesFollowAPromotion(t *testing.T) {
	// The real loop, fast: the primary fails, a replica is promoted, and
	// writes follow without a hand-run probe. Time here is real.
	f := newFakeNodes(t, 1)
	pgs := []*fakePG{newFakePG(f.conns[0], false, 1), newFakePG(f.conns[1], true, 1)}
	db, err := New(f.dbs[0], f.dbs[1:], WithProbeInterval(20*time.Millisecond), WithPrimaryWait(10*time.Second))
	require.NoError(t, err)
	defer db.Close()
	require.Equal(t, "primary", db.Status().Primary)
	f.conns[0].SetDown(true)
	pgs[1].inRecovery.Store(false)
	pgs[1].timeline.Store(2)
	waitFor(t, 10*time.Second, "the promoted replica to be primary", func() bool {
		return db.Status().Primary == "replica1"
	})
	_, err = db.ExecContext(context.Background(), "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	assert.Equal(t, 1, f.conns[1].Count(fakedriver.OpExec))
	waitFor(t, 10*time.Second, "old primary down", func() bool {
		return nodeStatus(t, db, "primary").State == StateDown
	})
}

func TestAutoPromoteNeverPicksAStaleReplica(t *testing.T) {
	pc := newPGCluster(t, 3, WithAutoPromote(time.Second))
	// First failover: replica1 becomes primary on timeline 2; replica3
	// follows it; replica2 is never re-pointed and stays on timeline 1, with
	// the highest replayed position of the two (its old timeline's WAL).
	pc.pg[0].fail.Store(true)
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(2)
	pc.pg[1].lsn.Store(5000)
	pc.pg[2].streaming.Store(false)
	pc.pg[2].lsn.Store(9000)
	pc.pg[3].timeline.Store(2)
	pc.pg[3].lsn.Store(4000)
	pc.probe()
	pc.probe()
	require.Equal(t, "replica1", pc.db.Status().Primary)
	require.True(t, nodeStatus(t, pc.db, "replica2").StaleTimeline)
	require.False(t, nodeStatus(t, pc.db, "replica3").StaleTimeline)
	// Then the new primary dies too; replica3's stream stops (its vote).
	pc.pg[1].fail.Store(true)
	pc.pg[3].streaming.Store(false)
	for range 5 {
		pc.clock.advance(time.Second)
		pc.probe()
	}
	waitFor(t, 10*time.Second, "a promotion", func() bool { return pc.pg[3].promotes.Load() == 1 })
	assert.Zero(t, pc.pg[2].promotes.Load(), "a replica on an older timeline is never promoted, however far it replayed")
}

func TestAutoPromoteNeedsAVoteFromAReplicaThatStreamed(t *testing.T) {
	// An archive-fed replica never streams: its "not streaming" proves
	// nothing about the primary.
	pc := newPGClusterSetup(t, 1, func(pg []*fakePG) { pg[1].streaming.Store(false) }, WithAutoPromote(time.Second))
	pc.pg[0].fail.Store(true)
	for range 5 {
		pc.clock.advance(time.Second)
		pc.probe()
	}
	assert.Zero(t, pc.pg[1].promotes.Load())
}

func TestPrimaryHandleIsNeverFenced(t *testing.T) {
	pc := newPGCluster(t, 1)
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(2)
	pc.probe() // the configured primary loses to timeline 2: fenced
	require.Equal(t, StateFenced, nodeStatus(t, pc.db, "primary").State)
	pc.pg[1].fail.Store(true)
	pc.probe()
	pc.probe() // and the winner goes down: no primary known
	require.Empty(t, pc.db.Status().Primary)
	assert.Same(t, pc.dbs[1], pc.db.Primary(), "the last known primary, not the fenced node")
	assert.Same(t, pc.dbs[1], pc.db.Replica())
	_, err := pc.db.PrimaryContext(context.Background())
	assert.ErrorIs(t, err, ErrNoPrimary)
}

func TestTimeLagUnknownAtStartExcludes(t *testing.T) {
	pc := newPGClusterSetup(t, 1, func(pg []*fakePG) {
		pg[0].lsn.Store(1_000_000)
		pg[1].lsn.Store(10) // far behind, from before this DB started
	}, WithMaxLag(0, 5*time.Second))
	pc.probe()
	r := nodeStatus(t, pc.db, "replica1")
	assert.True(t, r.LagExcluded, "behind all known history: excluded until it is within it (%+v)", r)
	pc.pg[1].lsn.Store(1_000_000)
	pc.probe()
	assert.False(t, nodeStatus(t, pc.db, "replica1").LagExcluded)
}

func TestForcedPrimaryReadIsNotRetriedOnAReplica(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 1)
	db := f.router(t, withoutBackground(), WithRouter(func(_ context.Context, q string, _ bool) Target {
		switch q {
		case "SELECT billing":
			return Primary
		case "SELECT named":
			return NodeNamed("primary")
		}
		return Default
	}))
	f.conns[0].SetDown(true)
	for _, tc := range []struct {
		ctx   context.Context
		query string
	}{{UsePrimary(ctx), "SELECT 1"}, {ctx, "SELECT billing"}, {ctx, "SELECT named"}} {
		err := db.QueryRowContext(tc.ctx, tc.query).Scan(new(string))
		assert.Error(t, err, "a read demanded of the primary must not come from a replica")
		_, err = db.QueryContext(tc.ctx, tc.query)
		assert.Error(t, err)
	}
	assert.Zero(t, f.conns[1].Count(fakedriver.OpQuery))
}

func TestProbesAreNotStarvedByABusyPool(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1, WithProbeTimeout(500*time.Millisecond))
	pc.db.SetMaxOpenConns(2)           // one kept by the probes, one for the application
	tx, err := pc.db.BeginTx(ctx, nil) // the application's: the pool is full now
	require.NoError(t, err)
	defer tx.Rollback()
	for range 3 {
		pc.probe()
	}
	p := nodeStatus(t, pc.db, "primary")
	assert.Equal(t, StateUp, p.State, "a full pool does not make a healthy primary look down: %v", p.LastError)
	assert.Equal(t, "primary", pc.db.Status().Primary)
}

func TestSetMaxOpenConnsOneLeavesTheApplicationItsConnection(t *testing.T) {
	f := newFakeNodes(t, 1)
	newFakePG(f.conns[0], false, 1)
	newFakePG(f.conns[1], true, 1)
	db, err := New(f.dbs[0], f.dbs[1:], WithProbeInterval(10*time.Millisecond))
	require.NoError(t, err)
	defer db.Close()
	db.SetMaxOpenConns(1)
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
		cancel()
		require.NoError(t, err, "the probes must not hold the only connection")
	}
	assert.Equal(t, "primary", db.Status().Primary)
}

func TestPrimaryRefusingAWriteAsksForAProbe(t *testing.T) {
	pc := newPGCluster(t, 1)
	pc.conns[0].SetHook(func(_ context.Context, op fakedriver.Op, _ string) error {
		if op == fakedriver.OpExec {
			return fakedriver.ReadOnlyError() // it was demoted
		}
		return nil
	})
	_, err := pc.db.ExecContext(context.Background(), "INSERT INTO t VALUES (1)")
	assert.Equal(t, "25006", sqlState(err))
	assert.Len(t, pc.db.nodes[0].probeNow, 1, "a primary that refuses writes is probed at once")
	assert.Equal(t, 1, pc.conns[0].Count(fakedriver.OpExec), "and the write is not run again")
}

func TestADeadlineRunningOutOnThePrimaryAsksForAProbe(t *testing.T) {
	pc := newPGCluster(t, 1)
	pc.conns[0].SetHook(func(ctx context.Context, op fakedriver.Op, _ string) error {
		if op == fakedriver.OpExec {
			<-ctx.Done() // a hung primary
			return ctx.Err()
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := pc.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Len(t, pc.db.nodes[0].probeNow, 1)
}

func TestPrimaryContextWaitsForAPrimary(t *testing.T) {
	pc := newPGCluster(t, 1, WithPrimaryWait(time.Minute))
	pc.pg[0].fail.Store(true)
	pc.probe()
	pc.probe()
	got := make(chan *sql.DB, 1)
	go func() {
		h, err := pc.db.PrimaryContext(context.Background())
		assert.NoError(t, err)
		got <- h
	}()
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(2)
	pc.probe()
	select {
	case h := <-got:
		assert.Same(t, pc.dbs[1], h)
	case <-time.After(10 * time.Second):
		t.Fatal("PrimaryContext did not return the new primary")
	}
}

func TestSwappedConfigurationWritesGoToTheRealPrimary(t *testing.T) {
	// The DSNs were given the wrong way round (or a failover happened while
	// the application was down): the first probe round in New fixes it
	// before any statement runs.
	f := newFakeNodes(t, 1)
	newFakePG(f.conns[0], true, 2)  // configured primary, really a replica
	newFakePG(f.conns[1], false, 2) // configured replica, really the primary
	db, err := New(f.dbs[0], f.dbs[1:], WithProbeInterval(time.Hour))
	require.NoError(t, err)
	defer db.Close()
	_, err = db.ExecContext(context.Background(), "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	assert.Equal(t, 1, f.conns[1].Count(fakedriver.OpExec))
	assert.Zero(t, f.conns[0].Count(fakedriver.OpExec))
	assert.Equal(t, "primary", served(t, db, context.Background(), "SELECT 1"), "its reads go to the real replica")
}

func TestRoutersNeverGetAFencedOrLaggingNode(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2, WithMaxLag(100, 0), WithRouter(func(_ context.Context, q string, _ bool) Target {
		return NodeNamed(q[len("SELECT /* ") : len(q)-len(" */ 1")])
	}))
	// replica1 is promoted; the configured primary is fenced; replica2 lags.
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(2)
	pc.pg[1].lsn.Store(10_000)
	pc.pg[2].timeline.Store(2)
	pc.pg[2].lsn.Store(10)
	pc.probe()
	pc.probe()
	require.Equal(t, StateFenced, nodeStatus(t, pc.db, "primary").State)
	require.True(t, nodeStatus(t, pc.db, "replica2").LagExcluded)
	assert.Equal(t, "replica1", served(t, pc.db, ctx, "SELECT /* primary */ 1"), "not the fenced node")
	assert.Equal(t, "replica1", served(t, pc.db, ctx, "SELECT /* replica2 */ 1"), "not the lagging replica")
}

func TestEventsAreDeliveredInOrder(t *testing.T) {
	var got []string
	db := &DB{cfg: defaultConfig()}
	db.cfg.logger = slog.New(slog.DiscardHandler)
	db.cfg.hook = func(e Event) { got = append(got, e.Detail) }
	db.evCond = sync.NewCond(&db.evMu)
	second := make(chan struct{})
	go func() {
		db.emitInOrder(2, []Event{{Detail: "second"}}) // issued second, ready first
		close(second)
	}()
	select {
	case <-second:
		t.Fatal("batch 2 was emitted before batch 1")
	case <-time.After(50 * time.Millisecond):
	}
	db.emitInOrder(1, []Event{{Detail: "first"}})
	<-second
	assert.Equal(t, []string{"first", "second"}, got)
}

func TestEventsAreLogged(t *testing.T) {
	var buf safeBuffer
	pc := newPGCluster(t, 1, WithLogger(slog.New(slog.NewTextHandler(&buf, nil))))
	pc.pg[1].fail.Store(true)
	pc.probe()
	pc.probe()
	assert.Contains(t, buf.String(), `level=WARN msg="dbrouter: node down" event="node down" node=replica1`)
}

// safeBuffer is a bytes.Buffer for concurrent writers.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPrepareRoutedFollowsAFailover(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1)
	st, err := pc.db.PrepareRouted(ctx, "UPDATE t SET a = $1")
	require.NoError(t, err)
	defer st.Close()
	_, err = st.ExecContext(ctx, 1)
	require.NoError(t, err)
	pc.pg[0].fail.Store(true)
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(2)
	pc.probe()
	pc.probe()
	require.Equal(t, "replica1", pc.db.Status().Primary)
	_, err = st.ExecContext(ctx, 2)
	require.NoError(t, err)
	assert.Equal(t, 1, pc.conns[1].Count(fakedriver.OpPrepare), "prepared on the new primary when first needed")
	assert.Equal(t, 1, pc.conns[1].Count(fakedriver.OpExec))
	assert.Equal(t, 1, pc.conns[0].Count(fakedriver.OpExec))
}

func TestDefaults(t *testing.T) {
	c := defaultConfig()
	assert.Equal(t, time.Second, c.probeInterval)
	assert.Equal(t, time.Second, c.probeTimeout)
	assert.Equal(t, 2, c.failureThreshold)
	assert.Equal(t, 3*time.Second, c.primaryWait)
	assert.Equal(t, 2*time.Second, c.maxBackoff)
	assert.True(t, c.readOnlyTxOnReplica)
	assert.True(t, c.replicaFallback)
	assert.False(t, c.autoPromote)
	assert.Zero(t, c.maxLagBytes)
	assert.Zero(t, c.maxLagTime)
	assert.Equal(t, SessionCausal(0), c.session)
	assert.Equal(t, PostgreSQL(), c.dialect)
	require.NoError(t, c.validate())
	assert.IsType(t, &roundRobin{}, c.balancer)
}

func TestIsConnError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"bad conn", driver.ErrBadConn, true},
		{"wrapped bad conn", fmt.Errorf("x: %w", driver.ErrBadConn), true},
		{"EOF", io.EOF, true},
		{"unexpected EOF", io.ErrUnexpectedEOF, true},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"reset", syscall.ECONNRESET, true},
		{"08006", &fakedriver.Error{Code: "08006"}, true},
		{"08001", &fakedriver.Error{Code: "08001"}, true},
		{"57P01 admin shutdown", &fakedriver.Error{Code: "57P01"}, true},
		{"57P02 crash shutdown", &fakedriver.Error{Code: "57P02"}, true},
		{"57P03 cannot connect now", &fakedriver.Error{Code: "57P03"}, true},
		{"syntax error", &fakedriver.Error{Code: "42601"}, false},
		{"unique violation", &fakedriver.Error{Code: "23505"}, false},
		{"read-only", &fakedriver.Error{Code: "25006"}, false},
		{"caller canceled", context.Canceled, false},
		{"caller deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"no rows", sql.ErrNoRows, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, isConnError(tt.err))
		})
	}
}

func TestAutoPromoteOnceEvenIfThePromotedNodeVanishes(t *testing.T) {
	pc := newPGCluster(t, 2, WithAutoPromote(5*time.Second), WithFailureThreshold(1))
	r1 := pc.pg[1]
	pc.pg[1].lsn.Store(100)
	pc.pg[2].lsn.Store(90)
	pc.probe()
	pc.conns[1].SetResponder(func(q string, a []driver.NamedValue) ([]string, [][]driver.Value, error) {
		c, r, err := r1.respond(q, a)
		if strings.Contains(q, "pg_promote") {
			r1.fail.Store(true) // promoted, then cut off from this router
		}
		return c, r, err
	})
	pc.pg[0].fail.Store(true)
	pc.pg[1].streaming.Store(false)
	pc.pg[2].streaming.Store(false)
	pc.probe()
	pc.clock.advance(6 * time.Second)
	pc.probe() // promotes replica1
	pc.probe()
	pc.clock.advance(6 * time.Second)
	pc.probe()
	pc.probe()
	assert.Equal(t, int32(1), pc.pg[1].promotes.Load())
	assert.Zero(t, pc.pg[2].promotes.Load(), "replica1 was promoted and may well be serving: no second primary")
}

func TestAHookThatEndsItsGoroutineDoesNotStopEvents(t *testing.T) {
	f := newFakeNodes(t, 2)
	var n atomic.Int32
	db, err := New(f.dbs[0], f.dbs[1:], WithDialect(Generic()), WithProbeInterval(10*time.Millisecond),
		WithFailureThreshold(1), WithEventHook(func(Event) {
			if n.Add(1) == 1 {
				runtime.Goexit() // as t.FailNow or require do inside a hook
			}
		}))
	require.NoError(t, err)
	f.conns[1].SetDown(true)
	waitFor(t, 10*time.Second, "the first event", func() bool { return n.Load() >= 1 })
	f.conns[2].SetDown(true)
	waitFor(t, 10*time.Second, "a later event", func() bool { return n.Load() >= 2 })
	closed := make(chan struct{})
	go func() { db.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Error("Close hangs")
	}
}
