package dbrouter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// DBTX is the interface sqlc generates for database/sql.
type DBTX interface {
	ExecContext(context.Context, string, ...interface{}) (sql.Result, error)
	PrepareContext(context.Context, string) (*sql.Stmt, error)
	QueryContext(context.Context, string, ...interface{}) (*sql.Rows, error)
	QueryRowContext(context.Context, string, ...interface{}) *sql.Row
}

// ConnPool is gorm.ConnPool (gorm.io/gorm/interfaces.go).
type ConnPool interface {
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
	ExecContext(ctx context.Context, query string, args ...interface{}) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...interface{}) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...interface{}) *sql.Row
}

// sqlDB is the *sql.DB method set.
type sqlDB interface {
	DBTX
	Query(string, ...any) (*sql.Rows, error)
	QueryRow(string, ...any) *sql.Row
	Exec(string, ...any) (sql.Result, error)
	BeginTx(context.Context, *sql.TxOptions) (*sql.Tx, error)
	Begin() (*sql.Tx, error)
	Prepare(string) (*sql.Stmt, error)
	Conn(context.Context) (*sql.Conn, error)
	PingContext(context.Context) error
	Ping() error
	Close() error
	Stats() sql.DBStats
	Driver() driver.Driver
	SetMaxOpenConns(int)
	SetMaxIdleConns(int)
	SetConnMaxLifetime(time.Duration)
	SetConnMaxIdleTime(time.Duration)
}

var (
	_ DBTX     = (*DB)(nil)
	_ ConnPool = (*DB)(nil)
	_ sqlDB    = (*DB)(nil)
	_ sqlDB    = (*sql.DB)(nil) // the interface above is really *sql.DB's
)

func TestNewRejectsBadInput(t *testing.T) {
	f := newFakeNodes(t, 2)
	p, r1, r2 := f.dbs[0], f.dbs[1], f.dbs[2]
	tests := []struct {
		name     string
		primary  *sql.DB
		replicas []*sql.DB
		opts     []Option
		option   string // the *OptionError's Option; "" for a bad argument (ErrInvalidArgument)
	}{
		{"nil primary", nil, nil, nil, ""},
		{"nil replica", p, []*sql.DB{r1, nil}, nil, ""},
		{"replica is primary", p, []*sql.DB{p}, nil, ""},
		{"same replica twice", p, []*sql.DB{r1, r1}, nil, ""},
		{"nil option", p, nil, []Option{nil}, "Option"},
		{"zero probe interval", p, nil, []Option{WithProbeInterval(0)}, "WithProbeInterval"},
		{"negative probe timeout", p, nil, []Option{WithProbeTimeout(-time.Second)}, "WithProbeTimeout"},
		{"zero failure threshold", p, nil, []Option{WithFailureThreshold(0)}, "WithFailureThreshold"},
		{"negative primary wait", p, nil, []Option{WithPrimaryWait(-1)}, "WithPrimaryWait"},
		{"zero auto promote", p, nil, []Option{WithAutoPromote(0)}, "WithAutoPromote"},
		{"negative max lag", p, nil, []Option{WithMaxLag(-1, 0)}, "WithMaxLag"},
		{"zero backoff", p, nil, []Option{WithMaxBackoff(0)}, "WithMaxBackoff"},
		{"nil balancer", p, nil, []Option{WithBalancer(nil)}, "WithBalancer"},
		{"nil dialect", p, nil, []Option{WithDialect(nil)}, "WithDialect"},
		{"nil logger", p, nil, []Option{WithLogger(nil)}, "WithLogger"},
		{"nil hook", p, nil, []Option{WithEventHook(nil)}, "WithEventHook"},
		{"nil router", p, nil, []Option{WithRouter(nil)}, "WithRouter"},
		{"names count", p, []*sql.DB{r1}, []Option{WithNames("a")}, "WithNames"},
		{"names repeat", p, []*sql.DB{r1, r2}, []Option{WithNames("a", "b", "a")}, "WithNames"},
		{"empty name", p, []*sql.DB{r1}, []Option{WithNames("a", "")}, "WithNames"},
		{"zero session mode", p, nil, []Option{WithSessionMode(SessionMode{})}, "WithSessionMode"},
		{"zero session window", p, nil, []Option{WithSessionMode(SessionTime(0))}, "WithSessionMode"},
		{"negative causal wait", p, nil, []Option{WithSessionMode(SessionCausal(-1))}, "WithSessionMode"},
		{"auto promote without PostgreSQL", p, nil, []Option{WithDialect(Generic()), WithAutoPromote(time.Second)}, "WithAutoPromote"},
		{"max lag without PostgreSQL", p, nil, []Option{WithDialect(Generic()), WithMaxLag(1, 0)}, "WithMaxLag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := New(tt.primary, tt.replicas, tt.opts...)
			require.Error(t, err)
			assert.Nil(t, db)
			if tt.option == "" {
				assert.ErrorIs(t, err, ErrInvalidArgument)
				return
			}
			assert.ErrorIs(t, err, ErrInvalidOption)
			var oe *OptionError
			require.ErrorAs(t, err, &oe)
			assert.Equal(t, tt.option, oe.Option)
		})
	}
}

func TestOptionErrorsAreAllReported(t *testing.T) {
	f := newFakeNodes(t, 0)
	_, err := New(f.dbs[0], nil, WithProbeInterval(0), WithFailureThreshold(0))
	var options []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var oe *OptionError
		require.ErrorAs(t, e, &oe)
		options = append(options, oe.Option)
	}
	assert.Equal(t, []string{"WithProbeInterval", "WithFailureThreshold"}, options)
}

func TestOpenRejectsBadInputAndClosesWhatItOpened(t *testing.T) {
	p, r1 := fakedriver.New("p"), fakedriver.New("r1")
	drv, err := fakedriver.Register(p, r1)
	require.NoError(t, err)
	tests := []struct {
		name     string
		driver   string
		primary  string
		replicas []string
		opts     []Option
		want     error
		closes   int // handles Open opened and must have closed again
	}{
		{"empty driver", "", "p", nil, nil, ErrInvalidArgument, 0},
		{"unknown driver", "no-such-driver", "p", nil, nil, ErrInvalidArgument, 0},
		{"empty primary DSN", drv, "", nil, nil, ErrInvalidArgument, 0},
		{"empty replica DSN", drv, "p", []string{"r1", ""}, nil, ErrInvalidArgument, 0},
		{"same DSN twice", drv, "p", []string{"p"}, nil, ErrInvalidArgument, 0},
		{"third DSN fails to open", drv, "p", []string{"r1", "nope"}, nil, fakedriver.ErrUnknownName, 2},
		{"bad option after opening", drv, "p", []string{"r1"}, []Option{WithProbeInterval(-1)}, ErrInvalidOption, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := p.Closes() + r1.Closes()
			db, err := Open(tt.driver, tt.primary, tt.replicas, tt.opts...)
			assert.Nil(t, db)
			assert.ErrorIs(t, err, tt.want)
			assert.Equal(t, tt.closes, p.Closes()+r1.Closes()-before, "handles closed again")
		})
	}
}

func TestOpenClosesItsHandlesNewLeavesThemOpen(t *testing.T) {
	p, r1 := fakedriver.New("p"), fakedriver.New("r1")
	drv, err := fakedriver.Register(p, r1)
	require.NoError(t, err)
	db, err := Open(drv, "p", []string{"r1"}, WithDialect(Generic()))
	require.NoError(t, err)
	assert.Equal(t, "r1", served(t, db, context.Background(), "SELECT 1"))
	require.NoError(t, db.Close())
	assert.Equal(t, 1, p.Closes())
	assert.Equal(t, 1, r1.Closes())

	f := newFakeNodes(t, 1)
	db2, err := New(f.dbs[0], f.dbs[1:], WithDialect(Generic()))
	require.NoError(t, err)
	require.NoError(t, db2.Close())
	assert.NoError(t, f.dbs[0].Ping(), "New's handles stay open")
	assert.NoError(t, f.dbs[1].Ping(), "New's handles stay open")
}

func TestUseAfterClose(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 1)
	db := f.router(t)
	st, err := db.PrepareRouted(ctx, "SELECT 1")
	require.NoError(t, err)
	require.NoError(t, db.Close())
	require.NoError(t, db.Close(), "Close is idempotent")

	_, err = db.QueryContext(ctx, "SELECT 1")
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, db.QueryRowContext(ctx, "SELECT 1").Scan(new(string)), ErrClosed)
	assert.ErrorIs(t, db.QueryRow("SELECT 1").Err(), ErrClosed)
	_, err = db.ExecContext(ctx, "DELETE FROM t")
	assert.ErrorIs(t, err, ErrClosed)
	_, err = db.BeginTx(ctx, nil)
	assert.ErrorIs(t, err, ErrClosed)
	_, err = db.Begin()
	assert.ErrorIs(t, err, ErrClosed)
	_, err = db.Prepare("SELECT 1")
	assert.ErrorIs(t, err, ErrClosed)
	_, err = db.PrepareRouted(ctx, "SELECT 1")
	assert.ErrorIs(t, err, ErrClosed)
	_, err = db.Conn(ctx)
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, db.Ping(), ErrClosed)
	_, err = st.Query()
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, st.QueryRow().Scan(new(string)), ErrClosed)
	_, err = st.Exec()
	assert.ErrorIs(t, err, ErrClosed)
	assert.NoError(t, st.Close())
	// Still no panic from the rest.
	_ = db.Stats()
	_ = db.Status()
	assert.NotNil(t, db.Driver())
}

func TestStatsPingAndPoolSettings(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 2)
	db := f.router(t)
	db.SetMaxOpenConns(7)
	db.SetMaxIdleConns(3)
	db.SetConnMaxLifetime(time.Minute)
	db.SetConnMaxIdleTime(time.Minute)
	for _, h := range f.dbs {
		assert.Equal(t, 7, h.Stats().MaxOpenConnections)
	}
	assert.Equal(t, 21, db.Stats().MaxOpenConnections)
	require.NoError(t, db.PingContext(ctx))

	f.conns[0].SetHook(func(_ context.Context, op fakedriver.Op, _ string) error {
		if op == fakedriver.OpPing {
			return errors.New("boom")
		}
		return nil
	})
	err := db.PingContext(ctx)
	var ne *NodeError
	require.ErrorAs(t, err, &ne)
	assert.Equal(t, "primary", ne.Node)
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

func TestPrimaryContextWaitsForAPrimary(t *testing.T) {
	pc := newPGCluster(t, 1, WithPrimaryWait(time.Minute))
	pc.pg[0].fail.Store(true)
	pc.probe()
	pc.probe()
	got := make(chan *sql.DB, 1)
	go func() {
		h, err := pc.db.PrimaryContext(context.Background())
		assert.NoError(t, err) // assert, not require: off the test's goroutine
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
