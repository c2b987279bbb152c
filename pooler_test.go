package dbrouter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
	"github.com/dbrouter/dbrouter/internal/testwait"
)

// What a probe's error says of its node, behind a pooler or not.
func TestProbeVerdicts(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want probeVerdict
	}{
		{"no error", nil, probeOK},
		{"refused", driver.ErrBadConn, probeFailed},
		{"timed out", context.DeadlineExceeded, probeFailed},
		{"the server shuts down", fakedriver.AdminShutdownError(), probeFailed},
		{"a pooler's prepared statement clash", &fakedriver.Error{Code: "42P05", Message: `prepared statement "stmtcache_1" already exists`}, probeAlive},
		{"a missing one", &fakedriver.Error{Code: "26000", Message: `prepared statement "stmtcache_1" does not exist`}, probeAlive},
		{"a permission", &fakedriver.Error{Code: "42501", Message: "permission denied for function pg_current_wal_lsn"}, probeAlive},
		{"PgBouncer: the server behind is down", &fakedriver.Error{Code: "08P01", Message: "server login has been failing, try again later (server_login_retry)"}, probeDownNow},
		{"PgBouncer: cannot connect", &fakedriver.Error{Code: "08P01", Message: "pgbouncer cannot connect to server"}, probeDownNow},
		{"PgBouncer: its pool is full", &fakedriver.Error{Code: "08P01", Message: "query_wait_timeout"}, probeAlive},
		{"PgBouncer: another protocol error", &fakedriver.Error{Code: "08P01", Message: "server conn crashed?"}, probeFailed},
		{"the role does not exist there", &fakedriver.Error{Code: "28000", Message: `role "app" does not exist`}, probeFailed},
		{"a wrong password", &fakedriver.Error{Code: "28P01", Message: `password authentication failed for user "app"`}, probeFailed},
		{"the database does not exist there", &fakedriver.Error{Code: "3D000", Message: `database "app" does not exist`}, probeFailed},
		{"a login refused", &connectError{&fakedriver.Error{Code: "28000", Message: `role "probe" does not exist`}}, probeFailed},
		{"PgBouncer: a login that waited for a server", &connectError{&fakedriver.Error{Code: "08P01", Message: "query_wait_timeout"}}, probeFailed},
		{"PgBouncer at login: the server behind is down", &connectError{&fakedriver.Error{Code: "08P01", Message: "server login has been failing, try again later (server_login_retry)"}}, probeDownNow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, verdict(tc.err))
		})
	}
}

// Behind a transaction pooler, probes that clash on prepared statements
// leave the nodes up (the server answered); a pooler saying the server
// behind it is down marks the node down at once.
func TestProbeErrorsFromAPooler(t *testing.T) {
	pc := newPGCluster(t, 1)
	clash := &fakedriver.Error{Code: "42P05", Message: `prepared statement "stmtcache_9" already exists`}
	pc.conns[0].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
		if op == fakedriver.OpQuery && q == postgresProbe {
			return clash
		}
		return nil
	})
	for range 5 {
		pc.probe()
	}
	p := nodeStatus(t, pc.db, "primary")
	assert.Equal(t, StateUp, p.State, "the server answered every probe")
	assert.Equal(t, "primary", pc.db.Status().Primary)
	assert.ErrorIs(t, p.LastError, clash, "Status shows what the probes met")

	pc.conns[1].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
		if op == fakedriver.OpQuery && q == postgresProbe {
			return &fakedriver.Error{Code: "08P01", Message: "server login has been failing, try again later (server_login_retry)"}
		}
		return nil
	})
	pc.probe() // one probe, though WithFailureThreshold is 2
	assert.Equal(t, StateDown, nodeStatus(t, pc.db, "replica1").State)
}

// A node whose server has answered every probe with an error has told
// nothing of what it is: it serves nothing, though it is alive. (A replica
// where the application's role had not replicated yet served reads.)
func TestANodeNeverProbedWellServesNothing(t *testing.T) {
	ctx := context.Background()
	denied := &fakedriver.Error{Code: "42501", Message: "permission denied for function pg_last_wal_replay_lsn"}
	pc := newPGClusterSetup(t, 2, func(pg []*fakePG) {
		pg[1].c.SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
			if op == fakedriver.OpQuery && q == postgresProbe {
				return denied
			}
			return nil
		})
	})
	for range 3 {
		pc.probe()
	}
	r1 := nodeStatus(t, pc.db, "replica1")
	assert.NotEqual(t, StateUp, r1.State)
	assert.False(t, r1.Readable)
	assert.ErrorIs(t, r1.LastError, denied)
	for range 4 {
		assert.Equal(t, "replica2", served(t, pc.db, ctx, "SELECT 1"))
	}

	pc.pg[1].c.SetHook(nil)
	pc.probe()
	assert.True(t, nodeStatus(t, pc.db, "replica1").Readable, "a probe answered at last")
	pc.pg[1].c.SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
		if op == fakedriver.OpQuery && q == postgresProbe {
			return denied
		}
		return nil
	})
	pc.probe()
	assert.Equal(t, StateUp, nodeStatus(t, pc.db, "replica1").State, "known, and alive: what it is stays as last seen")
}

// A probe that cannot log in learns nothing of its node, whatever the
// server (or a pooler) answered: it is a failed probe. (Taken for an answer
// about the probe, a login refused, by a replica that did not have the
// probing role yet or by a PgBouncer whose auth_file lacks the probe user
// of WithProbeDSN, marked a node never probed up and readable, with no
// role, position or timeline learned.)
func TestAProbeThatCannotLogInFails(t *testing.T) {
	refused := &fakedriver.Error{Code: "28000", Message: `role "probe" does not exist`}
	pc := newPGClusterSetup(t, 1, func(pg []*fakePG) {
		pg[1].c.SetHook(func(_ context.Context, op fakedriver.Op, _ string) error {
			if op == fakedriver.OpConnect {
				return refused
			}
			return nil
		})
	})
	r := nodeStatus(t, pc.db, "replica1")
	assert.Equal(t, StateUnknown, r.State, "after one probe: nothing learned")
	pc.probe()
	r = nodeStatus(t, pc.db, "replica1")
	assert.Equal(t, StateDown, r.State)
	assert.False(t, r.Readable)
	assert.ErrorIs(t, r.LastError, refused)
	assert.Contains(t, r.LastError.Error(), "connecting")
}

// The application's statements meeting pgx's statement cache behind a
// transaction pooler are told, once, what fixes it; and so are statements
// pgx prepared for Prepare or PrepareRouted ("stmt_…"), whose fix is
// WithServerPreparedStatements(false).
func TestStatementClashIsNamedOnce(t *testing.T) {
	ctx := context.Background()
	for _, clash := range []*fakedriver.Error{
		{Code: "26000", Message: `prepared statement "stmtcache_42" does not exist`},
		{Code: "42P05", Message: `prepared statement "stmt_67889dbae1c7b8a8cfe7ae1afe4f61ec969fd1b072bc1691" already exists`},
	} {
		t.Run(clash.Code, func(t *testing.T) {
			pc := newPGCluster(t, 1)
			pc.conns[1].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
				if op == fakedriver.OpQuery && q == "SELECT 1" {
					return clash
				}
				return nil
			})
			for range 3 {
				pc.db.QueryRowContext(ctx, "SELECT 1").Scan(new(string))
			}
			pc.db.events.flush()
			var clashes []Event
			for _, e := range pc.db.Status().Events {
				if e.Kind == EventStatementClash {
					clashes = append(clashes, e)
				}
			}
			require.Len(t, clashes, 1)
			assert.Contains(t, clashes[0].Detail, "default_query_exec_mode=simple_protocol")
			assert.Contains(t, clashes[0].Detail, "WithServerPreparedStatements(false)")
		})
	}
	assert.False(t, statementClash(&fakedriver.Error{Code: "42P05", Message: `prepared statement "my_stmt_1" already exists`}),
		"a statement the application named itself")
}

// A write the old primary acknowledges after another node became the
// primary is not reported as done: it may be lost. (Behind PgBouncer,
// writes queued while the primary was down committed on it when it
// restarted, after the failover, and the application was told they
// succeeded; INSERT … RETURNING through QueryRow still was, until the
// query faces checked too.)
func TestAWriteAcknowledgedByANodeThatLostTheRoleFails(t *testing.T) {
	ctx := context.Background()
	const returning = "INSERT queued RETURNING id"
	for _, face := range []string{"DB", "SQL()", "transaction", "DB QueryRow", "SQL() QueryRow", "PrepareRouted QueryRow", "Prepare QueryRow"} {
		t.Run(face, func(t *testing.T) {
			pc := newPGCluster(t, 1)
			var st *Stmt
			var ps *sql.Stmt
			switch face {
			case "PrepareRouted QueryRow":
				var err error
				st, err = pc.db.PrepareRouted(ctx, returning)
				require.NoError(t, err)
				defer st.Close()
			case "Prepare QueryRow":
				var err error
				ps, err = pc.db.PrepareContext(ctx, returning)
				require.NoError(t, err)
				defer ps.Close()
			}
			entered, release := make(chan struct{}), make(chan struct{})
			pc.conns[0].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
				if (op == fakedriver.OpExec && q == "INSERT queued") || (op == fakedriver.OpQuery && q == returning) || op == fakedriver.OpCommit {
					close(entered)
					<-release
				}
				return nil
			})
			done := make(chan error, 1)
			go func() {
				var id string
				switch face {
				case "DB":
					_, err := pc.db.ExecContext(ctx, "INSERT queued")
					done <- err
				case "SQL()":
					_, err := pc.db.SQL().ExecContext(ctx, "INSERT queued")
					done <- err
				case "DB QueryRow":
					done <- pc.db.QueryRowContext(ctx, returning).Scan(&id)
				case "SQL() QueryRow":
					done <- pc.db.SQL().QueryRowContext(ctx, returning).Scan(&id)
				case "PrepareRouted QueryRow":
					done <- st.QueryRowContext(ctx).Scan(&id)
				case "Prepare QueryRow":
					done <- ps.QueryRowContext(ctx).Scan(&id)
				default:
					tx, err := pc.db.BeginTx(ctx, nil)
					if err == nil {
						err = tx.Commit()
					}
					done <- err
				}
			}()
			<-entered
			pc.pg[1].inRecovery.Store(false) // a failover while the write is held
			pc.pg[1].timeline.Store(2)
			pc.probe()
			require.Equal(t, "replica1", pc.db.Status().Primary)
			close(release) // the old primary acknowledges it now
			select {
			case err := <-done:
				assert.ErrorIs(t, err, ErrPrimaryLost)
			case <-time.After(10 * time.Second):
				t.Fatal("the write did not return")
			}
		})
	}
}

// With WithServerPreparedStatements(false), nothing dbrouter prepares is
// prepared on a server: every run sends the text.
func TestWithoutServerPreparedStatements(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1, WithServerPreparedStatements(false))
	st, err := pc.db.PrepareRouted(ctx, "SELECT 1")
	require.NoError(t, err)
	defer st.Close()
	ps, err := pc.db.Prepare("UPDATE t SET a = $1")
	require.NoError(t, err)
	defer ps.Close()
	for i := range 5 {
		assert.Equal(t, "replica1", served(t, stmtRow{st}, ctx, ""))
		_, err := ps.ExecContext(ctx, i)
		require.NoError(t, err)
	}
	for _, c := range pc.conns {
		assert.Zero(t, c.Count(fakedriver.OpPrepare), "%s: a statement was prepared on the server", c.Name())
	}
}

// WithProbeDSN sends the probes elsewhere: behind PgBouncer, another user
// with a pool of its own.
func TestWithProbeDSN(t *testing.T) {
	p, r, probeP, probeR := fakedriver.New("p"), fakedriver.New("r"), fakedriver.New("probe-p"), fakedriver.New("probe-r")
	drv, err := fakedriver.Register(p, r, probeP, probeR)
	require.NoError(t, err)
	db, err := Open(drv, "p", []string{"r"}, WithDialect(Generic()), WithProbeInterval(10*time.Millisecond),
		WithProbeDSN(func(dsn string) string { return "probe-" + dsn }))
	require.NoError(t, err)
	defer db.Close()
	testwait.Until(t, 10*time.Second, "probes on the probe DSNs", func() bool {
		return probeP.Count(fakedriver.OpPing) > 2 && probeR.Count(fakedriver.OpPing) > 2
	})
	assert.Zero(t, p.Count(fakedriver.OpPing)+r.Count(fakedriver.OpPing), "no probe on the nodes' own DSNs")

	f := newFakeNodes(t, 0)
	_, err = New(f.dbs[0], nil, WithProbeDSN(func(dsn string) string { return dsn }))
	assert.ErrorIs(t, err, ErrInvalidOption, "New has no DSNs")
}

// A pooler's answer to real traffic that the server behind it is down
// marks the node down at once, without waiting for a probe: behind
// PgBouncer the probe of a crashed primary waits in the bouncer's queue for
// up to the probe timeout (its connection is the bouncer's, alive), while
// the application's new connections are told "server login has been
// failing" in a few milliseconds, and writes went on being sent there, each
// failing, for the whole probe timeout.
func TestAPoolerSayingTheServerIsDownOnTrafficMarksItDown(t *testing.T) {
	ctx := context.Background()
	pc := newPGCluster(t, 1)
	lost := &fakedriver.Error{Code: "08P01", Message: "server login has been failing, try again later (server_login_retry)"}
	pc.conns[0].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
		if op == fakedriver.OpExec {
			return lost
		}
		return nil
	})
	_, err := pc.db.ExecContext(ctx, "UPDATE t SET x = 1")
	require.ErrorIs(t, err, lost)
	p := nodeStatus(t, pc.db, "primary")
	assert.Equal(t, StateDown, p.State, "no probe ran: the pooler's answer to the write decided")
	assert.ErrorIs(t, p.LastError, lost)
	assert.Empty(t, pc.db.Status().Primary)
	_, err = pc.db.ExecContext(ctx, "UPDATE t SET x = 1")
	assert.ErrorIs(t, err, ErrNoPrimary, "not sent to the node the pooler said was down")

	pc.conns[0].SetHook(nil)
	pc.probe()
	assert.Equal(t, "primary", pc.db.Status().Primary, "a probe that answers brings it back")
}
