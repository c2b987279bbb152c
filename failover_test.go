package dbrouter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
	"github.com/dbrouter/dbrouter/internal/testwait"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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

	// A waiting write asks every node for a probe (probeAllNow) before it
	// waits; clear the mark of the last such request to see it do so.
	pc.db.lastProbeAll.Store(0)
	done := make(chan error, 1)
	go func() {
		_, err := pc.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
		done <- err
	}()
	testwait.Until(t, 10*time.Second, "the write to ask for probes", func() bool { return pc.db.lastProbeAll.Load() != 0 })
	select {
	case err := <-done:
		t.Fatalf("the write did not wait for a primary: %v", err)
	default: // it waits: nothing can end the wait but a primary, or a minute
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
		assert.ErrorIs(t, err, context.DeadlineExceeded, "the context, spent waiting, ends the transaction's wait too")
	})
	t.Run("bounded by the option", func(t *testing.T) {
		pc := newPGCluster(t, 1, WithPrimaryWait(20*time.Millisecond))
		pc.pg[0].fail.Store(true)
		pc.probe()
		pc.probe()
		_, err := pc.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
		assert.ErrorIs(t, err, ErrNoPrimary)
		c, err := pc.db.Conn(ctx) // routed when its statements are sent
		require.NoError(t, err)
		_, err = c.ExecContext(ctx, "INSERT INTO t VALUES (1)")
		assert.ErrorIs(t, err, ErrNoPrimary)
		require.NoError(t, c.Close())
		_, err = pc.db.BeginTx(ctx, nil)
		assert.ErrorIs(t, err, ErrNoPrimary)
		assert.ErrorIs(t, pc.db.QueryRowContext(ctx, "INSERT INTO t VALUES (1) RETURNING 1").Scan(new(int)), ErrNoPrimary)
	})
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
		testwait.Until(t, 10*time.Second, "promotion", func() bool { return pc.pg[2].promotes.Load() == 1 })
		assert.Zero(t, pc.pg[1].promotes.Load())
		pc.promotionEnded(t)
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

// The facts of a promotion come from every replica that is up: one that
// does not give them may be the most advanced, and promoting another would
// lose the writes only it has.
func TestAutoPromoteHearsFromEveryReplicaThatIsUp(t *testing.T) {
	crashed := func(t *testing.T) *pgCluster {
		pc := newPGCluster(t, 2, WithAutoPromote(time.Second))
		pc.pg[1].lsn.Store(900)
		pc.pg[2].lsn.Store(1000) // the most advanced
		pc.pg[0].fail.Store(true)
		pc.pg[1].streaming.Store(false)
		pc.pg[2].streaming.Store(false)
		return pc
	}
	promoted := func(t *testing.T, pc *pgCluster) {
		t.Helper()
		for i := 0; i < 10 && pc.pg[1].promotes.Load()+pc.pg[2].promotes.Load() == 0; i++ {
			pc.clock.advance(time.Second)
			pc.probe()
			pc.promotionEnded(t)
		}
	}
	t.Run("a kept connection that died idle is asked again on a new one", func(t *testing.T) {
		pc := crashed(t)
		var asked atomic.Int32
		pc.conns[2].SetHook(func(_ context.Context, op fakedriver.Op, query string) error {
			if op == fakedriver.OpQuery && query == promotionProbe && asked.Add(1) == 1 {
				return &fakedriver.Error{Code: "57P05", Message: "terminating connection due to idle-session timeout"}
			}
			return nil
		})
		promoted(t, pc)
		assert.Equal(t, int32(1), pc.pg[2].promotes.Load(), "the most advanced replica promoted")
		assert.Zero(t, pc.pg[1].promotes.Load(), "a replica 100 bytes behind promoted: the writes only replica2 had are lost")
		assert.GreaterOrEqual(t, asked.Load(), int32(2))
	})
	t.Run("no promotion while a replica that is up does not answer", func(t *testing.T) {
		pc := crashed(t)
		var silent atomic.Bool
		var asked atomic.Int32
		silent.Store(true)
		pc.conns[2].SetHook(func(_ context.Context, op fakedriver.Op, query string) error {
			if op == fakedriver.OpQuery && query == promotionProbe && silent.Load() {
				// A new message each time, as a timeout naming a new local port is.
				return &fakedriver.Error{Code: "53300", Message: fmt.Sprintf("sorry, too many clients already (%d)", asked.Add(1))}
			}
			return nil
		})
		promoted(t, pc)
		assert.Zero(t, pc.pg[1].promotes.Load()+pc.pg[2].promotes.Load(), "promoted without replica2's facts")
		require.Equal(t, StateUp, nodeStatus(t, pc.db, "replica2").State)
		pc.eventKinds()
		assert.Equal(t, uint64(1), pc.db.Status().EventCounts[EventPromoteFailed],
			"10 attempts called off for the same reason: said once, not once a second")

		// The primary comes back, then dies again: the same reason is told
		// again, once, for the new outage.
		pc.pg[0].fail.Store(false)
		pc.pg[1].streaming.Store(true)
		pc.pg[2].streaming.Store(true)
		pc.probe() // the primary is known again
		pc.probe() // and the replicas seen streaming from it: their votes count again
		require.Equal(t, "primary", pc.db.Status().Primary)
		pc.pg[0].fail.Store(true)
		pc.pg[1].streaming.Store(false)
		pc.pg[2].streaming.Store(false)
		pc.probe()
		pc.probe()
		require.Empty(t, pc.db.Status().Primary)
		promoted(t, pc)
		pc.eventKinds()
		assert.Equal(t, uint64(2), pc.db.Status().EventCounts[EventPromoteFailed], "the second outage's attempts")

		silent.Store(false) // it answers: the most advanced is promoted
		promoted(t, pc)
		assert.Equal(t, int32(1), pc.pg[2].promotes.Load())
		assert.Zero(t, pc.pg[1].promotes.Load())
	})
	t.Run("a replica that is down is not waited for", func(t *testing.T) {
		pc := crashed(t)
		pc.pg[2].fail.Store(true)
		promoted(t, pc)
		assert.Equal(t, StateDown, nodeStatus(t, pc.db, "replica2").State)
		assert.Equal(t, int32(1), pc.pg[1].promotes.Load())
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
	// replica2, which can never be promoted, does not answer the last
	// question: that is no reason to wait.
	pc.pg[1].fail.Store(true)
	pc.pg[3].streaming.Store(false)
	pc.conns[2].SetHook(func(_ context.Context, op fakedriver.Op, query string) error {
		if op == fakedriver.OpQuery && query == promotionProbe {
			return &fakedriver.Error{Code: "53300", Message: "sorry, too many clients already"}
		}
		return nil
	})
	for range 5 {
		pc.clock.advance(time.Second)
		pc.probe()
	}
	testwait.Until(t, 10*time.Second, "a promotion", func() bool { return pc.pg[3].promotes.Load() == 1 })
	assert.Zero(t, pc.pg[2].promotes.Load(), "a replica on an older timeline is never promoted, however far it replayed")
}

// A replica of another cluster is never promoted, however far it
// replayed, and neither votes nor vetoes.
func TestAutoPromoteNeverPicksANodeOfAnotherCluster(t *testing.T) {
	pc := newPGClusterSetup(t, 3, func(pg []*fakePG) { pg[3].sysid.Store(fakeSysid + 1) }, WithAutoPromote(time.Second))
	pc.pg[1].lsn.Store(900)
	pc.pg[2].lsn.Store(800)
	pc.pg[3].lsn.Store(9000) // another history: its positions mean nothing here
	pc.pg[0].fail.Store(true)
	pc.pg[1].streaming.Store(false)
	pc.pg[2].streaming.Store(false)
	// replica3 streams from its own primary: that is no sign of ours.
	for range 5 {
		pc.clock.advance(time.Second)
		pc.probe()
	}
	testwait.Until(t, 10*time.Second, "a promotion", func() bool { return pc.pg[1].promotes.Load() == 1 })
	assert.Zero(t, pc.pg[3].promotes.Load(), "a replica of another cluster promoted")
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

// eventsOf returns the events of kind delivered so far.
func (pc *pgCluster) eventsOf(kind EventKind) []Event {
	pc.db.events.flush()
	pc.mu.Lock()
	defer pc.mu.Unlock()
	var es []Event
	for _, e := range pc.events {
		if e.Kind == kind {
			es = append(es, e)
		}
	}
	return es
}

// A node of another cluster (its system identifier is not the one most
// nodes share) serves nothing, and its timeline does not count: a DSN that
// points at the wrong server must never be read from, written to, or fence
// the real primary. (Before, such a replica served its share of the reads,
// and such a primary on a higher timeline fenced the real one.)
func TestANodeOfAnotherClusterServesNothing(t *testing.T) {
	ctx := context.Background()
	const other = fakeSysid + 1
	t.Run("a replica", func(t *testing.T) {
		pc := newPGClusterSetup(t, 2, func(pg []*fakePG) { pg[2].sysid.Store(other) })
		for range 10 {
			assert.Equal(t, "replica1", served(t, pc.db, ctx, "SELECT 1"))
		}
		r2, _ := pc.db.Status().Node("replica2")
		assert.Equal(t, StateUp, r2.State)
		assert.False(t, r2.Readable)
		excluded := pc.eventsOf(EventReplicaExcluded)
		require.Len(t, excluded, 1)
		assert.Equal(t, "replica2", excluded[0].Node)
		assert.Contains(t, excluded[0].Detail, "another cluster")

		pc.pg[2].sysid.Store(fakeSysid) // re-pointed at the right server
		pc.probe()
		assert.Equal(t, map[string]int{"replica1": 5, "replica2": 5}, tally(10, func() string { return served(t, pc.db, ctx, "SELECT 1") }))
		assert.Len(t, pc.eventsOf(EventReplicaIncluded), 1)
	})
	t.Run("a primary on a higher timeline", func(t *testing.T) {
		pc := newPGClusterSetup(t, 2, func(pg []*fakePG) {
			pg[2].sysid.Store(other)
			pg[2].inRecovery.Store(false)
			pg[2].timeline.Store(5)
		})
		pc.probe()
		assert.Equal(t, "primary", pc.db.Status().Primary)
		assert.Equal(t, "primary", served(t, pc.db, ctx, "INSERT INTO t VALUES (1) RETURNING 1"))
		r2, _ := pc.db.Status().Node("replica2")
		assert.Equal(t, StateFenced, r2.State)
		fenced := pc.eventsOf(EventFenced)
		require.Len(t, fenced, 1)
		assert.Equal(t, "replica2", fenced[0].Node)
		assert.Contains(t, fenced[0].Detail, "another cluster")
		for range 4 {
			assert.Equal(t, "replica1", served(t, pc.db, ctx, "SELECT 1"))
		}
	})
	t.Run("the configured primary", func(t *testing.T) {
		pc := newPGClusterSetup(t, 2, func(pg []*fakePG) { pg[0].sysid.Store(other) })
		assert.Empty(t, pc.db.Status().Primary, "the replicas' cluster has no primary here")
		_, err := pc.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
		require.ErrorIs(t, err, ErrNoPrimary)
		p, _ := pc.db.Status().Node("primary")
		assert.Equal(t, StateFenced, p.State)
		assert.Equal(t, map[string]int{"replica1": 2, "replica2": 2}, tally(4, func() string { return served(t, pc.db, ctx, "SELECT 1") }))
	})
	t.Run("a tie goes to the configured primary's cluster", func(t *testing.T) {
		pc := newPGClusterSetup(t, 1, func(pg []*fakePG) { pg[1].sysid.Store(other) })
		assert.Equal(t, "primary", pc.db.Status().Primary)
		r1, _ := pc.db.Status().Node("replica1")
		assert.False(t, r1.Readable)
		assert.Equal(t, "primary", served(t, pc.db, ctx, "SELECT 1"), "no replica of its own: the fallback")
	})
}

// The old primary P crashed; replica1 was promoted to timeline 2 but the
// router cannot reach it; replica2 streams timeline 2 from it. P restarts as
// a primary on timeline 1: a timeline seen on a replica proves it lost, so it
// is fenced, and takes neither writes nor reads. (Before, only primaries'
// timelines counted, and P became the write primary.)
func TestFenceCountsReplicasTimelines(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2)
	pc.pg[0].fail.Store(true) // P crashed
	pc.probe()
	pc.probe()
	pc.pg[1].fail.Store(true) // replica1 promoted, out of the router's reach
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(2)
	pc.pg[2].timeline.Store(2) // replica2 re-pointed: streams timeline 2
	pc.probe()
	pc.pg[0].fail.Store(false) // P back, a primary on timeline 1
	pc.probe()
	pc.probe()
	s := pc.db.Status()
	assert.Empty(t, s.Primary, "no node may take writes")
	assert.Equal(t, StateFenced, nodeStatus(t, pc.db, "primary").State)
	_, err := pc.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	assert.ErrorIs(t, err, ErrNoPrimary)
	assert.Equal(t, 0, pc.conns[0].Count(fakedriver.OpExec), "a write reached the node on the old timeline")
	assert.Equal(t, "replica2", served(t, pc.db, ctx, "SELECT 1"), "reads stay on the replica of the new timeline")
}

// A cluster on timeline 5, whose replicas' last restartpoints are on 3 and
// 4, loses its primary: the receivers stop, and the probes only have those
// restartpoints' timelines. The replicas streamed timeline 5 until then, so
// they go on serving reads; they are not judged against a primary that is
// gone. (Before, both were excluded as stale within one probe and every
// read waited for a primary and failed.)
func TestReplicasServeReadsWhenAPrimaryOnALaterTimelineDies(t *testing.T) {
	ctx := context.Background()
	pc := newPGClusterSetup(t, 2, func(pg []*fakePG) {
		for i, p := range pg {
			p.timeline.Store(5)
			if i > 0 {
				p.restartTL.Store(uint32(2 + i)) // 3 and 4
			}
		}
	})
	require.Equal(t, uint32(5), nodeStatus(t, pc.db, "replica1").Timeline)
	pc.pg[0].fail.Store(true) // the primary dies
	for _, p := range pc.pg[1:] {
		p.streaming.Store(false)
	}
	pc.probe()
	pc.probe()
	require.Empty(t, pc.db.Status().Primary)
	for _, name := range []string{"replica1", "replica2"} {
		r := nodeStatus(t, pc.db, name)
		assert.True(t, r.Readable, "%s excluded: %+v", name, r)
		assert.False(t, r.StaleTimeline, name)
		assert.Equal(t, uint32(5), r.Timeline, "%s: the timeline it last streamed", name)
	}
	for range 4 {
		assert.Contains(t, served(t, pc.db, ctx, "SELECT 1"), "replica")
	}
	// replica1 is promoted to timeline 6; replica2, not yet re-pointed, is
	// behind it now, until it streams timeline 6.
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(6)
	pc.probe()
	assert.Equal(t, "replica1", pc.db.Status().Primary)
	assert.True(t, nodeStatus(t, pc.db, "replica2").StaleTimeline)
	pc.pg[2].timeline.Store(6)
	pc.pg[2].streaming.Store(true)
	pc.probe()
	assert.True(t, nodeStatus(t, pc.db, "replica2").Readable)
}

// A replica left on the old timeline stays out of reads when the primary
// of the new timeline is lost too.
func TestAStaleReplicaStaysOutWhileNoPrimaryIsKnown(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2)
	pc.pg[0].fail.Store(true)
	pc.probe()
	pc.probe()
	pc.pg[1].inRecovery.Store(false) // replica1 promoted; replica2 left behind on 1
	pc.pg[1].timeline.Store(2)
	pc.pg[2].streaming.Store(false)
	pc.probe()
	require.True(t, nodeStatus(t, pc.db, "replica2").StaleTimeline)
	pc.pg[1].fail.Store(true) // the new primary is lost as well
	pc.probe()
	pc.probe()
	require.Empty(t, pc.db.Status().Primary)
	assert.True(t, nodeStatus(t, pc.db, "replica2").StaleTimeline)
	assert.False(t, nodeStatus(t, pc.db, "replica2").Readable)
	_, err := pc.db.QueryContext(ctx, "SELECT 1")
	assert.ErrorIs(t, err, ErrNoPrimary, "no reader left: not the stale replica")
}

// Two application instances, each with its own DB over the same servers
// and each running auto-promotion, list the replicas in different orders;
// the replicas are tied on their positions. They must not promote two
// replicas (before, each promoted the first of its own list, and the two
// fenced each other for good): the first promotes the replica the servers'
// own facts pick, and the second, asking every node right before it
// promotes, finds that one a primary already and promotes nothing.
func TestAutoPromotionByTwoInstancesPromotesOneReplica(t *testing.T) {
	f := newFakeNodes(t, 2)
	pg := []*fakePG{newFakePG(f.conns[0], false, 1), newFakePG(f.conns[1], true, 1), newFakePG(f.conns[2], true, 1)}
	for i, p := range pg {
		p.lsn.Store(1000)
		p.started.Store(1_700_000_000_000_000 + int64(10-i)) // replica2's postmaster started first
	}
	clock := newFakeClock()
	open := func(primary *sql.DB, replicas ...*sql.DB) *DB {
		db, err := New(primary, replicas, withClock(clock), withoutBackground(), WithPrimaryWait(0), WithAutoPromote(time.Second))
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		db.probeAll()
		return db
	}
	a := open(f.dbs[0], f.dbs[1], f.dbs[2])
	b := open(f.dbs[0], f.dbs[2], f.dbs[1]) // the other order
	pg[0].fail.Store(true)                  // the primary dies, the replicas notice
	pg[1].streaming.Store(false)
	pg[2].streaming.Store(false)
	for _, db := range []*DB{a, b} {
		db.probeAll()
		db.probeAll()
	}
	clock.advance(2 * time.Second)
	a.probeAll() // a promotes
	b.probeAll() // b must not
	testwait.Until(t, 10*time.Second, "both done promoting", func() bool {
		for _, db := range []*DB{a, b} {
			db.mu.Lock()
			busy := db.hs.promoting
			db.mu.Unlock()
			if busy {
				return false
			}
		}
		return true
	})
	assert.Equal(t, int32(0), pg[1].promotes.Load(), "replica1 promoted")
	assert.Equal(t, int32(1), pg[2].promotes.Load(), "replica2, whose server started first, promoted once")
	a.probeAll()
	b.probeAll()
	assert.Same(t, f.dbs[2], a.Primary(), "a writes to the promoted replica")
	assert.Same(t, f.dbs[2], b.Primary(), "b writes to the promoted replica")
}

// The choice depends on what the servers report, never on the order of the
// configuration: the highest replayed position, then the highest received,
// then the server that started first, then the lower port.
func TestChoosePromotion(t *testing.T) {
	n1, n2, n3 := &node{name: "n1"}, &node{name: "n2"}, &node{name: "n3"}
	rep := func(n *node, replay, receive uint64, started, port int64) promotionFact {
		return promotionFact{n: n, inRecovery: true, replay: replay, receive: receive, timeline: 1, receiver: "none", started: started, port: port}
	}
	for _, tc := range []struct {
		name  string
		facts []promotionFact
		want  *node // nil: no promotion
	}{
		{"highest replay", []promotionFact{rep(n1, 10, 10, 1, 1), rep(n2, 20, 20, 2, 2)}, n2},
		{"then highest receive", []promotionFact{rep(n1, 10, 30, 2, 2), rep(n2, 10, 20, 1, 1)}, n1},
		{"then first started", []promotionFact{rep(n1, 10, 10, 5, 1), rep(n2, 10, 10, 3, 2)}, n2},
		{"then lower port", []promotionFact{rep(n1, 10, 10, 3, 9), rep(n2, 10, 10, 3, 2)}, n2},
		{"a primary on the newest timeline", []promotionFact{rep(n1, 10, 10, 1, 1), {n: n3, timeline: 1}}, nil},
		{"a primary on an older timeline is ignored", []promotionFact{rep(n1, 10, 10, 1, 1), {n: n3, timeline: 0}}, n1},
		{"a replica still streams", []promotionFact{rep(n1, 10, 10, 1, 1), func() promotionFact {
			f := rep(n2, 5, 5, 1, 1)
			f.receiver = "streaming"
			return f
		}()}, nil},
		{"a replica follows a newer timeline", []promotionFact{rep(n1, 10, 10, 1, 1), func() promotionFact {
			f := rep(n2, 5, 5, 1, 1)
			f.timeline = 2
			return f
		}()}, nil},
		{"unreachable nodes do not count", []promotionFact{{n: n3, err: errors.New("down")}, rep(n1, 10, 10, 1, 1)}, n1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := choosePromotion(tc.facts, 1, 0)
			if tc.want == nil {
				assert.Error(t, err)
				assert.Nil(t, got)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want.name, got.name)
			reversed := slices.Clone(tc.facts)
			slices.Reverse(reversed)
			again, err := choosePromotion(reversed, 1, 0)
			require.NoError(t, err)
			assert.Equal(t, tc.want.name, again.name, "the order of the facts changed the choice")
		})
	}
}

// TestTwoPrimariesOnTheNewestTimelineTakeNoWrites: the primary is lost and
// both replicas are promoted (two promoters, or one that could not see the
// other's promotion): two servers are primaries on timeline 2, with
// histories that part there. Neither takes writes, through this DB or one
// listing the replicas in the other order, until one of them is a replica
// again; then it is the primary. (Before, each DB wrote to the one it
// listed first: two application instances split the writes.) Two DSNs of
// one server are not two primaries.
func TestTwoPrimariesOnTheNewestTimelineTakeNoWrites(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2)
	other, err := New(pc.dbs[0], []*sql.DB{pc.dbs[2], pc.dbs[1]}, WithNames("primary", "replica2", "replica1"),
		withClock(pc.clock), withoutBackground(), WithPrimaryWait(0))
	require.NoError(t, err)
	defer other.Close()
	pc.pg[0].fail.Store(true)
	for _, p := range pc.pg[1:] {
		p.inRecovery.Store(false)
		p.timeline.Store(2)
	}
	for range 2 {
		pc.probe()
		other.probeAll()
	}
	for _, db := range []*DB{pc.db, other} {
		assert.Empty(t, db.Status().Primary)
		for _, name := range []string{"replica1", "replica2"} {
			assert.Equal(t, StateFenced, nodeStatus(t, db, name).State, name)
		}
		_, err := db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
		assert.ErrorIs(t, err, ErrNoPrimary)
	}
	pc.db.events.flush()
	pc.mu.Lock()
	last := map[string]string{} // the last fence of each node says why
	for _, e := range pc.events {
		if e.Kind == EventFenced {
			last[e.Node] = e.Detail
		}
	}
	pc.mu.Unlock()
	for _, name := range []string{"replica1", "replica2"} {
		assert.Equal(t, "two primaries on timeline 2: replica1 and replica2", last[name], name)
	}

	// replica2 is made a replica of replica1 again (pg_rewind): replica1 is
	// the primary of both DBs.
	pc.pg[2].inRecovery.Store(true)
	pc.probe()
	other.probeAll()
	for _, db := range []*DB{pc.db, other} {
		assert.Equal(t, "replica1", db.Status().Primary)
		assert.Equal(t, "replica1", served(t, db, ctx, "INSERT INTO t VALUES (1) RETURNING 1"))
	}

	// One server behind two DSNs: its postmaster started once.
	alias := newPGCluster(t, 1)
	alias.pg[1].inRecovery.Store(false)
	alias.pg[1].started.Store(alias.pg[0].started.Load())
	alias.probe()
	assert.Equal(t, "primary", alias.db.Status().Primary)
}

// TestAnAliasOfARestartedPrimaryIsNoRival: two DSNs of one server, which
// restarts. The first DSN's probe reports the new start before the second's
// does (its probe failed once as the server went down): the two look like
// two servers until the second answers again, and the primary is not fenced
// meanwhile.
func TestAnAliasOfARestartedPrimaryIsNoRival(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1)
	alias := pc.pg[1]
	alias.inRecovery.Store(false)
	alias.started.Store(pc.pg[0].started.Load())
	pc.probe()
	require.Equal(t, "primary", pc.db.Status().Primary)

	alias.fail.Store(true)
	pc.pg[0].started.Add(60_000_000) // restarted a minute later
	pc.probe()
	assert.Equal(t, "primary", pc.db.Status().Primary, "fenced as a rival of its own alias")
	_, err := pc.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	assert.NoError(t, err)

	alias.fail.Store(false)
	alias.started.Store(pc.pg[0].started.Load())
	pc.probe()
	assert.Equal(t, "primary", pc.db.Status().Primary)
	assert.Zero(t, pc.db.Status().EventCounts[EventNoPrimary])
}

// primaryGoneDiscovered returns an OpenDiscovered DB with
// WithAutoPromote(time.Second) on a fake clock, whose replicas were seen
// streaming from the primary m0, which is then down, neither of them
// streaming any more.
func primaryGoneDiscovered(t *testing.T) (*discovered, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	d := newDiscovered(t, withClock(clock), WithAutoPromote(time.Second), WithFailureThreshold(1))
	d.round()
	d.pg["m0"].fail.Store(true)
	d.pg["m1"].streaming.Store(false)
	d.pg["m2"].streaming.Store(false)
	return d, clock
}

// promotionRounds runs up to n rounds of discovery and probes, each
// followed by 2 s of clock and the end of any promotion attempt, until
// done reports true.
func (d *discovered) promotionRounds(t *testing.T, clock *fakeClock, n int, done func() bool) {
	t.Helper()
	for i := 0; i < n && !done(); i++ {
		d.round()
		clock.advance(2 * time.Second)
		promotionEnded(t, d.db)
	}
}

// TestAutoPromoteNeverPromotesBehindAnAnsweringSource: with OpenDiscovered,
// a source that answers decides who is primary (only the leader it names
// takes writes). While it answers, naming a leader the router cannot reach,
// the router must not promote a replica behind the HA manager's back.
func TestAutoPromoteNeverPromotesBehindAnAnsweringSource(t *testing.T) {
	d, clock := primaryGoneDiscovered(t)
	d.promotionRounds(t, clock, 3, func() bool { return false })
	require.True(t, d.db.Status().Discovery.Reachable)
	require.Equal(t, "m0", d.db.Status().Discovery.Leader)
	assert.Zero(t, d.pg["m1"].promotes.Load()+d.pg["m2"].promotes.Load(), "promoted while the source names another leader")

	d.src.set(errors.New("etcd down")) // the source is gone too: the router's own rules apply
	d.promotionRounds(t, clock, 3, func() bool { return false })
	assert.Equal(t, int32(1), d.pg["m1"].promotes.Load()+d.pg["m2"].promotes.Load(), "promotions once the source is unreachable too")
}

// TestAutoPromoteWaitsFromOpenWhenNoPrimaryWasEverKnown: OpenDiscovered
// starts with no primary until a probe finds the leader. When the leader
// cannot be probed from the start, WithAutoPromote's wait still counts from
// Open: no promotion an instant after Open with WithAutoPromote(time.Hour).
func TestAutoPromoteWaitsFromOpenWhenNoPrimaryWasEverKnown(t *testing.T) {
	clock := newFakeClock()
	d := newDiscoveredSetup(t, func(pg map[string]*fakePG) { pg["m0"].fail.Store(true) },
		withClock(clock), WithAutoPromote(time.Hour), WithFailureThreshold(1))
	require.Equal(t, "", d.db.Status().Primary)
	d.src.set(errors.New("etcd down"))
	d.round() // the replicas are seen streaming; the source does not answer
	d.pg["m1"].streaming.Store(false)
	d.pg["m2"].streaming.Store(false)
	d.round()
	promotionEnded(t, d.db)
	assert.Zero(t, d.pg["m1"].promotes.Load()+d.pg["m2"].promotes.Load(), "promoted right after Open, with WithAutoPromote(time.Hour)")

	clock.advance(time.Hour)
	d.round()
	promotionEnded(t, d.db)
	assert.Equal(t, int32(1), d.pg["m1"].promotes.Load()+d.pg["m2"].promotes.Load(), "promotions after the hour")
}

// TestAFencedPrimaryStaysFencedWhileDown: the old primary, fenced on its
// old timeline while the new primary is out of reach, goes down. It is not
// "unfenced" (it never reported being in recovery), Primary() does not hand
// it out, and no "fenced" again when it comes back the same.
func TestAFencedPrimaryStaysFencedWhileDown(t *testing.T) {
	pc := newPGCluster(t, 2, WithFailureThreshold(1))
	pc.pg[0].fail.Store(true)
	pc.pg[1].fail.Store(true) // promoted, but out of this router's reach
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(2)
	pc.pg[2].timeline.Store(2) // replica2 streams from it on timeline 2
	pc.probe()
	pc.pg[0].fail.Store(false) // the old primary back, on timeline 1
	pc.probe()
	require.Equal(t, StateFenced, nodeStatus(t, pc.db, "primary").State)
	require.NotSame(t, pc.dbs[0], pc.db.Primary())
	fenced, unfenced := len(pc.eventsOf(EventFenced)), len(pc.eventsOf(EventUnfenced))

	pc.pg[0].fail.Store(true)
	pc.probe()
	assert.Equal(t, StateDown, nodeStatus(t, pc.db, "primary").State)
	assert.NotSame(t, pc.dbs[0], pc.db.Primary(), "Primary() handed out the old timeline's server")
	pc.pg[0].fail.Store(false)
	pc.probe()
	assert.Equal(t, StateFenced, nodeStatus(t, pc.db, "primary").State)
	assert.Len(t, pc.eventsOf(EventUnfenced), unfenced, "unfenced while it went down and came back")
	assert.Len(t, pc.eventsOf(EventFenced), fenced, "fenced again")

	pc.pg[0].inRecovery.Store(true) // rewound and following: a replica
	pc.probe()
	assert.Len(t, pc.eventsOf(EventUnfenced), unfenced+1)
}

// TestAnOlderProbeResultIsNotRecorded: two probes of one node (a
// promotion's own and the node's loop) run one after the other but take
// the lock to record in the other order. The older one, which saw the node
// still in recovery, must not undo what the newer one saw: the primary.
func TestAnOlderProbeResultIsNotRecorded(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1, WithFailureThreshold(1))
	pc.pg[0].fail.Store(true) // the primary is gone
	pc.probe()
	require.Equal(t, "", pc.db.Status().Primary)
	n := pc.db.nodeList()[1]
	older := pc.db.probe(ctx, n) // replica1 in recovery
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(2)
	newer := pc.db.probe(ctx, n) // replica1 promoted
	pc.db.apply(n, newer, 0)
	require.Equal(t, "replica1", pc.db.Status().Primary)
	pc.db.apply(n, older, 0)
	assert.Equal(t, "replica1", pc.db.Status().Primary, "the older probe's result undid the newer one's")
	assert.Empty(t, pc.eventsOf(EventNoPrimary)[1:], "no primary again after replica1 was seen promoted")
}

// TestAPromotedMemberThatLeftDoesNotHoldOffPromotions: a replica the router
// promoted (the source unreachable) leaves the source before it was probed
// again. Its promotion must not hold off the next one, when the source is
// unreachable again and the primary gone.
func TestAPromotedMemberThatLeftDoesNotHoldOffPromotions(t *testing.T) {
	d, clock := primaryGoneDiscovered(t)
	d.pg["m1"].lsn.Store(2000) // the most advanced
	d.src.set(errors.New("etcd down"))
	d.promotionRounds(t, clock, 5, func() bool { return d.pg["m1"].promotes.Load() > 0 })
	require.Equal(t, int32(1), d.pg["m1"].promotes.Load())
	m2 := d.db.mem.Load().byName["m2"]
	d.pg["m2"].streaming.Store(true) // m2 follows m1 (m1 itself not probed again)
	d.pg["m2"].timeline.Store(d.pg["m1"].timeline.Load())
	d.db.probeAndApply(m2)
	d.pg["m1"].fail.Store(true) // promoted, then gone
	d.pg["m2"].streaming.Store(false)
	d.db.probeAndApply(m2)
	d.src.set(nil, d.member("m0", false), d.member("m2", false))
	d.db.discover() // the source is back, without m1
	d.db.mu.Lock()
	stale := d.db.hs.promoted != nil
	d.db.mu.Unlock()
	assert.False(t, stale, "the promoted member that left is still remembered")

	d.src.set(errors.New("etcd down again"))
	d.promotionRounds(t, clock, 5, func() bool { return d.pg["m2"].promotes.Load() > 0 })
	assert.Equal(t, int32(1), d.pg["m2"].promotes.Load(), "m2 promoted, the primary and m1 being gone")
}
