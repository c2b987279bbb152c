package dbrouter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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

func TestSessionTokenRoundTrip(t *testing.T) {
	s := NewSession()
	s.advance(0x1234ABCD, time.UnixMilli(1_700_000_000_123))
	tok := s.Token()
	assert.Less(t, len(tok), 40, "short enough for a cookie")
	r, err := ResumeSession(tok)
	require.NoError(t, err)
	assert.Equal(t, uint64(0x1234ABCD), r.lsn)
	assert.Equal(t, time.UnixMilli(1_700_000_000_123), r.lastWrite)
	assert.Equal(t, tok, r.Token())

	empty, err := ResumeSession(NewSession().Token())
	require.NoError(t, err)
	assert.Zero(t, empty.lsn)
	assert.True(t, empty.lastWrite.IsZero())
}

func TestResumeSessionRejectsGarbage(t *testing.T) {
	for _, tok := range []string{
		"", "v1", "v1..", "v1.x.0", "v1.0.x", "v2.0.0", "v1.0.0.0", "v1.-1.0", "v1.0.-1",
		"v1.ffffffffffffffffff.0", "v1.0.0 ", " v1.0.0", "v1.0." + string(make([]byte, 80)),
	} {
		t.Run(tok, func(t *testing.T) {
			s, err := ResumeSession(tok)
			assert.Nil(t, s)
			assert.ErrorIs(t, err, ErrInvalidToken)
		})
	}
}

func FuzzResumeSession(f *testing.F) {
	for _, seed := range []string{"v1.0.0", "v1.1a2b.18bcfe56800", "v1..", "garbage", "v1.ffffffffffffffff.7fffffffffffffff"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		s, err := ResumeSession(tok)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error %v is not ErrInvalidToken", err)
			}
			return
		}
		again, err := ResumeSession(s.Token())
		if err != nil || again.lsn != s.lsn || !again.lastWrite.Equal(s.lastWrite) {
			t.Fatalf("token %q does not round-trip: %v", tok, err)
		}
	})
}

func TestCausalSession(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2)
	pc.pg[0].lsn.Store(400)
	pc.pg[1].lsn.Store(400)
	pc.pg[2].lsn.Store(400)
	pc.probe()

	s := NewSession()
	sctx := WithSession(ctx, s)
	assert.Contains(t, served(t, pc.db, sctx, "SELECT 1"), "replica", "no write yet: any replica")

	pc.pg[0].lsn.Store(500) // the write's position
	_, err := pc.db.ExecContext(sctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	assert.Zero(t, s.lsn, "learned lazily, at the next read")
	for range 4 {
		assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"), "no replica has replayed the write")
		assert.Contains(t, served(t, pc.db, ctx, "SELECT 1"), "replica", "reads outside the session are not affected")
	}
	assert.Equal(t, uint64(500), s.lsn)
	pc.pg[1].lsn.Store(600)
	pc.probe()
	for range 4 {
		assert.Equal(t, "replica1", served(t, pc.db, sctx, "SELECT 1"), "only the replica that caught up")
	}

	// A custom router naming a replica that has not caught up is overruled.
	routed := newPGCluster(t, 2, WithRouter(func(context.Context, string, bool) Target { return NodeNamed("replica2") }))
	routed.pg[1].lsn.Store(600)
	routed.pg[2].lsn.Store(450)
	routed.probe()
	assert.Equal(t, "replica2", served(t, routed.db, ctx, "SELECT 1"))
	assert.Equal(t, "replica1", served(t, routed.db, sctx, "SELECT 1"), "the session needs 500")

	// The token carries the position to another DB.
	other := newPGCluster(t, 2)
	other.pg[1].lsn.Store(450)
	other.pg[2].lsn.Store(700)
	other.probe()
	resumed, err := ResumeSession(s.Token())
	require.NoError(t, err)
	for range 4 {
		assert.Equal(t, "replica2", served(t, other.db, WithSession(ctx, resumed), "SELECT 1"))
	}
}

func TestCausalSessionWaitsForAReplica(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1, WithSessionMode(SessionCausal(time.Second)))
	s := NewSession()
	s.advance(800, time.Now())
	pc.pg[1].lsn.Store(900) // replayed, but no probe has seen it yet
	assert.Equal(t, "replica1", served(t, pc.db, WithSession(ctx, s), "SELECT 1"), "the read asked the replica")
	assert.Equal(t, uint64(900), pc.db.nodeList()[1].replayed.Load())

	s.advance(1000, time.Now()) // never reached within maxWait
	began := time.Now()
	assert.Equal(t, "primary", served(t, pc.db, WithSession(ctx, s), "SELECT 1"))
	assert.GreaterOrEqual(t, time.Since(began), 900*time.Millisecond, "waited for the replica first")
}

func TestTimeSession(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1, WithSessionMode(SessionTime(2*time.Second)))
	s := NewSession()
	sctx := WithSession(ctx, s)
	_, err := pc.db.ExecContext(sctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"))
	pc.clock.advance(1900 * time.Millisecond)
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"))
	pc.clock.advance(200 * time.Millisecond)
	assert.Equal(t, "replica1", served(t, pc.db, sctx, "SELECT 1"))
}

func TestSessionTransactionIsResolvedAfterItEnds(t *testing.T) {
	pc, s, sctx := sessionCluster(t)
	tx, err := pc.db.BeginTx(sctx, nil)
	require.NoError(t, err)
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"), "while the transaction is open")
	pc.pg[0].lsn.Store(300) // its commit
	require.NoError(t, tx.Commit())
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"))
	assert.Equal(t, uint64(300), s.lsn)
	pc.pg[1].lsn.Store(300)
	pc.probe()
	assert.Equal(t, "replica1", served(t, pc.db, sctx, "SELECT 1"))

	// A read-only transaction is not a write.
	ro, err := pc.db.BeginTx(sctx, &sqlTxReadOnly)
	require.NoError(t, err)
	require.NoError(t, ro.Rollback())
	assert.Empty(t, s.pending)
}

var sqlTxReadOnly = sql.TxOptions{ReadOnly: true}

func TestSessionWriteQueryIsResolvedAtTheNextRead(t *testing.T) {
	pc, s, sctx := sessionCluster(t)
	// INSERT … RETURNING commits only once its rows are read: its position
	// is not taken when QueryRow returns.
	row := pc.db.QueryRowContext(sctx, "INSERT INTO t VALUES (1) RETURNING id")
	assert.Zero(t, s.lsn)
	pc.pg[0].lsn.Store(250) // the commit, once the row is read
	require.NoError(t, row.Scan(new(string)))
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"))
	assert.Equal(t, uint64(250), s.lsn)
	assert.Empty(t, s.pending)
	pc.pg[1].lsn.Store(250)
	pc.probe()
	assert.Equal(t, "replica1", served(t, pc.db, sctx, "SELECT 1"))
}

func TestSessionUnknownPositionIsLearnedLater(t *testing.T) {
	pc, s, sctx := sessionCluster(t)
	pc.pg[0].lsnFail.Store(true)
	_, err := pc.db.ExecContext(sctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err, "the write itself succeeded")
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"), "position unknown: the primary")
	tok := s.Token()
	assert.True(t, strings.HasSuffix(tok, ".p"), tok)

	pc.pg[0].lsnFail.Store(false)
	assert.Equal(t, "replica1", served(t, pc.db, sctx, "SELECT 1"), "learned now (100), and the replica has it: not stuck on the primary")
	assert.Equal(t, uint64(100), s.lsn)

	// A token that said "pending" is learned by the DB that reads next.
	resumed, err := ResumeSession(tok)
	require.NoError(t, err)
	pc.pg[0].lsn.Store(120)
	assert.Equal(t, "primary", served(t, pc.db, WithSession(context.Background(), resumed), "SELECT 1"))
	assert.Equal(t, uint64(120), resumed.lsn)
	assert.Empty(t, resumed.pending)
}

func TestSessionNotesAMisroutedWrite(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1)
	pc.pg[0].lsn.Store(100)
	pc.pg[1].lsn.Store(100)
	pc.probe()
	pc.conns[1].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
		if op == fakedriver.OpQuery && q == "SELECT do_write()" {
			return fakedriver.ReadOnlyError()
		}
		return nil
	})
	s := NewSession()
	sctx := WithSession(ctx, s)
	pc.pg[0].lsn.Store(200) // the write's commit
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT do_write()"))
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"), "the replica has not replayed the write")
	assert.Equal(t, uint64(200), s.lsn)
}

func TestSessionQueryWriteStaysPendingWhileRowsAreOpen(t *testing.T) {
	pc, s, sctx := sessionCluster(t)
	rows, err := pc.db.QueryContext(sctx, "INSERT INTO t VALUES (1) RETURNING id")
	require.NoError(t, err)
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"), "rows open: not committed yet")
	assert.Len(t, s.pending, 1)
	pc.pg[0].lsn.Store(300) // commits when the rows are closed
	require.NoError(t, rows.Close())
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"))
	assert.Equal(t, uint64(300), s.lsn)
	assert.Empty(t, s.pending)
}

func TestResumeSessionClampsAFutureWrite(t *testing.T) {
	s, err := ResumeSession("v1.0." + strconv.FormatInt(time.Now().Add(24*time.Hour).UnixMilli(), 16))
	require.NoError(t, err)
	assert.False(t, s.lastWrite.After(time.Now()), "a forged future write would pin time-mode reads to the primary")
}

// sessionCluster is a primary and a replica, both at WAL position 100, and a
// new session in a context.
func sessionCluster(t *testing.T) (*pgCluster, *Session, context.Context) {
	t.Helper()
	pc := newPGCluster(t, 1)
	pc.pg[0].lsn.Store(100)
	pc.pg[1].lsn.Store(100)
	pc.probe()
	s := NewSession()
	return pc, s, WithSession(context.Background(), s)
}

func TestSessionPendingWritesStayBounded(t *testing.T) {
	pc, s, sctx := sessionCluster(t)
	for range 1000 {
		_, err := pc.db.ExecContext(sctx, "INSERT INTO t VALUES (1)")
		require.NoError(t, err)
		rows, err := pc.db.QueryContext(sctx, "INSERT INTO t VALUES (1) RETURNING id")
		require.NoError(t, err)
		require.NoError(t, rows.Close())
	}
	assert.LessOrEqual(t, len(s.pending), 2, "a session that only writes keeps one entry for its ended writes")
	served(t, pc.db, sctx, "SELECT 1") // learns the position of all of them
	assert.Empty(t, s.pending)
}

func TestSessionIsSafeForConcurrentUse(t *testing.T) {
	pc, s, sctx := sessionCluster(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				switch (g + i) % 4 {
				case 0:
					_, err := pc.db.ExecContext(sctx, "INSERT INTO t VALUES (1)")
					assert.NoError(t, err)
				case 1:
					tx, err := pc.db.BeginTx(sctx, nil)
					if assert.NoError(t, err) {
						assert.NoError(t, tx.Commit())
					}
				case 2:
					_ = s.Token()
				default:
					var n string
					assert.NoError(t, pc.db.QueryRowContext(sctx, "SELECT 1").Scan(&n))
				}
			}
		})
	}
	wg.Wait()
	served(t, pc.db, sctx, "SELECT 1")
	assert.Empty(t, s.pending, "every write ended, and the last read learned their position")
}

// blockLSN makes the primary's next pg_current_wal_insert_lsn read its
// position, then signal entered and wait for release before answering.
func blockLSN(pc *pgCluster) (entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	p := pc.pg[0]
	once := false
	pc.conns[0].SetResponder(func(q string, args []driver.NamedValue) ([]string, [][]driver.Value, error) {
		if strings.Contains(q, "pg_current_wal_insert_lsn") && !once {
			once = true
			cols, rows, err := p.respond(q, args) // position read now
			close(entered)
			<-release
			return cols, rows, err
		}
		return p.respond(q, args)
	})
	return
}

// A plain write merged into an ended entry that a concurrent read is
// resolving with a position taken before that write.
func TestSessionWriteDuringAResolutionIsKept(t *testing.T) {
	pc, _, sctx := sessionCluster(t)
	pc.pg[0].lsn.Store(200)
	_, err := pc.db.ExecContext(sctx, "INSERT 1") // W1 at 200
	require.NoError(t, err)
	entered, release := blockLSN(pc)
	done := servedAsync(pc.db, sctx, "SELECT 1") // G2 resolves W1
	<-entered                                    // position 200 read
	pc.pg[0].lsn.Store(300)
	_, err = pc.db.ExecContext(sctx, "INSERT 2") // W2 at 300, after that read
	require.NoError(t, err)
	close(release)
	require.NoError(t, receive(t, done, 10*time.Second).err)
	pc.pg[1].lsn.Store(250) // replica has W1, not W2
	pc.probe()
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"), "W2 (300) must be visible")
}

// A transaction that committed after the position was read is pruned by
// addPending in favour of an ended entry being resolved.
func TestSessionTxCommittedDuringAResolutionIsKept(t *testing.T) {
	pc, _, sctx := sessionCluster(t)
	pc.pg[0].lsn.Store(200)
	_, err := pc.db.ExecContext(sctx, "INSERT 1") // W1 at 200, entry first
	require.NoError(t, err)
	tx, err := pc.db.BeginTx(sctx, nil)
	require.NoError(t, err)
	entered, release := blockLSN(pc)
	done := servedAsync(pc.db, sctx, "SELECT 1")
	<-entered
	pc.pg[0].lsn.Store(300)
	require.NoError(t, tx.Commit())              // commit at 300
	_, err = pc.db.ExecContext(sctx, "INSERT 3") // a plain write: prunes the tx, merges into W1
	require.NoError(t, err)
	close(release)
	require.NoError(t, receive(t, done, 10*time.Second).err)
	pc.pg[1].lsn.Store(250)
	pc.probe()
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"), "the tx (300) must be visible")
}

func TestSessionReadDoesNotWaitOnACancelledWriteQuery(t *testing.T) {
	pc, _, sctx := sessionCluster(t)
	qctx, cancel := context.WithCancel(sctx)
	rows, err := pc.db.QueryContext(qctx, "INSERT INTO t VALUES (1) RETURNING id")
	require.NoError(t, err)
	require.True(t, rows.Next())
	var b sql.RawBytes // holds the rows' lock until the next Next
	require.NoError(t, rows.Scan(&b))
	cancel() // database/sql now wants to close the rows, and waits for that lock
	done := servedAsync(pc.db, sctx, "SELECT 1")
	select {
	case a := <-done:
		assert.NoError(t, a.err)
	case <-time.After(5 * time.Second):
		t.Error("a session read waited on another query's rows")
		rows.Next() // let the rows go, and the read
		<-done
	}
	rows.Next()
}

// The lag limit holds while no primary is known: a replica far behind stays
// out of reads during a network cut to the primary, measured against the
// last positions known, and one slightly behind is not pushed over a time
// limit by the time that passes while nothing can commit. (Before, losing
// the primary cleared the positions and WithMaxLag excluded nothing.)
func TestLagLimitsHoldWhileNoPrimaryIsKnown(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2, WithMaxLag(500<<20, 2*time.Second))
	pc.pg[0].lsn.Store(1 << 40)
	pc.pg[1].lsn.Store(1 << 40)
	pc.probe()
	pc.clock.advance(time.Second)
	pc.pg[0].lsn.Store(1<<40 + 1000) // replica1 a second behind
	pc.pg[2].lsn.Store(1<<40 - 600<<20)
	pc.probe()
	require.True(t, nodeStatus(t, pc.db, "replica2").LagExcluded)
	require.True(t, nodeStatus(t, pc.db, "replica1").Readable)
	pc.pg[0].fail.Store(true) // the primary is cut off
	pc.probe()
	pc.probe()
	require.Empty(t, pc.db.Status().Primary)
	pc.clock.advance(time.Minute)
	pc.probe()
	r2 := nodeStatus(t, pc.db, "replica2")
	assert.True(t, r2.LagExcluded, "the replica 600 MB behind serves reads: %+v", r2)
	assert.Equal(t, int64(600<<20+1000), r2.LagBytes)
	assert.True(t, nodeStatus(t, pc.db, "replica1").Readable, "a minute without a primary is not a minute of lag")
	for range 6 {
		assert.Equal(t, "replica1", served(t, pc.db, ctx, "SELECT 1"))
	}
}

// An oversized token is refused before it is split: 1 MiB of dots once
// cost 16 MB of string headers.
func TestResumeSessionRefusesAnOversizedTokenCheaply(t *testing.T) {
	tok := strings.Repeat(".", 1<<20)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := ResumeSession(tok)
	runtime.ReadMemStats(&after)
	assert.ErrorIs(t, err, ErrInvalidToken)
	assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(64<<10), "bytes allocated to refuse it")
}

// A write whose connection failed after it was sent may have committed:
// the session reads from the primary until the primary's position covers
// it, though the replica has everything the session knew of. (Before, the
// failed write was forgotten and the next read went to the replica.)
func TestSessionRemembersAWriteOfUnknownOutcome(t *testing.T) {
	pc, _, sctx := sessionCluster(t)
	pc.conns[0].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
		if op == fakedriver.OpExec && q == "INSERT lost?" {
			return fakedriver.AdminShutdownError() // the server went away mid-statement
		}
		return nil
	})
	_, err := pc.db.ExecContext(sctx, "INSERT lost?")
	require.Error(t, err)
	pc.pg[0].lsn.Store(200) // where the primary is once the write may have committed
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"), "the write may be on the primary only")
	pc.pg[1].lsn.Store(200)
	pc.probe()
	assert.Equal(t, "replica1", served(t, pc.db, sctx, "SELECT 1"), "covered once the replica has the position")
}

// In time mode, a writing Query's window starts when its rows close: it
// commits then. (Before, it started with the query, and a query whose rows
// stayed open longer than the window left no window at all.)
func TestTimeSessionWindowStartsWhenRowsClose(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1, WithSessionMode(SessionTime(2*time.Second)))
	sctx := WithSession(ctx, NewSession())
	rows, err := pc.db.QueryContext(sctx, "INSERT INTO t VALUES (1) RETURNING id")
	require.NoError(t, err)
	pc.clock.advance(5 * time.Second) // the rows stay open a while
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"), "rows open: not committed yet")
	require.NoError(t, rows.Close())
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"), "the window starts at the close")
	pc.clock.advance(2100 * time.Millisecond)
	assert.Equal(t, "replica1", served(t, pc.db, sctx, "SELECT 1"))
}

// A session read whose writes' position must first be learned, while no
// primary is known, waits for one primary wait in all: not one to learn the
// position and a second to read from the primary. (Seen: 601 ms with
// WithPrimaryWait(300ms).)
func TestSessionReadWaitsForAPrimaryOnce(t *testing.T) {
	const wait = time.Second
	pc, _, sctx := sessionCluster(t)
	_, err := pc.db.ExecContext(sctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	pc.db.cfg.primaryWait = wait
	pc.pg[0].fail.Store(true)
	pc.probe()
	pc.probe()
	require.Empty(t, pc.db.Status().Primary)
	began := time.Now()
	err = pc.db.QueryRowContext(sctx, "SELECT 1").Scan(new(string))
	took := time.Since(began)
	assert.ErrorIs(t, err, ErrNoPrimary)
	assert.Less(t, took, 2*wait-200*time.Millisecond, "waited for a primary twice: %v", took)
	assert.GreaterOrEqual(t, took, wait-10*time.Millisecond, "did not wait at all: %v", took)
}

// replayQueries counts the queries a fake node ran for its replayed
// position.
func replayQueries(c *fakedriver.Connector) int {
	n := 0
	for _, call := range c.Calls() {
		if call.Op == fakedriver.OpQuery && strings.Contains(call.SQL, "pg_last_wal_replay_lsn") && call.SQL != postgresProbe {
			n++
		}
	}
	return n
}

// A forged or far-future token costs the replicas nothing: its position is
// past any the primary was seen at, so the read goes straight to the
// primary. (The token v1.ffffffffffffffff.0 once made every read poll every
// replica for maxWait, 87 queries per replica for one read.)
func TestFarFutureTokenGoesStraightToThePrimary(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2, WithSessionMode(SessionCausal(200*time.Millisecond)))
	for _, p := range pc.pg {
		p.lsn.Store(5000)
	}
	pc.probe()
	for _, c := range pc.conns[1:] {
		c.SetRecord(true)
	}
	s, err := ResumeSession("v1.ffffffffffffffff.0")
	require.NoError(t, err)
	began := time.Now()
	for range 5 {
		assert.Equal(t, "primary", served(t, pc.db, WithSession(ctx, s), "SELECT 1"))
	}
	assert.Less(t, time.Since(began), 150*time.Millisecond, "the reads waited for the replicas")
	for i, c := range pc.conns[1:] {
		assert.Zero(t, replayQueries(c), "replica%d was asked for its position", i+1)
	}
}

// Reads waiting for a lagging replica share one poll of it, which backs
// off: 20 reads waiting 300 ms cost a handful of queries, not 20 × 300.
func TestWaitingReadsShareOnePollPerReplica(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1, WithSessionMode(SessionCausal(300*time.Millisecond)))
	pc.pg[0].lsn.Store(10_000)
	pc.pg[1].lsn.Store(100) // far behind, and it stays there
	pc.probe()
	pc.conns[1].SetRecord(true)
	s, err := ResumeSession("v1." + strconv.FormatUint(5000, 16) + ".0")
	require.NoError(t, err)
	sctx := WithSession(ctx, s)
	var answers []<-chan answer
	for range 20 {
		answers = append(answers, servedAsync(pc.db, sctx, "SELECT 1"))
	}
	for _, ch := range answers {
		a := receive(t, ch, 10*time.Second)
		require.NoError(t, a.err)
		assert.Equal(t, "primary", a.node)
	}
	polls := replayQueries(pc.conns[1])
	t.Logf("20 reads waiting 300 ms for one replica: %d queries of its position", polls)
	assert.Positive(t, polls, "the replica was never asked")
	assert.LessOrEqual(t, polls, 30, "each waiting read polls on its own")
}

// TestAReplicaPinnedConnServesNoStaleSessionRead: a *sql.Conn whose server
// session holds state set on replica1 (in a read-only transaction) reads
// there; but not a read of a session whose write replica1 has not
// replayed, nor one demanded of the primary (UsePrimary): those fail with
// an error that is ErrSessionMoved, never a stale answer.
func TestAReplicaPinnedConnServesNoStaleSessionRead(t *testing.T) {
	pc, s, sctx := sessionCluster(t) // the primary and replica1 at 100
	c, err := pc.db.SQL().Conn(sctx)
	require.NoError(t, err)
	defer c.Close()
	tx, err := c.BeginTx(sctx, &sql.TxOptions{ReadOnly: true})
	require.NoError(t, err)
	rows, err := tx.QueryContext(sctx, "SET search_path TO app")
	require.NoError(t, err)
	require.NoError(t, rows.Close())
	require.NoError(t, tx.Commit())
	require.Positive(t, pc.conns[1].Count(fakedriver.OpBegin), "the read-only transaction ran on replica1")
	var who string
	require.NoError(t, c.QueryRowContext(sctx, "SELECT 1").Scan(&who))
	require.Equal(t, "replica1", who, "the session has no write yet: the pinned replica serves it")
	err = c.QueryRowContext(UsePrimary(sctx), "SELECT 1").Scan(&who)
	require.ErrorIs(t, err, ErrSessionMoved, "a read demanded of the primary, served by %q", who)

	pc.pg[0].lsn.Store(200) // the session writes
	_, err = pc.db.ExecContext(sctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	assert.Equal(t, "primary", served(t, pc.db, sctx, "SELECT 1"), "replica1 (100) lacks the write")
	require.Equal(t, uint64(200), s.lsn)
	who = ""
	err = c.QueryRowContext(sctx, "SELECT 1").Scan(&who)
	require.ErrorIs(t, err, ErrSessionMoved, "a session read served by %q, at 100 < 200", who)
	pc.pg[1].lsn.Store(200) // replica1 caught up
	pc.probe()
	require.NoError(t, c.QueryRowContext(sctx, "SELECT 1").Scan(&who))
	assert.Equal(t, "replica1", who)
}

// TestATokenAfterCloseRunsNothing: after Close nothing runs statements; a
// session with a write whose position is still to be learned gets a token
// that says a write is pending, without asking the closed DB's primary.
func TestATokenAfterCloseRunsNothing(t *testing.T) {
	pc, s, sctx := sessionCluster(t)
	_, err := pc.db.ExecContext(sctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	require.NoError(t, pc.db.Close())
	pc.conns[0].SetRecord(true)
	tok := s.Token()
	assert.Empty(t, pc.conns[0].Calls(), "statements after Close")
	assert.True(t, strings.HasSuffix(tok, "."+tokenPending), "the token says a write is pending: %s", tok)
}
