package dbrouter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
	"github.com/dbrouter/dbrouter/internal/testwait"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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
	r := pc.db.nodeList()[1]
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

func TestProbeCadence(t *testing.T) {
	pc := newPGCluster(t, 1, WithProbeInterval(5*time.Second), WithMaxBackoff(800*time.Millisecond))
	p, r := pc.db.nodeList()[0], pc.db.nodeList()[1]
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

func TestNoStateWrittenAfterClose(t *testing.T) {
	pc := newPGCluster(t, 1)
	require.NoError(t, pc.db.Close())
	before := pc.db.Status()
	pc.db.apply(pc.db.nodeList()[0], probeResult{err: sql.ErrConnDone}, 0)
	pc.db.apply(pc.db.nodeList()[0], probeResult{err: sql.ErrConnDone}, 0)
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
	testwait.Until(t, 10*time.Second, "the promoted replica to be primary", func() bool {
		return db.Status().Primary == "replica1"
	})
	_, err = db.ExecContext(context.Background(), "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	assert.Equal(t, 1, f.conns[1].Count(fakedriver.OpExec))
	testwait.Until(t, 10*time.Second, "old primary down", func() bool {
		return nodeStatus(t, db, "primary").State == StateDown
	})
}

// The application's pool is saturated (every connection in use, more
// callers waiting) and a probe fails once, transiently: the next probes must
// not queue behind the waiting callers, time out and get the healthy node
// marked down. Before the probes had a pool of their own, the failed probe
// gave its kept connection back, a waiting caller took it, and the node went
// down ("primary=\"\" state=down"), writes failing with ErrNoPrimary.
func TestSaturatedPoolNeverMarksAHealthyNodeDown(t *testing.T) {
	for _, limit := range []int{1, 2} {
		t.Run(fmt.Sprintf("SetMaxOpenConns(%d)", limit), func(t *testing.T) {
			ctx := context.Background()
			pc := newPGCluster(t, 1, WithProbeTimeout(200*time.Millisecond))
			pc.db.SetMaxOpenConns(limit)
			var held []*sql.Tx
			for range limit { // the application holds every connection
				// A deadline, so that a pool short of connections fails the
				// test rather than hanging it; ended only by the test's end,
				// which rolls the transaction back.
				bctx, bcancel := context.WithTimeout(ctx, time.Minute)
				t.Cleanup(bcancel)
				tx, err := pc.db.BeginTx(bctx, nil)
				require.NoError(t, err, "the application cannot have all %d connections of its pool", limit)
				held = append(held, tx)
			}
			waiting, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { // and one more caller waits for a connection
				_, err := pc.db.ExecContext(waiting, "INSERT INTO t VALUES (1)")
				done <- err
			}()
			defer func() {
				cancel()
				<-done
				for _, tx := range held {
					tx.Rollback()
				}
			}()
			testwait.For(t, 10*time.Second, "a caller waiting for a connection", func() (bool, error) {
				select {
				case err := <-done:
					done <- err
					return false, fmt.Errorf("the caller did not wait: %v", err)
				default:
				}
				return pc.dbs[0].Stats().WaitCount > 0, nil
			})
			pc.pg[0].fail.Store(true) // one transient failure
			pc.probe()
			pc.pg[0].fail.Store(false)
			for range 3 {
				pc.probe()
			}
			p := nodeStatus(t, pc.db, "primary")
			assert.Equal(t, StateUp, p.State, "a saturated pool made a healthy primary look down: %v", p.LastError)
			assert.Equal(t, "primary", pc.db.Status().Primary)
			assert.Equal(t, limit, pc.dbs[0].Stats().OpenConnections, "the probes use no connection of the application's pool")
		})
	}
}

// A transaction longer than the probe timeout, on a pool limited to one
// connection, leaves the node up.
func TestLongTransactionOnAOneConnectionPool(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1, WithProbeTimeout(100*time.Millisecond))
	pc.db.SetMaxOpenConns(1)
	tx, err := pc.db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	for range 4 {
		pc.probe()
	}
	assert.Equal(t, StateUp, nodeStatus(t, pc.db, "primary").State)
	_, err = tx.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
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
	assert.Len(t, pc.db.nodeList()[0].probeNow, 1, "a primary that refuses writes is probed at once")
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
	assert.Len(t, pc.db.nodeList()[0].probeNow, 1)
}

// A primary that hangs is suspected from its writes: one sent before the
// last watch still running while none has ended. The router then probes
// every node fast, and sees a replica promoted meanwhile, long before its
// next regular probe (an hour away here).
func TestStuckWritesMakeTheRouterProbeFast(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 1)
	pgs := []*fakePG{newFakePG(f.conns[0], false, 1), newFakePG(f.conns[1], true, 1)}
	db, err := New(f.dbs[0], f.dbs[1:], WithProbeInterval(time.Hour), WithPrimaryWait(0))
	require.NoError(t, err)
	defer db.Close()
	release := make(chan struct{})
	defer close(release)
	f.conns[0].SetHook(func(ctx context.Context, op fakedriver.Op, q string) error {
		if op == fakedriver.OpExec && q == "INSERT hangs" {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	})
	go db.ExecContext(ctx, "INSERT hangs")
	pgs[1].inRecovery.Store(false) // promoted while the primary hangs
	pgs[1].timeline.Store(2)
	testwait.Until(t, 10*time.Second, "the promotion seen", func() bool { return db.Status().Primary == "replica1" })
}

// TestAProbeWhoseKeptConnectionDiedAsksAgain: the connection the probes
// keep from one probe to the next dies as it idles (the server's
// idle_session_timeout, 57P05; a DBA's pg_terminate_backend of idle
// sessions, 57P01; a pooler's or a firewall's idle cut). The probe asks
// again on a new connection, so not even WithFailureThreshold(1) marks the
// node down, and it learns what the server says now. (Before, each such
// probe failed, and a 57P05 was taken for the server's answer: the node's
// state stayed as the last probe had seen it, whatever happened since.)
func TestAProbeWhoseKeptConnectionDiedAsksAgain(t *testing.T) {
	for _, code := range []string{"57P05", "57P01"} {
		t.Run(code, func(t *testing.T) {
			pc := newPGCluster(t, 2, WithFailureThreshold(1))
			replica := pc.pg[1]
			var asked atomic.Int32
			pc.conns[1].SetHook(func(_ context.Context, op fakedriver.Op, query string) error {
				if op == fakedriver.OpQuery && query == postgresProbe && asked.Add(1)%2 == 1 {
					return &fakedriver.Error{Code: code, Message: "terminating connection"}
				}
				return nil
			})
			for i := range 5 {
				replica.lsn.Store(uint64(1000 + i))
				pc.probe()
				s := nodeStatus(t, pc.db, "replica1")
				require.Equal(t, StateUp, s.State, "probe %d: %v", i, s.LastError)
				require.Equal(t, uint64(1000+i), s.LSN, "probe %d learns the position now", i)
			}
			assert.Equal(t, int32(10), asked.Load(), "each probe asked twice: on the kept connection, then on a new one")
			assert.NotContains(t, pc.eventKinds(), EventNodeDown)

			// A new connection that fails as well is a failed probe.
			replica.fail.Store(true)
			pc.probe()
			assert.Equal(t, StateDown, nodeStatus(t, pc.db, "replica1").State)
		})
	}
}

// The probes' pool is made from the connector the node's *sql.DB keeps in
// an unexported field: if a Go release moves it, this fails (the probes
// would silently share the application's pool again).
func TestProbesHaveAPoolOfTheirOwn(t *testing.T) {
	c := fakedriver.New("n")
	h := sql.OpenDB(c)
	defer h.Close()
	got := connectorOf(h)
	require.NotNil(t, got, "database/sql no longer keeps its connector where connectorOf looks")
	assert.Same(t, c, got.(*fakedriver.Connector))
	p := probePool(h)
	defer p.Close()
	assert.NotSame(t, h, p, "the probes share the application's pool")
}

// Which errors of a kept probe connection make the probe ask again on a new
// one: those that end the connection, not a hung server's timeout nor a
// pooler's word about its server or its pool.
func TestDiedIdle(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"idle_session_timeout", &fakedriver.Error{Code: "57P05"}, true},
		{"pg_terminate_backend", fakedriver.AdminShutdownError(), true},
		{"EOF", fmt.Errorf("waiting for the answer: %w", io.EOF), true},
		{"bad connection", driver.ErrBadConn, true},
		{"a timeout", &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, false},
		{"the probe's deadline", context.DeadlineExceeded, false},
		{"PgBouncer: its pool is full", &fakedriver.Error{Code: "08P01", Message: "query_wait_timeout"}, false},
		{"PgBouncer: the server behind is down", &fakedriver.Error{Code: "08P01", Message: "server login has been failing, try again later (server_login_retry)"}, false},
		{"an answer about the probe", &fakedriver.Error{Code: "42501"}, false},
	} {
		assert.Equal(t, c.want, diedIdle(c.err), c.name)
	}
}
