package integration

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dbrouter/dbrouter"
)

// DBTX is the interface sqlc generates for database/sql: what a raw *sql.DB
// and a *dbrouter.DB both are.
type DBTX interface {
	ExecContext(context.Context, string, ...interface{}) (sql.Result, error)
	PrepareContext(context.Context, string) (*sql.Stmt, error)
	QueryContext(context.Context, string, ...interface{}) (*sql.Rows, error)
	QueryRowContext(context.Context, string, ...interface{}) *sql.Row
}

// nodeStatus returns the status of the node of that name.
func nodeStatus(t testing.TB, db *dbrouter.DB, name string) dbrouter.NodeStatus {
	t.Helper()
	s, ok := db.Status().Node(name)
	require.True(t, ok, "no node %q", name)
	return s
}

// connectionFailed reports whether err says the connection or the server
// failed (what a crashed node answers), rather than the statement.
func connectionFailed(err error) bool {
	var ne net.Error
	var pe *pgconn.PgError
	switch {
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.As(err, &ne):
		return true
	case errors.As(err, &pe):
		return pe.Code[:2] == "08" || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	}
	return false
}

func TestMain(m *testing.M) {
	code := m.Run()
	closeSharedCluster()
	closeSharedPatroni()
	if code == 0 {
		if err := goleak.Find(leakOptions()...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// leakOptions ignores the goroutines that are not ours: the Docker client's
// idle HTTP connections (testcontainers-go backend), pgx's own asyncClose,
// which after a cancelled query on a frozen node sends the server a cancel
// request in the background and gives up after its own deadline, whatever
// its caller does, with the background reader of that connection (asyncClose
// flushes its Terminate through pgx's slow-write guard, which starts the
// reader after 15 ms, and the reader stays blocked in Read until asyncClose
// closes the socket), and the harness's wait for a pgbouncer process
// (re)started after the router was opened, which lives as long as that
// process. A pgx connection left open shows by its pool's goroutines, not by
// its reader: an idle one has none.
func leakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/dbrouter/dbrouter/internal/pgcluster.(*Bouncer).startLocked.func1"),
		goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgconn.(*PgConn).asyncClose.func1"),
		goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgconn/internal/bgreader.(*BGReader).bgRead"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("github.com/testcontainers/testcontainers-go.(*Reaper).connect.func1"),
	}
}

// background is a watcher's goroutines, which stop ends (at the end of the
// test, or before).
type background struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// start readies b for every; t's cleanup stops it.
func (b *background) start(t testing.TB) {
	b.ctx, b.cancel = context.WithCancel(context.Background())
	t.Cleanup(b.stop)
}

// every runs f in a goroutine of b, at once and then every d, until f
// returns true or b stops; then done, unless nil.
func (b *background) every(d time.Duration, f func(ctx context.Context) (finished bool), done func()) {
	b.wg.Go(func() {
		if done != nil {
			defer done()
		}
		tick := time.NewTicker(d)
		defer tick.Stop()
		for !f(b.ctx) {
			select {
			case <-b.ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
}

func (b *background) stop() {
	b.cancel()
	b.wg.Wait()
}
