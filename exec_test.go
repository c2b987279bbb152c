package dbrouter

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMisroutedReadRunsAgainOnPrimary(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 1)
	f.conns[1].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
		if op == fakedriver.OpQuery && strings.Contains(q, "my_volatile") {
			return fakedriver.ReadOnlyError()
		}
		return nil
	})
	db := f.router(t)
	assert.Equal(t, "primary", served(t, db, ctx, "SELECT my_volatile()"))
	assert.Equal(t, "primary", firstRow(t, db, ctx, "SELECT my_volatile()"))

	st := db.Status()
	r, _ := st.Node("replica1")
	assert.Equal(t, uint64(2), r.Misroutes)
	assert.Equal(t, uint64(2), r.Errors)
	p, _ := st.Node("primary")
	assert.Equal(t, uint64(2), p.Reads)
	// Other reads still go to the replica.
	assert.Equal(t, "replica1", served(t, db, ctx, "SELECT 1"))
}

func TestReadRetriedOnceOnConnectionError(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 2)
	db := f.router(t, withoutBackground())
	f.conns[1].SetDown(true) // the router does not probe it: the errors alone must not mark it down
	for range 6 {
		n := served(t, db, ctx, "SELECT 1")
		assert.NotEqual(t, "replica1", n)
	}
	r1, _ := db.Status().Node("replica1")
	assert.Equal(t, uint64(3), r1.Retries)
	assert.Equal(t, uint64(3), r1.Errors)

	// Both replicas and then the retry target failing: the error names the node.
	f.conns[2].SetDown(true)
	f.conns[0].SetDown(true)
	_, err := db.QueryContext(ctx, "SELECT 1")
	var ne *NodeError
	require.ErrorAs(t, err, &ne)
	assert.Contains(t, []string{"primary", "replica1", "replica2"}, ne.Node)
}

// A read routed to a node that gives no connection (its server is gone,
// full, or refuses the login: a role or database not replicated there yet),
// with a pool that keeps none idle, never reached a server: it runs on
// another replica, through the DB and through SQL(), and none fails.
func TestAReadWhoseNodeGivesNoConnectionRunsElsewhere(t *testing.T) {
	ctx := context.Background()
	for _, cause := range []struct {
		name string
		err  error // the connection's error; nil: the node is down
	}{
		{"connection refused", nil},
		{"too many clients (53300)", &fakedriver.Error{Code: "53300"}},
		{"role missing (28000)", &fakedriver.Error{Code: "28000"}},
		{"database missing (3D000)", &fakedriver.Error{Code: "3D000"}},
	} {
		for i, name := range []string{"DB", "SQL()"} {
			t.Run(cause.name+"/"+name, func(t *testing.T) {
				f := newFakeNodes(t, 2)
				db := f.router(t, withoutBackground())
				db.SetMaxIdleConns(0) // every statement opens a connection
				if cause.err == nil {
					f.conns[1].SetDown(true)
				} else {
					f.conns[1].SetHook(func(_ context.Context, op fakedriver.Op, _ string) error {
						if op == fakedriver.OpConnect {
							return cause.err
						}
						return nil
					})
				}
				fc := faces(db)[i]
				for range 6 {
					assert.NotEqual(t, "replica1", served(t, fc.db, ctx, "SELECT 1"))
				}
				r1, _ := db.Status().Node("replica1")
				assert.Equal(t, uint64(3), r1.Retries)
			})
		}
	}
}

// A hot standby cancels a read that conflicts with the WAL it replays
// (40001, "canceling statement due to conflict with recovery": the primary
// vacuumed rows the read's snapshot still needed; or 40P01 with the same
// message, a deadlock with recovery over a buffer pin). Nothing came back,
// and the primary has no such conflicts: the read runs once more on another
// node, through the DB and through SQL(). Inside a transaction it is the
// caller's, as any error there; and a deadlock between sessions (40P01
// "deadlock detected") is no recovery conflict.
func TestAReadCancelledByARecoveryConflictRunsElsewhere(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct{ face, what, code string }{
		{"DB", "snapshot", "40001"}, {"SQL()", "snapshot", "40001"},
		{"DB", "buffer pin deadlock", "40P01"}, {"SQL()", "buffer pin deadlock", "40P01"},
	} {
		t.Run(c.face+" "+c.what, func(t *testing.T) {
			pc := newPGCluster(t, 1)
			db := pc.db
			pc.conns[1].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
				switch {
				case op != fakedriver.OpQuery:
				case strings.Contains(q, "long_report"):
					return &fakedriver.Error{Code: c.code, Message: "canceling statement due to conflict with recovery"}
				case strings.Contains(q, "locks_in_a_function"):
					return &fakedriver.Error{Code: "40P01", Message: "deadlock detected"}
				}
				return nil
			})
			via := map[string]interface {
				QueryRowContext(context.Context, string, ...any) *sql.Row
			}{"DB": db, "SQL()": db.SQL()}[c.face]
			assert.Equal(t, "primary", served(t, via, ctx, "SELECT /* long_report */ 1"))
			assert.Equal(t, "replica1", served(t, via, ctx, "SELECT 1"), "the replica still serves reads")
			err := via.QueryRowContext(ctx, "SELECT /* locks_in_a_function */ 1").Scan(new(string))
			assert.Equal(t, "40P01", sqlState(err), "a deadlock between sessions, run again")
			r1, _ := db.Status().Node("replica1")
			assert.Equal(t, uint64(1), r1.Retries)
			assert.Equal(t, StateUp, r1.State, "a recovery conflict says nothing of the node's health")

			tx, err := db.SQL().BeginTx(ctx, &sql.TxOptions{ReadOnly: true}) // on the replica
			require.NoError(t, err)
			defer tx.Rollback()
			err = tx.QueryRowContext(ctx, "SELECT /* long_report */ 1").Scan(new(string))
			assert.Equal(t, c.code, sqlState(err), "inside a transaction the error is the caller's")
		})
	}
}

func TestWritesAreNeverRetried(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 1)
	db := f.router(t)
	f.conns[0].SetHook(func(_ context.Context, op fakedriver.Op, _ string) error {
		if op == fakedriver.OpExec || op == fakedriver.OpQuery {
			return fakedriver.AdminShutdownError()
		}
		return nil
	})
	_, err := db.ExecContext(ctx, "UPDATE t SET a = 1")
	var ne *NodeError
	require.ErrorAs(t, err, &ne)
	assert.Equal(t, "primary", ne.Node)
	assert.Equal(t, "exec", ne.Op)
	assert.Equal(t, "57P01", sqlState(err))
	err = db.QueryRowContext(ctx, "INSERT INTO t VALUES (1) RETURNING 1").Scan(new(string))
	assert.Equal(t, "57P01", sqlState(err))
	assert.Equal(t, 1, f.conns[0].Count(fakedriver.OpExec))
	assert.Equal(t, 0, f.conns[1].Count(fakedriver.OpExec)+f.conns[1].Count(fakedriver.OpQuery))
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

// What only a primary can run, refused by a replica with 55000 ("recovery is
// in progress") or 0A000 (an unlogged table), runs once more on the primary
// and counts as a misroute, as a 25006 does. Another error does not.
func TestReplicaRefusalsRunOnThePrimary(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		code    string
		onPrim  bool
		message string
	}{
		{"55000", true, "recovery is in progress"},
		{"0A000", true, "cannot access temporary or unlogged relations during recovery"},
		{"25006", true, "cannot execute INSERT in a read-only transaction"},
		{"42P01", false, "relation does not exist"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			f := newFakeNodes(t, 1)
			f.conns[1].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
				if op == fakedriver.OpQuery && q == "SELECT only_on_a_primary()" {
					return &fakedriver.Error{Code: tc.code, Message: tc.message}
				}
				return nil
			})
			db := f.router(t)
			var name string
			err := db.QueryRowContext(ctx, "SELECT only_on_a_primary()").Scan(&name)
			r, _ := db.Status().Node("replica1")
			if !tc.onPrim {
				var fe *fakedriver.Error
				require.ErrorAs(t, err, &fe)
				assert.Zero(t, r.Misroutes)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "primary", name)
			assert.Equal(t, uint64(1), r.Misroutes)
		})
	}
}
