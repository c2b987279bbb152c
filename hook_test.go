package dbrouter

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
)

// hooked collects what the statement hook sees.
type hooked struct {
	mu  sync.Mutex
	all []Statement
}

func (s *hooked) add(st Statement) {
	s.mu.Lock()
	s.all = append(s.all, st)
	s.mu.Unlock()
}

// take returns what was seen since the last take, as "node reason" pairs.
func (s *hooked) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, st := range s.all {
		out = append(out, st.Node+" "+st.Reason.String())
	}
	s.all = nil
	return out
}

// face is a way into a DB: the DB itself or its SQL() face.
type face struct {
	name string
	db   sqlDB
}

// faces returns db and its SQL() face, which route, count and report alike.
func faces(db *DB) []face { return []face{{"DB", db}, {"SQL()", db.SQL()}} }

func TestStatementHookSaysWhereAndWhy(t *testing.T) {
	ctx := context.Background()
	var seen hooked
	pc := newPGCluster(t, 1, WithStatementHook(seen.add), WithRouter(func(_ context.Context, q string, _ bool) Target {
		if q == "SELECT /* router */ 1" {
			return Primary
		}
		return Default
	}))
	pc.conns[1].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
		switch {
		case op == fakedriver.OpQuery && q == "SELECT refused()":
			return fakedriver.ReadOnlyError()
		case op == fakedriver.OpQuery && q == "SELECT cut()":
			return fakedriver.AdminShutdownError()
		}
		return nil
	})
	for _, face := range faces(pc.db) {
		t.Run(face.name, func(t *testing.T) {
			seen.take()
			served(t, face.db, ctx, "SELECT 1")
			assert.Equal(t, []string{"replica1 read"}, seen.take())
			_, err := face.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
			require.NoError(t, err)
			assert.Equal(t, []string{"primary write"}, seen.take())
			served(t, face.db, ctx, "SELECT /* router */ 1")
			assert.Equal(t, []string{"primary custom router"}, seen.take())
			served(t, face.db, UsePrimary(ctx), "SELECT 1")
			assert.Equal(t, []string{"primary custom router"}, seen.take())
			served(t, face.db, ctx, "SELECT refused()")
			assert.Equal(t, []string{"replica1 read", "primary misroute"}, seen.take())
			served(t, face.db, ctx, "SELECT cut()")
			seen.mu.Lock()
			require.Len(t, seen.all, 2)
			var fe *fakedriver.Error
			assert.ErrorAs(t, seen.all[0].Err, &fe, "the hook sees the statement's error")
			assert.NoError(t, seen.all[1].Err)
			seen.mu.Unlock()
			assert.Equal(t, []string{"replica1 read", "primary retry"}, seen.take(), "the read's connection failed: run again")
			tx, err := face.db.BeginTx(ctx, nil)
			require.NoError(t, err)
			require.NoError(t, tx.Commit())
			assert.Equal(t, []string{"primary transaction"}, seen.take())
			s := NewSession()
			_, err = face.db.ExecContext(WithSession(ctx, s), "INSERT INTO t VALUES (1)")
			require.NoError(t, err)
			pc.pg[0].lsn.Store(pc.pg[0].lsn.Load() + 100)
			served(t, face.db, WithSession(ctx, s), "SELECT 1")
			assert.Equal(t, []string{"primary write", "primary session"}, seen.take())
		})
	}
	pc.pg[1].fail.Store(true) // the only replica down: reads fall back
	pc.probe()
	pc.probe()
	seen.take()
	served(t, pc.db, ctx, "SELECT 1")
	got := seen.all
	require.Len(t, got, 1)
	assert.Equal(t, ReasonFallback, got[0].Reason)
	assert.Equal(t, "SELECT 1", got[0].Query)
	assert.False(t, got[0].Write)
	assert.Positive(t, got[0].Duration)
}

// The hook sees each statement's context, so a tracer parents its span on
// the caller's, through the DB and through SQL(), transactions included.
func TestStatementHookHasTheStatementsContext(t *testing.T) {
	type key struct{}
	var seen hooked
	pc := newPGCluster(t, 1, WithStatementHook(seen.add))
	ctx := context.WithValue(context.Background(), key{}, "request 7")
	for _, face := range faces(pc.db) {
		t.Run(face.name, func(t *testing.T) {
			seen.take()
			served(t, face.db, ctx, "SELECT 1")
			_, err := face.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
			require.NoError(t, err)
			tx, err := face.db.BeginTx(ctx, nil)
			require.NoError(t, err)
			_, err = tx.ExecContext(ctx, "INSERT INTO t VALUES (2)")
			require.NoError(t, err)
			require.NoError(t, tx.Commit())
			seen.mu.Lock()
			all := seen.all
			seen.mu.Unlock()
			require.NotEmpty(t, all)
			for _, st := range all {
				require.NotNil(t, st.Context, "%s %q", st.Reason, st.Query)
				assert.Equal(t, "request 7", st.Context.Value(key{}), "%s %q", st.Reason, st.Query)
			}
		})
	}
}

func TestStatusKeepsTheRecentEvents(t *testing.T) {
	pc := newPGCluster(t, 1)
	for range 60 { // 120 events: down, up, down, …
		pc.pg[1].fail.Store(true)
		pc.probe()
		pc.probe()
		pc.pg[1].fail.Store(false)
		pc.probe()
	}
	st := pc.db.Status()
	ev := st.Events
	assert.Equal(t, map[EventKind]uint64{EventNodeDown: 60, EventNodeUp: 60}, st.EventCounts)
	assert.Equal(t, "node_down", EventNodeDown.Code())
	require.Len(t, ev, recentEvents)
	for i, e := range ev {
		want := EventNodeDown
		if i%2 == 1 {
			want = EventNodeUp
		}
		assert.Equal(t, want, e.Kind, "event %d, oldest first", i)
	}
}

func TestStatusShowsEachPool(t *testing.T) {
	pc := newPGCluster(t, 1)
	pc.db.SetMaxOpenConns(3)
	c, err := pc.dbs[0].Conn(context.Background())
	require.NoError(t, err)
	defer c.Close()
	p := nodeStatus(t, pc.db, "primary").Pool
	assert.Equal(t, 3, p.MaxOpenConnections)
	assert.Equal(t, 1, p.InUse)
}
