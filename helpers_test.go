package dbrouter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
	"github.com/dbrouter/dbrouter/internal/testwait"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

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

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeNodes is a primary and replicas on the fake driver. Each node answers
// queries with its name, so a test reads back who served a call.
type fakeNodes struct {
	conns []*fakedriver.Connector // [0] primary
	dbs   []*sql.DB
}

func newFakeNodes(t testing.TB, replicas int) *fakeNodes {
	t.Helper()
	conns, dbs := fakedriver.Nodes(t, replicas)
	return &fakeNodes{conns: conns, dbs: dbs}
}

// router returns a DB over f with ping-only probes (the fake driver has no
// pg_is_in_recovery) plus opts, closed when the test ends.
func (f *fakeNodes) router(t testing.TB, opts ...Option) *DB {
	t.Helper()
	db, err := New(f.dbs[0], f.dbs[1:], append([]Option{WithDialect(Generic())}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

// served runs a one-row query and returns the name of the node that answered.
func served(t testing.TB, db interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, ctx context.Context, query string) string {
	t.Helper()
	var name string
	require.NoError(t, db.QueryRowContext(ctx, query).Scan(&name))
	return name
}

// answer is who served a query run off the test's goroutine, or its error.
type answer struct {
	node string
	err  error
}

// servedAsync runs served's query on a goroutine of its own and sends its
// answer on the returned channel, for the test's goroutine to check: require
// must not be called off that goroutine.
func servedAsync(db interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, ctx context.Context, query string) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		var a answer
		a.err = db.QueryRowContext(ctx, query).Scan(&a.node)
		ch <- a
	}()
	return ch
}

// receive waits for an answer, failing the test after timeout.
func receive(t testing.TB, ch <-chan answer, timeout time.Duration) answer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(timeout):
		t.Fatalf("no answer within %v", timeout)
		return answer{}
	}
}

// fakePG makes a fake node answer the PostgreSQL probe (and the other
// queries dbrouter sends PostgreSQL) from its fields, so health tests can
// change what a node reports.
type fakePG struct {
	c          *fakedriver.Connector
	inRecovery atomic.Bool
	lsn        atomic.Uint64
	timeline   atomic.Uint32 // the node's own timeline
	restartTL  atomic.Uint32 // a replica's last restartpoint's timeline; 0: its own
	streaming  atomic.Bool
	hidden     atomic.Bool // the receiver state is hidden from the probing role
	lsnFail    atomic.Bool // asking for the WAL insert position fails
	fail       atomic.Bool // probes fail as a refused connection would
	promotes   atomic.Int32
	started    atomic.Int64 // when its postmaster started, for promotionProbe
	port       atomic.Int64
	sysid      atomic.Uint64 // its cluster's system identifier
}

// fakeSysid is the system identifier of every fake PostgreSQL node's
// cluster, unless a test makes one of another cluster.
const fakeSysid = 7311111111111111111

// fakeStarts makes every fake PostgreSQL node's postmaster start at its
// own moment, as real servers do.
var fakeStarts atomic.Int64

func newFakePG(c *fakedriver.Connector, replica bool, timeline uint32) *fakePG {
	p := &fakePG{c: c}
	p.sysid.Store(fakeSysid)
	p.started.Store(1_700_000_000_000_000 + fakeStarts.Add(1))
	p.inRecovery.Store(replica)
	p.streaming.Store(replica)
	p.timeline.Store(timeline)
	c.SetResponder(p.respond)
	return p
}

func (p *fakePG) respond(query string, _ []driver.NamedValue) ([]string, [][]driver.Value, error) {
	switch {
	case query == postgresProbe:
		if p.fail.Load() {
			return nil, nil, driver.ErrBadConn
		}
		return []string{"r", "lsn", "tl", "restart_tl", "receiver", "sysid", "started"}, [][]driver.Value{{
			p.inRecovery.Load(), strconv.FormatUint(p.lsn.Load(), 10), p.receivedTL(), p.restartTimeline(), p.receiver(),
			strconv.FormatUint(p.sysid.Load(), 10), p.started.Load(),
		}}, nil
	case query == promotionProbe:
		if p.fail.Load() {
			return nil, nil, driver.ErrBadConn
		}
		lsn := strconv.FormatUint(p.lsn.Load(), 10)
		receiver := p.receiver()
		if receiver == "" && p.inRecovery.Load() {
			receiver = "none"
		}
		return []string{"r", "replay", "receive", "tl", "receiver", "started", "port", "sysid"}, [][]driver.Value{{
			p.inRecovery.Load(), lsn, lsn, int64(p.timeline.Load()), receiver, p.started.Load(), p.port.Load(),
			strconv.FormatUint(p.sysid.Load(), 10),
		}}, nil
	case strings.Contains(query, "pg_current_wal_insert_lsn") && p.lsnFail.Load():
		return nil, nil, &fakedriver.Error{Code: "57014", Message: "canceling statement due to statement timeout"}
	case strings.Contains(query, "pg_current_wal_insert_lsn"), strings.Contains(query, "pg_last_wal_replay_lsn"):
		return []string{"lsn"}, [][]driver.Value{{strconv.FormatUint(p.lsn.Load(), 10)}}, nil
	case strings.Contains(query, "pg_promote"):
		p.promotes.Add(1)
		p.inRecovery.Store(false)
		p.timeline.Add(1)
		return []string{"ok"}, [][]driver.Value{{true}}, nil
	}
	return []string{"node"}, [][]driver.Value{{p.c.Name()}}, nil
}

// receivedTL is the timeline column of the probe: a primary's timeline, the
// one a replica streams when the role may see it, else NULL.
func (p *fakePG) receivedTL() driver.Value {
	if p.inRecovery.Load() && p.receiver() != "streaming" {
		return nil
	}
	return int64(p.timeline.Load())
}

func (p *fakePG) restartTimeline() driver.Value {
	if !p.inRecovery.Load() {
		return int64(0)
	}
	if tl := p.restartTL.Load(); tl != 0 {
		return int64(tl)
	}
	return int64(p.timeline.Load())
}

func (p *fakePG) receiver() string {
	switch {
	case !p.inRecovery.Load():
		return ""
	case p.hidden.Load():
		return "hidden"
	case p.streaming.Load():
		return "streaming"
	}
	return "none"
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// pgCluster is fake PostgreSQL nodes behind a DB whose probes the test runs
// by hand (no background goroutines) on an injected clock.
type pgCluster struct {
	*fakeNodes
	pg    []*fakePG
	db    *DB
	clock *fakeClock

	mu     sync.Mutex
	events []Event
}

func newPGCluster(t testing.TB, replicas int, opts ...Option) *pgCluster {
	t.Helper()
	return newPGClusterSetup(t, replicas, func([]*fakePG) {}, opts...)
}

// newPGClusterSetup is newPGCluster with setup run on the fake nodes before
// the DB's first probe.
func newPGClusterSetup(t testing.TB, replicas int, setup func([]*fakePG), opts ...Option) *pgCluster {
	t.Helper()
	f := newFakeNodes(t, replicas)
	pc := &pgCluster{fakeNodes: f, clock: newFakeClock()}
	for i, c := range f.conns {
		pc.pg = append(pc.pg, newFakePG(c, i > 0, 1))
	}
	setup(pc.pg)
	base := []Option{withClock(pc.clock), withoutBackground(), WithPrimaryWait(0), WithEventHook(func(e Event) {
		pc.mu.Lock()
		pc.events = append(pc.events, e)
		pc.mu.Unlock()
	})}
	db, err := New(f.dbs[0], f.dbs[1:], append(base, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	pc.db = db
	pc.probe()
	return pc
}

// probe probes every node once, as one round of the background loop would.
func (pc *pgCluster) probe() { pc.db.probeAll() }

// promotionEnded waits until no promotion attempt is running.
func (pc *pgCluster) promotionEnded(t testing.TB) {
	t.Helper()
	promotionEnded(t, pc.db)
}

// promotionEnded waits until no promotion attempt of db is running.
func promotionEnded(t testing.TB, db *DB) {
	t.Helper()
	testwait.Until(t, 10*time.Second, "the promotion attempt to end", func() bool {
		db.mu.Lock()
		defer db.mu.Unlock()
		return !db.hs.promoting
	})
}

// eventKinds returns the kinds of the events delivered so far, once every
// event queued before the call was delivered.
func (pc *pgCluster) eventKinds() []EventKind {
	pc.db.events.flush()
	pc.mu.Lock()
	defer pc.mu.Unlock()
	var ks []EventKind
	for _, e := range pc.events {
		ks = append(ks, e.Kind)
	}
	return ks
}
