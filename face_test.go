package dbrouter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
	"github.com/dbrouter/dbrouter/internal/noopdriver"
	"github.com/dbrouter/dbrouter/internal/testwait"
)

func TestSQLFaceRoutesEveryStatement(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2)
	face := pc.db.SQL()
	require.Same(t, face, pc.db.SQL(), "the same *sql.DB on every call")
	h, err := pc.db.GetDBConn()
	require.NoError(t, err)
	require.Same(t, face, h)

	assert.Contains(t, served(t, face, ctx, "SELECT 1"), "replica", "a read")
	assert.Equal(t, "primary", served(t, face, ctx, "INSERT INTO t VALUES (1) RETURNING 1"), "a write query")
	assert.Equal(t, "primary", served(t, face, UsePrimary(ctx), "SELECT 1"), "UsePrimary")
	_, err = face.ExecContext(ctx, "UPDATE t SET a = 1")
	require.NoError(t, err)
	assert.Equal(t, 1, pc.conns[0].Count(fakedriver.OpExec), "Exec on the primary")

	for _, tc := range []struct {
		name string
		opts *sql.TxOptions
		want string
	}{
		{"read-write transaction", nil, "primary"},
		{"read-only transaction", &sql.TxOptions{ReadOnly: true}, "replica"},
		{"read-only serializable transaction", &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelSerializable}, "primary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := face.BeginTx(ctx, tc.opts)
			require.NoError(t, err)
			first := served(t, tx, ctx, "SELECT 1")
			assert.Contains(t, first, tc.want)
			assert.Equal(t, first, served(t, tx, ctx, "SELECT 2"), "a transaction stays on its node")
			require.NoError(t, tx.Commit())
		})
	}
	s := pc.db.Status()
	var reads, writes uint64
	for _, n := range s.Nodes {
		reads, writes = reads+n.Reads, writes+n.Writes
	}
	assert.Positive(t, reads)
	assert.Positive(t, writes, "Status counts the face's traffic")
}

func TestSQLFaceCustomRoutersAndSessions(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2, WithRouter(func(_ context.Context, q string, _ bool) Target {
		if q == "SELECT /* analytics */ 1" {
			return NodeNamed("replica2")
		}
		return Default
	}))
	face := pc.db.SQL()
	for range 4 {
		assert.Equal(t, "replica2", served(t, face, ctx, "SELECT /* analytics */ 1"))
	}
	s := NewSession()
	sctx := WithSession(ctx, s)
	pc.pg[0].lsn.Store(500)
	_, err := face.ExecContext(sctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	assert.Equal(t, "primary", served(t, face, sctx, "SELECT 1"), "the session's write is not on the replicas yet")
	for _, p := range pc.pg[1:] {
		p.lsn.Store(500)
	}
	pc.probe()
	assert.Contains(t, served(t, face, sctx, "SELECT 1"), "replica", "caught up")
}

func TestSQLFaceMisroutesAndRetries(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2)
	for _, c := range pc.conns[1:] {
		c.SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
			switch {
			case op == fakedriver.OpQuery && q == "SELECT my_volatile()":
				return fakedriver.ReadOnlyError()
			case op == fakedriver.OpQuery && q == "SELECT broken":
				return fakedriver.AdminShutdownError()
			}
			return nil
		})
	}
	face := pc.db.SQL()
	assert.Equal(t, "primary", served(t, face, ctx, "SELECT my_volatile()"), "a read the replica refused as a write")
	var misroutes uint64
	for _, n := range pc.db.Status().Nodes {
		misroutes += n.Misroutes
	}
	assert.Equal(t, uint64(1), misroutes)
	err := face.QueryRowContext(ctx, "SELECT broken").Scan(new(string))
	require.Error(t, err, "both replicas fail it; the retry ran on the other one")
	var retries uint64
	for _, n := range pc.db.Status().Nodes {
		retries += n.Retries
	}
	assert.Equal(t, uint64(1), retries, "one retry, on another node")
}

// A write that waited for a connection of the primary's pool while the
// primary changed is routed again: nothing was sent, and it must not run on
// the node that stopped being the primary. (Routed before it waited, it ran
// there: "execs on the fenced old primary: 1".)
func TestSQLFaceQueuedWriteLandsOnTheNewPrimary(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1)
	pc.dbs[0].SetMaxOpenConns(1)
	held, err := pc.dbs[0].Conn(ctx) // the primary's pool is exhausted
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := pc.db.SQL().ExecContext(ctx, "INSERT INTO t VALUES (1)")
		done <- err
	}()
	testwait.Until(t, 10*time.Second, "the write waiting for a connection", func() bool { return pc.dbs[0].Stats().WaitCount > 0 })
	pc.pg[1].inRecovery.Store(false) // replica1 promoted; the old primary fenced
	pc.pg[1].timeline.Store(2)
	pc.probe()
	require.Equal(t, "replica1", pc.db.Status().Primary)
	require.Equal(t, StateFenced, nodeStatus(t, pc.db, "primary").State)
	require.NoError(t, held.Close()) // the connection it waited for comes free
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the queued write did not finish")
	}
	assert.Zero(t, pc.conns[0].Count(fakedriver.OpExec), "execs on the fenced old primary")
	assert.Equal(t, 1, pc.conns[1].Count(fakedriver.OpExec), "execs on the new primary")
}

// The same for a read a replica refused as a write (25006), run again on
// the primary: when it waited for a connection of the primary's pool while
// the primary changed, it must not run on the node that stopped being the
// primary (nothing was sent there yet).
func TestSQLFaceQueuedMisrouteDoesNotRunOnTheOldPrimary(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1)
	const bump = "SELECT bump_counter()" // a write the classifier cannot see
	pc.conns[1].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
		if q == bump {
			return fakedriver.ReadOnlyError()
		}
		return nil
	})
	pc.conns[0].SetRecord(true)
	pc.dbs[0].SetMaxOpenConns(1)
	held, err := pc.dbs[0].Conn(ctx) // the primary's pool is exhausted
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		rows, err := pc.db.SQL().QueryContext(ctx, bump)
		if err == nil {
			rows.Close()
		}
		done <- err
	}()
	testwait.Until(t, 10*time.Second, "the read run again to wait for a connection", func() bool { return pc.dbs[0].Stats().WaitCount > 0 })
	pc.pg[1].inRecovery.Store(false) // replica1 promoted; the old primary fenced
	pc.pg[1].timeline.Store(2)
	pc.probe()
	require.Equal(t, StateFenced, nodeStatus(t, pc.db, "primary").State)
	require.NoError(t, held.Close())
	select {
	case err := <-done:
		assert.Error(t, err, "refused by the replica, and not run again")
	case <-time.After(10 * time.Second):
		t.Fatal("the query did not finish")
	}
	for _, c := range pc.conns[0].Calls() {
		assert.NotEqual(t, bump, c.SQL, "ran on the fenced old primary")
	}
}

// A *sql.Stmt from DB.Prepare (sqlc's emit_prepared_queries, GORM's
// PrepareStmt) follows a failover. (It once kept writing to the fenced old
// primary.)
func TestPreparedStatementFollowsAFailover(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1)
	st, err := pc.db.Prepare("UPDATE t SET a = $1")
	require.NoError(t, err)
	defer st.Close()
	_, err = st.ExecContext(ctx, 1)
	require.NoError(t, err)
	assert.Equal(t, 1, pc.conns[0].Count(fakedriver.OpExec))
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(2)
	pc.probe()
	require.Equal(t, StateFenced, nodeStatus(t, pc.db, "primary").State)
	for i := range 3 {
		_, err = st.ExecContext(ctx, i)
		require.NoError(t, err)
	}
	assert.Equal(t, 1, pc.conns[0].Count(fakedriver.OpExec), "no exec on the fenced old primary")
	assert.Equal(t, 3, pc.conns[1].Count(fakedriver.OpExec))
	read, err := pc.db.Prepare("SELECT 1")
	require.NoError(t, err)
	defer read.Close()
	assert.Equal(t, "replica1", served(t, st2row{read}, ctx, ""), "reads: the new primary (no replica is left)")
}

// A connection reads its own writes until it goes back to the pool, and
// pooled statements spread over the replicas again.
func TestSQLFaceConnReadsItsOwnWrites(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2)
	face := pc.db.SQL()
	c, err := face.Conn(ctx)
	require.NoError(t, err)
	assert.Contains(t, served(t, c, ctx, "SELECT 1"), "replica", "no write yet")
	_, err = c.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	for range 4 {
		assert.Equal(t, "primary", served(t, c, ctx, "SELECT 1"), "after its write")
	}
	require.NoError(t, c.Close())
	assert.Contains(t, served(t, face, ctx, "SELECT 1"), "replica", "a pooled statement after the connection went back")
}

// A connection's statements after a write run on the write's server
// connection (lastval and currval see its insert), which goes back to the
// node's pool with the connection; when the primary changes, the next
// statement is routed again, without an error.
func TestSQLFaceConnKeepsItsWritesServerConnection(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2)
	face := pc.db.SQL()
	c, err := face.Conn(ctx)
	require.NoError(t, err)
	_, err = c.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	assert.Equal(t, 1, pc.dbs[0].Stats().InUse, "kept since the write")
	opened := pc.conns[0].Count(fakedriver.OpConnect)
	for range 4 {
		assert.Equal(t, "primary", served(t, c, ctx, "SELECT lastval()"))
		_, err = c.ExecContext(ctx, "INSERT INTO t VALUES (2)")
		require.NoError(t, err)
	}
	assert.Equal(t, opened, pc.conns[0].Count(fakedriver.OpConnect), "all on one server connection")
	assert.Equal(t, 1, pc.dbs[0].Stats().InUse)

	pc.pg[1].inRecovery.Store(false) // replica1 promoted
	pc.pg[1].timeline.Store(2)
	pc.probe()
	_, err = c.ExecContext(ctx, "INSERT INTO t VALUES (3)")
	require.NoError(t, err, "not pinned: routed again")
	assert.Equal(t, 1, pc.conns[1].Count(fakedriver.OpExec), "on the new primary")
	assert.Zero(t, pc.dbs[0].Stats().InUse, "the old primary's connection was let go")
	require.NoError(t, c.Close())
	assert.Zero(t, pc.dbs[1].Stats().InUse, "and the new one's with the connection")

	_, err = face.ExecContext(ctx, "INSERT INTO t VALUES (4)")
	require.NoError(t, err)
	assert.Zero(t, pc.dbs[1].Stats().InUse, "a pooled write holds nothing once it returned")
}

// A connection that left state in its server session stays on that session;
// when its node stops being the primary, it fails with ErrSessionMoved and
// is discarded, never moved. A new connection works.
func TestSQLFaceSessionStatePins(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2)
	face := pc.db.SQL()
	c, err := face.Conn(ctx)
	require.NoError(t, err)
	_, err = c.ExecContext(ctx, "SET search_path TO app")
	require.NoError(t, err)
	opened := pc.conns[0].Count(fakedriver.OpConnect)
	for range 4 {
		assert.Equal(t, "primary", served(t, c, ctx, "SELECT 1"), "reads run on the session's node")
	}
	assert.Equal(t, opened, pc.conns[0].Count(fakedriver.OpConnect), "on the same server connection")

	pc.pg[1].inRecovery.Store(false) // replica1 promoted
	pc.pg[1].timeline.Store(2)
	pc.probe()
	err = c.QueryRowContext(ctx, "SELECT 1").Scan(new(string))
	assert.ErrorIs(t, err, ErrSessionMoved)
	_, err = c.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	assert.ErrorIs(t, err, ErrSessionMoved, "and stays failed")
	assert.Zero(t, pc.conns[1].Count(fakedriver.OpExec), "nothing moved to the new primary")
	c.Close()

	c2, err := face.Conn(ctx)
	require.NoError(t, err)
	defer c2.Close()
	_, err = c2.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	assert.Equal(t, 1, pc.conns[1].Count(fakedriver.OpExec), "a new connection writes to the new primary")
}

// A pooled statement that leaves session state does not pass that state
// on: its connection, and the server connection it ran on, are discarded
// when it goes back to the pool.
func TestSQLFacePooledSessionStateIsDiscarded(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1)
	face := pc.db.SQL()
	_, err := face.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	require.Equal(t, 1, pc.dbs[0].Stats().Idle, "a plain statement's server connection goes back to the pool")
	_, err = face.ExecContext(ctx, "SET search_path TO app")
	require.NoError(t, err)
	s := pc.dbs[0].Stats()
	assert.Zero(t, s.OpenConnections, "the server connection that holds the state was closed: %+v", s)
	assert.Zero(t, face.Stats().OpenConnections, "and so was the face's connection")
	_, err = face.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
}

// Passive signals in a transaction, a Conn and a prepared statement of the
// DB: a connection error, or the primary refusing a write (25006), asks for
// an immediate probe of the node, as on routed statements.
func TestSQLFaceTransactionErrorsAreSignals(t *testing.T) {
	ctx := context.Background()
	run := map[string]func(db *DB) error{
		"a transaction": func(db *DB) error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			_, err = tx.ExecContext(ctx, "INSERT broken")
			return err
		},
		"a Conn": func(db *DB) error {
			c, err := db.Conn(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.ExecContext(ctx, "INSERT broken")
			return err
		},
		"a prepared statement": func(db *DB) error {
			st, err := db.PrepareContext(ctx, "INSERT broken")
			if err != nil {
				return err
			}
			defer st.Close()
			_, err = st.ExecContext(ctx)
			return err
		},
	}
	fails := map[string]error{"57P01": fakedriver.AdminShutdownError(), "25006": fakedriver.ReadOnlyError()}
	for code, fail := range fails {
		for name, f := range run {
			t.Run(name+", "+code, func(t *testing.T) {
				pc := newPGCluster(t, 1)
				pc.conns[0].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
					if op == fakedriver.OpExec && q == "INSERT broken" {
						return fail
					}
					return nil
				})
				require.Error(t, f(pc.db))
				assert.Len(t, pc.db.nodeList()[0].probeNow, 1, "the error asked for a probe of the primary")
			})
		}
	}
}

// The face's pool and the nodes' pools never deadlock each other, whether
// the face's is smaller or larger.
func TestSQLFacePoolsDoNotDeadlock(t *testing.T) {
	for _, faceMax := range []int{1, 8} {
		t.Run("", func(t *testing.T) {
			ctx := context.Background()
			pc := newPGCluster(t, 1)
			pc.db.SetMaxOpenConns(2)
			face := pc.db.SQL()
			face.SetMaxOpenConns(faceMax)
			errs := make(chan error, 16)
			for i := range 16 {
				go func() {
					var err error
					for range 20 {
						if i%2 == 0 {
							_, err = face.ExecContext(ctx, "INSERT INTO t VALUES (1)")
						} else {
							err = face.QueryRowContext(ctx, "SELECT 1").Scan(new(string))
						}
						if err != nil {
							break
						}
					}
					errs <- err
				}()
			}
			for range 16 {
				select {
				case err := <-errs:
					assert.NoError(t, err)
				case <-time.After(30 * time.Second):
					t.Fatal("deadlocked")
				}
			}
		})
	}
}

func TestSQLFaceAfterClose(t *testing.T) {
	pc := newPGCluster(t, 1)
	face := pc.db.SQL()
	require.NoError(t, pc.db.Close())
	_, err := face.Exec("INSERT INTO t VALUES (1)")
	assert.Error(t, err)
	_, err = pc.db.GetDBConn()
	assert.ErrorIs(t, err, ErrClosed)
	_, err = pc.db.Prepare("SELECT 1")
	assert.ErrorIs(t, err, ErrClosed)
}

// The node's driver converts the arguments, as it would on its own: the
// face passes what database/sql would have passed it.
func TestSQLFacePassesArgumentsToTheNodesDriver(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1)
	var got []driver.NamedValue
	pc.conns[0].SetResponder(func(q string, args []driver.NamedValue) ([]string, [][]driver.Value, error) {
		if q == "INSERT ?" {
			got = append([]driver.NamedValue(nil), args...)
		}
		return pc.pg[0].respond(q, args)
	})
	args := []any{7, "x", []byte("b"), time.Unix(1, 0).UTC(), sql.NullString{String: "v", Valid: true}, []int32{1, 2}}
	_, err := pc.dbs[0].ExecContext(ctx, "INSERT ?", args...)
	require.NoError(t, err)
	direct := got
	_, err = pc.db.SQL().ExecContext(ctx, "INSERT ?", args...)
	require.NoError(t, err)
	assert.Equal(t, direct, got)
}

// Without a NamedValueChecker, a driver gets the values database/sql's
// default conversion makes.
func TestConvertArgs(t *testing.T) {
	dc, err := noopdriver.Connector{}.Connect(context.Background())
	require.NoError(t, err)
	args := []driver.NamedValue{{Ordinal: 1, Value: 7}, {Ordinal: 2, Value: sql.NullString{String: "v", Valid: true}}, {Ordinal: 3, Value: uint8(3)}}
	got, err := convertArgs(dc, args)
	require.NoError(t, err)
	assert.Equal(t, []driver.NamedValue{{Ordinal: 1, Value: int64(7)}, {Ordinal: 2, Value: "v"}, {Ordinal: 3, Value: int64(3)}}, got)
	_, err = convertArgs(dc, []driver.NamedValue{{Ordinal: 1, Value: struct{}{}}})
	assert.Error(t, err, "what database/sql cannot convert is refused")
}

// TestASessionStatementAfterAWritePinsForGood: a *sql.Conn writes (its
// server connection is kept), then SETs. That server connection holds the
// SET: it is closed with the Conn, never given back to the primary's pool
// for another caller to inherit; after a failover, the Conn's statements
// fail with ErrSessionMoved and its Close does not panic.
func TestASessionStatementAfterAWritePinsForGood(t *testing.T) {
	ctx := context.Background()
	setAfterWrite := func(t *testing.T) (*pgCluster, *sql.Conn) {
		pc, c := connThatWrote(t)
		_, err := c.ExecContext(ctx, "SET search_path TO app")
		require.NoError(t, err)
		return pc, c
	}
	t.Run("closed with the Conn", func(t *testing.T) {
		pc, c := setAfterWrite(t)
		require.NoError(t, c.Close())
		s := pc.dbs[0].Stats()
		assert.Zero(t, s.OpenConnections, "the server connection holding the SET went back to the pool: %+v", s)
	})
	t.Run("after a failover", func(t *testing.T) {
		pc, c := setAfterWrite(t)
		pc.pg[1].inRecovery.Store(false)
		pc.pg[1].timeline.Store(2)
		pc.probe()
		_, err := c.ExecContext(ctx, "INSERT INTO t VALUES (2)")
		require.ErrorIs(t, err, ErrSessionMoved)
		assert.NotPanics(t, func() { c.Close() })
	})
}

// TestAWriteOnAHeldConnectionWhoseNodeLostTheRoleMeanwhile: a write on a
// server connection a *sql.Conn holds (kept since a write, or pinned by a
// SET) reports ErrPrimaryLost when its node stopped being the primary
// while it ran, as a write on a connection taken for it does.
func TestAWriteOnAHeldConnectionWhoseNodeLostTheRoleMeanwhile(t *testing.T) {
	ctx := context.Background()
	for _, first := range []string{"", "INSERT INTO t VALUES (1)", "SET search_path TO app"} {
		t.Run(first, func(t *testing.T) {
			pc := newPGCluster(t, 1)
			c, err := pc.db.SQL().Conn(ctx)
			require.NoError(t, err)
			defer c.Close()
			if first != "" {
				_, err = c.ExecContext(ctx, first)
				require.NoError(t, err)
			}
			pc.conns[0].SetHook(func(_ context.Context, _ fakedriver.Op, q string) error {
				if strings.HasPrefix(q, "INSERT demote") {
					pc.pg[1].inRecovery.Store(false) // replica1 promoted while the write runs
					pc.pg[1].timeline.Store(2)
					pc.probe()
				}
				return nil
			})
			_, err = c.ExecContext(ctx, "INSERT demote")
			assert.ErrorIs(t, err, ErrPrimaryLost, "Exec")
			if first != "" {
				return
			}
			pc.pg[1].inRecovery.Store(true) // back as it was, for the query
			pc.pg[1].timeline.Store(1)
			pc.probe()
			require.Equal(t, "primary", pc.db.Status().Primary)
			_, err = c.ExecContext(ctx, "INSERT INTO t VALUES (2)") // kept
			require.NoError(t, err)
			rows, err := c.QueryContext(ctx, "INSERT demote RETURNING id")
			if err == nil {
				rows.Close() // (c's Close would wait for them)
			}
			assert.ErrorIs(t, err, ErrPrimaryLost, "writing Query")
		})
	}
}

// TestFaceWritesCountAsSent: a write through SQL() counts as sent when it
// is sent, so that the watch of the primary sees one that hangs.
func TestFaceWritesCountAsSent(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1)
	n := pc.db.nodeList()[0]
	release := make(chan struct{})
	var hung atomic.Bool
	pc.conns[0].SetHook(func(ctx context.Context, op fakedriver.Op, q string) error {
		if op == fakedriver.OpExec && q == "INSERT hang" {
			hung.Store(true)
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	})
	done := make(chan error, 1)
	go func() { _, err := pc.db.SQL().ExecContext(ctx, "INSERT hang"); done <- err }()
	testwait.Until(t, 10*time.Second, "the write to hang", hung.Load)
	n.stuckWrites() // one watch
	stuck := n.stuckWrites()
	close(release)
	require.NoError(t, <-done)
	assert.True(t, stuck, "a write hung since the last watch: sent %d, ended %d", n.writesSent.Load(), n.writes.Load())
}

// connThatWrote returns a primary + 1 replica and a *sql.Conn of SQL()
// that ran a write, so holds the primary's server connection it ran on; it
// is closed when the test ends (closing it twice is harmless).
func connThatWrote(t *testing.T) (*pgCluster, *sql.Conn) {
	t.Helper()
	ctx := context.Background()
	pc := newPGCluster(t, 1)
	c, err := pc.db.SQL().Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_, err = c.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	return pc, c
}

// TestAHeldConnectionIsNotLentUnderOpenRows: a *sql.Conn that wrote reads
// on its kept server connection; the primary changes while those rows are
// open, so its next statement lets the kept connection go. It must not go
// back to the old node's pool, to be lent to someone else, before the rows
// reading from it are closed.
func TestAHeldConnectionIsNotLentUnderOpenRows(t *testing.T) {
	ctx := context.Background()
	pc, c := connThatWrote(t)
	rows, err := c.QueryContext(ctx, "SELECT 1") // on the kept server connection
	require.NoError(t, err)

	pc.pg[1].inRecovery.Store(false) // replica1 promoted
	pc.pg[1].timeline.Store(2)
	pc.probe()
	pc.pg[0].inRecovery.Store(true) // the old primary follows it: a readable replica
	pc.pg[0].timeline.Store(2)
	pc.probe()
	require.Equal(t, "replica1", pc.db.Status().Primary)
	require.Equal(t, StateUp, nodeStatus(t, pc.db, "primary").State)

	_, err = c.ExecContext(ctx, "INSERT INTO t VALUES (2)")
	require.NoError(t, err)
	s := pc.dbs[0].Stats()
	assert.Equal(t, 1, s.InUse, "the connection the open rows read from went back to the pool: %+v", s)
	require.True(t, rows.Next())
	require.NoError(t, rows.Close())
	s = pc.dbs[0].Stats()
	assert.Equal(t, 0, s.InUse, "given back once the rows were closed: %+v", s)
	assert.Equal(t, 1, s.Idle, "a sound connection of a readable node is pooled again: %+v", s)
}

// TestAFailedBeginOnAKeptConnectionLetsItGo: a *sql.Conn that wrote keeps
// its server connection; a BEGIN that fails there on a broken connection
// lets it go, so the Conn's next statement runs on a sound one.
func TestAFailedBeginOnAKeptConnectionLetsItGo(t *testing.T) {
	ctx := context.Background()
	pc, c := connThatWrote(t)
	broken := &net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}
	pc.conns[0].SetHook(func(_ context.Context, op fakedriver.Op, _ string) error {
		if op == fakedriver.OpBegin {
			return broken
		}
		return nil
	})
	require.Equal(t, 1, pc.dbs[0].Stats().InUse, "the kept server connection")
	_, err := c.BeginTx(ctx, nil)
	require.ErrorIs(t, err, syscall.EPIPE)
	s := pc.dbs[0].Stats()
	assert.Zero(t, s.OpenConnections, "the broken server connection was not let go: %+v", s)
	pc.conns[0].SetHook(nil)
	_, err = c.ExecContext(ctx, "INSERT INTO t VALUES (2)")
	require.NoError(t, err)
}

// TestARollbackErrorNamesRollback: a failed Rollback is a *NodeError whose
// Op says rollback, not commit.
func TestARollbackErrorNamesRollback(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1)
	tx, err := pc.db.BeginTx(ctx, nil)
	require.NoError(t, err)
	pc.conns[0].SetHook(func(_ context.Context, op fakedriver.Op, _ string) error {
		if op == fakedriver.OpRollback {
			return errors.New("boom")
		}
		return nil
	})
	var ne *NodeError
	require.ErrorAs(t, tx.Rollback(), &ne)
	assert.Equal(t, "rollback", ne.Op)
	assert.Equal(t, "primary", ne.Node)
}

// TestStateSetInAReadOnlyTransactionStaysOnItsReplica: a *sql.Conn sets
// session state (SET, not SET LOCAL) inside a read-only transaction, which
// ran on a replica. The state is on that replica's server session, so the
// Conn's reads run there while it is eligible; a write fails with an error
// that is ErrSessionMoved, and the Conn still reads; once the replica is
// down, its statements fail with ErrSessionMoved. (It once failed every
// statement after the COMMIT with "no longer the primary".)
func TestStateSetInAReadOnlyTransactionStaysOnItsReplica(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 2)
	c, err := pc.db.SQL().Conn(ctx)
	require.NoError(t, err)
	defer c.Close()
	tx, err := c.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	require.NoError(t, err)
	rows, err := tx.QueryContext(ctx, "SET search_path TO app") // a standby accepts SET
	require.NoError(t, err)
	require.NoError(t, rows.Close())
	require.NoError(t, tx.Commit())
	on := -1
	for i := 1; i <= 2; i++ {
		if pc.conns[i].Count(fakedriver.OpBegin) > 0 {
			on = i
		}
	}
	require.Positive(t, on, "the read-only transaction ran on a replica")
	read := func() error {
		rows, err := c.QueryContext(ctx, "SELECT 1")
		if err != nil {
			return err
		}
		return rows.Close()
	}
	queries := pc.conns[on].Count(fakedriver.OpQuery)
	for range 4 {
		require.NoError(t, read())
	}
	assert.Equal(t, queries+4, pc.conns[on].Count(fakedriver.OpQuery), "reads on the replica that holds the state")

	_, err = c.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	require.ErrorIs(t, err, ErrSessionMoved)
	var ne *NodeError
	require.ErrorAs(t, err, &ne)
	assert.Equal(t, pc.db.nodeList()[on].name, ne.Node)
	assert.Zero(t, pc.conns[0].Count(fakedriver.OpExec), "the write reached the primary without the session's state")
	require.NoError(t, read(), "the Conn still reads")

	pc.pg[on].fail.Store(true) // the replica is down
	pc.probe()
	pc.probe()
	require.ErrorIs(t, read(), ErrSessionMoved)
}
