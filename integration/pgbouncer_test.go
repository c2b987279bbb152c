package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/pgcluster"
	"github.com/dbrouter/dbrouter/internal/testwait"
)

// dbrouter behind PgBouncer 1.18 (internal/pgcluster's harness): one
// pgbouncer in front of each node of a real primary + 2 replicas, the
// router opened over the bouncers' DSNs. Every statement reports,
// server-side, which server ran it: behind a bouncer inet_server_port() is
// the server's own port (the bouncer's side of the connection is the
// client), and cluster_name names the node. The figures the tests print
// start with REPORT:.
//
// The names start TestPgBouncer and hold none of the words .ci/run's
// docker-backend pass selects (Integration, Failover, NetworkCut,
// AutoPromote, Docker), so they run once, with the local backend.

// currentTL is the timeline a primary writes on now (pg_control_checkpoint
// lags after a promotion until the next checkpoint).
const currentTL = `('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int`

// pgxSimple, as a query's first argument, makes pgx send that query with
// the simple protocol whatever the DSN's exec mode.
const pgxSimple = pgx.QueryExecModeSimpleProtocol

// whoAmI names the server that ran a statement: its port and cluster_name.
const whoAmI = "SELECT inet_server_port(), current_setting('cluster_name')"

// bouncerCluster is a cluster with a bouncer in front of each node.
type bouncerCluster struct {
	c       *pgcluster.Cluster
	nodes   []*pgcluster.Node // in the order of the router's configuration: node0 (primary) first
	bs      []*pgcluster.Bouncer
	names   []string
	byPort  map[int]string // node name by server port
	execDSN string         // pgx default_query_exec_mode for the DSNs; "" for pgx's default
}

// startBouncers puts a bouncer with opts in front of each node of c.
func startBouncers(t *testing.T, c *pgcluster.Cluster, opts pgcluster.BouncerOptions) *bouncerCluster {
	t.Helper()
	bc := &bouncerCluster{c: c, nodes: c.Nodes(), byPort: map[int]string{}}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {} // the harness's progress lines are not this test's
	}
	bc.bs = pgcluster.StartBouncersT(t, c, opts)
	for _, n := range bc.nodes {
		bc.names = append(bc.names, n.Name())
		bc.byPort[n.Port()] = n.Name()
	}
	return bc
}

// dsns returns the DSNs through the bouncers, as user, with pgx's exec mode
// set to mode ("" leaves pgx's default, cache_statement).
func (bc *bouncerCluster) dsns(user, mode string) []string {
	var dsns []string
	for _, b := range bc.bs {
		dsns = append(dsns, withExecMode(b.UserDSN(user), mode))
	}
	return dsns
}

func withExecMode(dsn, mode string) string {
	if mode == "" {
		return dsn
	}
	return dsn + "&default_query_exec_mode=" + mode
}

// open opens a router over the bouncers (user postgres, exec mode mode),
// with a probe timeout a busy machine never runs out of unless something
// really waits.
func (bc *bouncerCluster) open(t *testing.T, mode string, opts ...dbrouter.Option) *dbrouter.DB {
	t.Helper()
	return bc.openAs(t, "postgres", mode, opts...)
}

// openAs is open, logged in as user.
func (bc *bouncerCluster) openAs(t *testing.T, user, mode string, opts ...dbrouter.Option) *dbrouter.DB {
	t.Helper()
	return openDSNs(t, bc.dsns(user, mode), bc.names, append([]dbrouter.Option{dbrouter.WithProbeTimeout(5 * time.Second)}, opts...)...)
}

// server returns the node that served: by its port, checked against its
// cluster_name (on the docker backend every node listens on 5432 in its
// container, so the name alone decides there).
func (bc *bouncerCluster) server(port int, name string) (string, error) {
	if bc.c.Backend() != pgcluster.BackendLocal {
		return name, nil
	}
	if got, ok := bc.byPort[port]; !ok || got != name {
		return "", fmt.Errorf("inet_server_port() %d is %q's, but cluster_name says %q", port, got, name)
	}
	return name, nil
}

// whoServes runs whoAmI through q and returns the node that served it.
func (bc *bouncerCluster) whoServes(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (string, error) {
	return bc.ranOn(ctx, q, whoAmI)
}

// ranOn runs query, which returns a server's port and cluster_name as
// whoAmI does, through q and returns the node that ran it.
func (bc *bouncerCluster) ranOn(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, query string, args ...any) (string, error) {
	var port int
	var name string
	if err := q.QueryRowContext(ctx, query, args...).Scan(&port, &name); err != nil {
		return "", err
	}
	return bc.server(port, name)
}

// whoServesEach runs whoAmI through q n times and counts the calls each
// node served.
func (bc *bouncerCluster) whoServesEach(t *testing.T, ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		who, err := bc.whoServes(ctx, q)
		require.NoError(t, err)
		got[who]++
	}
	return got
}

// createBounceTable creates the load's table through db (the router, or a
// handle on the primary): each row says who inserted it (port, node), on
// which timeline, and when.
func createBounceTable(t *testing.T, ctx context.Context, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, table string) {
	t.Helper()
	_, err := db.ExecContext(ctx, fmt.Sprintf(`CREATE TABLE %s (
		id bigserial PRIMARY KEY,
		v bigint UNIQUE NOT NULL,
		kind text NOT NULL,
		port int DEFAULT inet_server_port(),
		node text DEFAULT current_setting('cluster_name'),
		tl int DEFAULT %s,
		at timestamptz DEFAULT clock_timestamp())`, table, currentTL))
	require.NoError(t, err)
}

// opKind is what one statement of a bounceLoad does.
type opKind uint8

const (
	opRead       opKind = iota // QueryRow of whoAmI
	opQueryWrite               // INSERT … RETURNING through QueryRow
	opExecWrite                // INSERT through Exec
	opTxWrite                  // BeginTx, INSERT … RETURNING, Commit
	opReadTx                   // BeginTx{ReadOnly}, whoAmI, Commit
	numOpKinds
)

func (k opKind) String() string {
	return [...]string{"read", "query write", "exec write", "tx write", "read-only tx"}[k]
}

func (k opKind) write() bool { return k == opQueryWrite || k == opExecWrite || k == opTxWrite }

// bop is one statement of a bounceLoad.
type bop struct {
	kind       opKind
	start, end time.Time
	v          int64  // the value a write inserted
	node       string // who served it, by its own account ("" for an exec write)
	tl         int    // the timeline a write committed on, by its own account
	err        error
}

// bounceLoad runs statements through a router until stopped, each with a
// deadline of its own, and keeps every result.
type bounceLoad struct {
	bc     *bouncerCluster
	db     *dbrouter.DB
	table  string
	cancel context.CancelFunc
	wg     sync.WaitGroup
	hold   atomic.Bool // writers skip their turns while set
	next   atomic.Int64

	mu       sync.Mutex // protects following fields
	ops      []bop
	inFlight map[int64]time.Time // by a per-call id: when it started
}

// startBounceLoad starts workers[k] goroutines of each kind k, each call
// with callTimeout.
func startBounceLoad(t *testing.T, bc *bouncerCluster, db *dbrouter.DB, table string, workers [numOpKinds]int, callTimeout time.Duration) *bounceLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &bounceLoad{bc: bc, db: db, table: table, cancel: cancel, inFlight: map[int64]time.Time{}}
	for k, n := range workers {
		for range n {
			l.wg.Go(func() { l.run(ctx, opKind(k), callTimeout) })
		}
	}
	t.Cleanup(l.stop)
	return l
}

func (l *bounceLoad) run(ctx context.Context, kind opKind, callTimeout time.Duration) {
	tick := time.NewTicker(5 * time.Millisecond) // a steady load, not a busy loop
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if kind.write() && l.hold.Load() {
			continue
		}
		id := l.next.Add(1)
		o := bop{kind: kind, v: id, start: time.Now()}
		l.mu.Lock()
		l.inFlight[id] = o.start
		l.mu.Unlock()
		cctx, ccancel := context.WithTimeout(ctx, callTimeout)
		o.node, o.tl, o.err = l.one(cctx, kind, id)
		ccancel()
		o.end = time.Now()
		l.mu.Lock()
		delete(l.inFlight, id)
		if ctx.Err() == nil { // stopped mid-call: not a result
			l.ops = append(l.ops, o)
		}
		l.mu.Unlock()
	}
}

// one runs one statement of kind, inserting v if it writes.
func (l *bounceLoad) one(ctx context.Context, kind opKind, v int64) (node string, tl int, err error) {
	var port int
	ins := "INSERT INTO " + l.table + " (v, kind) VALUES ($1, $2)"
	switch kind {
	case opRead:
		node, err = l.bc.whoServes(ctx, l.db)
		return node, 0, err
	case opQueryWrite:
		err = l.db.QueryRowContext(ctx, ins+" RETURNING port, node, tl", v, kind.String()).Scan(&port, &node, &tl)
	case opExecWrite:
		_, err = l.db.ExecContext(ctx, ins, v, kind.String())
		return "", 0, err
	case opTxWrite, opReadTx:
		tx, err := l.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: kind == opReadTx})
		if err != nil {
			return "", 0, err
		}
		if kind == opTxWrite {
			err = tx.QueryRowContext(ctx, ins+" RETURNING port, node, tl", v, kind.String()).Scan(&port, &node, &tl)
		} else {
			var name string
			if err = tx.QueryRowContext(ctx, whoAmI).Scan(&port, &name); err == nil {
				node, err = l.bc.server(port, name)
				port = 0
			}
		}
		if err != nil {
			tx.Rollback()
			return "", 0, err
		}
		if err = tx.Commit(); err != nil {
			return "", 0, err
		}
	}
	if err == nil && port != 0 {
		node, err = l.bc.server(port, node)
	}
	return node, tl, err
}

func (l *bounceLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *bounceLoad) snapshot() []bop {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ops)
}

// settle waits until no call that started before t is still running.
func (l *bounceLoad) settle(tb testing.TB, before time.Time, timeout time.Duration) {
	tb.Helper()
	testwait.Until(tb, timeout, "the calls started before "+before.Format("15:04:05.000")+" to return", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, s := range l.inFlight {
			if s.Before(before) {
				return false
			}
		}
		return true
	})
}

// waitServed waits until n more statements of kind than now succeeded on node.
func (l *bounceLoad) waitServed(t *testing.T, kind opKind, node string, n int, timeout time.Duration) {
	t.Helper()
	count := func() int {
		c := 0
		for _, o := range l.snapshot() {
			if o.kind == kind && o.err == nil && o.node == node {
				c++
			}
		}
		return c
	}
	base := count()
	testwait.Until(t, timeout, fmt.Sprintf("%d more %ss served by %s", n, kind, node), func() bool { return count() >= base+n })
}

// tally counts ops by kind, and the successful ones by node.
type tally struct {
	ok, failed [numOpKinds]int
	byNode     [numOpKinds]map[string]int
	firstErr   [numOpKinds]error
	errs       map[string]int // failures by SQLSTATE, or Go error type
}

func tallyOps(ops []bop) tally {
	var s tally
	s.errs = map[string]int{}
	for k := range s.byNode {
		s.byNode[k] = map[string]int{}
	}
	for _, o := range ops {
		if o.err != nil {
			s.failed[o.kind]++
			if s.firstErr[o.kind] == nil {
				s.firstErr[o.kind] = o.err
			}
			s.errs[errClass(o.err)]++
			continue
		}
		s.ok[o.kind]++
		if o.node != "" {
			s.byNode[o.kind][o.node]++
		}
	}
	return s
}

func (s tally) String() string {
	var parts []string
	for k := range numOpKinds {
		if s.ok[k]+s.failed[k] == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%ss %d ok %v, %d failed", k, s.ok[k], s.byNode[k], s.failed[k]))
	}
	if len(s.errs) > 0 {
		parts = append(parts, fmt.Sprintf("errors by kind %v", s.errs))
	}
	return strings.Join(parts, "; ")
}

// errClass names an error for counting: its SQLSTATE (with PgBouncer's
// message for its 08P01s, which say different things), a dbrouter
// sentinel, or "connection" / "deadline" / "other".
func errClass(err error) string {
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && pe.Code == "08P01":
		return pe.Code + " " + pe.Message
	case errors.Is(err, dbrouter.ErrPrimaryLost):
		return "ErrPrimaryLost"
	case errors.Is(err, dbrouter.ErrNoPrimary):
		return "ErrNoPrimary"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	case sqlStateOf(err) != "":
		return sqlStateOf(err)
	case connectionFailed(err):
		return "connection"
	}
	return "other"
}

// eventCount returns how many events of each kind the router emitted.
func eventCount(db *dbrouter.DB, kind dbrouter.EventKind) uint64 {
	return db.Status().EventCounts[kind]
}

// statusEvent returns the first of the recent events of kind in db's
// Status (recorded when queued, unlike the hook's), or a zero Event.
func statusEvent(db *dbrouter.DB, kind dbrouter.EventKind) dbrouter.Event {
	for _, e := range db.Status().Events {
		if e.Kind == kind {
			return e
		}
	}
	return dbrouter.Event{}
}

// sortedKeys returns m's keys in order, for stable logs.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// crashVariant is one way of reaching the nodes in TestPgBouncerCrash.
type crashVariant struct {
	name     string
	pool     string // pgcluster.PoolTransaction or PoolSession; "" for no bouncer
	execMode string // the DSNs' default_query_exec_mode
	bouncer  pgcluster.BouncerOptions
	// repointOld re-points the old primary's bouncer at the new primary
	// right after the promotion, as an operator who has one "primary
	// bouncer" for the application does: then nothing reaches the old
	// primary when it restarts, and nothing is fenced.
	repointOld bool
	// timeline is the one the cluster is on before the crash (0: 1, a
	// fresh cluster; 2: it failed over once already, see clusterOnTimeline).
	timeline int
	// role, when set, is a plain login role (no pg_monitor) the application
	// and its probes log in as: it sees a replica's timeline only at its
	// restartpoints, forced here where the test needs the replicas readable
	// (see TestPlainRoleOnTimeline2).
	role string
	// noneLost: no write may commit on the restarted old primary at all.
	// With query_wait_timeout (5 s) shorter than server_login_retry (15 s,
	// after which the dead primary's bouncer first tries its server again),
	// a write queued there fails before the bouncer reaches the old primary.
	noneLost bool
}

// crashFigures are what one crash episode measured.
type crashFigures struct {
	resume, fence time.Duration
}

// TestPgBouncerCrash crashes the primary behind its bouncer (kill -9 of its
// postmaster) under a load of
// reads and writes (writes with 60 s deadlines, so that those the dead
// primary's bouncer queues wait there), promotes a replica and re-points
// the other at it, then restarts the old primary: crash recovery brings it
// back as a primary on its old timeline, and its bouncer, which still points at
// its port, reaches it again. Each node has its own bouncer, as an operator
// runs them (one on each database host): nothing re-points the old
// primary's bouncer, which is what makes the restarted node reachable, and
// what lets the writes queued in that bouncer since the crash commit on it
// once it is back (PgBouncer retries the server every server_login_retry,
// 15 s by default): with query_wait_timeout shorter than that, none does.
// A variant re-points the old primary's bouncer at the new primary
// instead, as an operator with one "primary bouncer" would; another runs on
// a cluster that failed over once before (timeline 2), as real ones have.
//
// It asserts that no read fails (but those in flight on a connection the
// crash broke), that no write the old primary committed after the promotion
// (a row it holds that the new primary does not) was acknowledged (the
// router returns ErrPrimaryLost for them), that every write acknowledged
// after the promotion came from the new primary, on the next timeline, by the
// server's own account, and that the old primary is fenced. It reports,
// behind each pool mode and with no bouncer, how long writes took to resume
// after the promotion (to the first write the new primary acknowledged),
// and the old primary to be fenced after its restart was issued (crash
// recovery included).
func TestPgBouncerCrash(t *testing.T) {
	skipShort(t)
	for _, v := range []crashVariant{
		{name: "transaction pooling", pool: pgcluster.PoolTransaction, execMode: "simple_protocol"},
		{name: "session pooling", pool: pgcluster.PoolSession},
		{name: "no bouncer"},
		{name: "transaction pooling, query_wait_timeout 5s", pool: pgcluster.PoolTransaction, execMode: "simple_protocol",
			bouncer: pgcluster.BouncerOptions{QueryWaitTimeout: 5 * time.Second}, noneLost: true},
		{name: "transaction pooling, old primary's bouncer re-pointed", pool: pgcluster.PoolTransaction, execMode: "simple_protocol", repointOld: true},
		{name: "transaction pooling, on timeline 2", pool: pgcluster.PoolTransaction, execMode: "simple_protocol", timeline: 2},
		{name: "transaction pooling, on timeline 2, as a plain login role", pool: pgcluster.PoolTransaction, execMode: "simple_protocol", timeline: 2, role: "plain_app"},
	} {
		t.Run(v.name, func(t *testing.T) {
			f := testBouncerCrash(t, v)
			fence := "not fenced: nothing reaches it"
			if !v.repointOld {
				fence = "fenced " + f.fence.Round(time.Millisecond).String()
			}
			t.Logf("REPORT: crash %s: promotion -> first write acknowledged by the new primary %v; old primary's restart issued -> %s",
				v.name, f.resume.Round(time.Millisecond), fence)
		})
	}
}

func testBouncerCrash(t *testing.T, v crashVariant) crashFigures {
	ctx := testContext(t, 4*time.Minute)
	tl := max(v.timeline, 1)
	c := clusterOnTimeline(t, tl)
	n0, n1, n2 := c.Primary(), c.Replicas()[0], c.Replicas()[1]
	p0, p1, p2 := n0.Name(), n1.Name(), n2.Name()
	var bc *bouncerCluster
	var events eventLog
	var db *dbrouter.DB
	const table = "bounce_crash"
	user := "postgres"
	if v.role != "" {
		user = v.role
		require.NoError(t, n0.Exec(ctx, "CREATE ROLE "+v.role+" LOGIN"))
		h, err := n0.Open()
		require.NoError(t, err)
		createBounceTable(t, ctx, h, table)
		h.Close()
		require.NoError(t, n0.Exec(ctx, fmt.Sprintf("GRANT SELECT, INSERT ON %s TO %s; GRANT USAGE ON SEQUENCE %s_id_seq TO %[2]s", table, v.role, table)))
		waitReplicas(t, ctx, c, "the role and the table", "SELECT count(*) = 1 FROM pg_roles WHERE rolname = $1 AND to_regclass('"+table+"') IS NOT NULL", v.role)
		forceRestartpoints(t, ctx, n0, n1, n2) // on timeline 2, what a plain role sees of the replicas' timeline
	}
	if v.pool != "" {
		o := v.bouncer
		o.PoolMode = v.pool
		if v.role != "" {
			o.Users = append(o.Users, pgcluster.BouncerUser{Name: v.role})
		}
		bc = startBouncers(t, c, o)
		db = bc.openAs(t, user, v.execMode, dbrouter.WithEventHook(events.add))
	} else {
		bc = &bouncerCluster{c: c, nodes: c.Nodes(), byPort: map[int]string{}}
		var dsns []string
		for _, n := range c.Nodes() {
			bc.names = append(bc.names, n.Name())
			bc.byPort[n.Port()] = n.Name()
			dsns = append(dsns, n.DSN())
		}
		db = openDSNs(t, dsns, bc.names, dbrouter.WithProbeTimeout(5*time.Second), dbrouter.WithEventHook(events.add))
	}
	if v.role == "" {
		createBounceTable(t, ctx, db, table)
	}

	l := startBounceLoad(t, bc, db, table, [numOpKinds]int{opRead: 4, opReadTx: 1, opQueryWrite: 2, opExecWrite: 2, opTxWrite: 1}, time.Minute)
	l.waitServed(t, opQueryWrite, p0, 20, time.Minute)
	// The writers pause until both replicas have all the primary's WAL,
	// so that node2 can follow node1's timeline once re-pointed; they go
	// on right after the crash, into the dead primary's bouncer until the
	// router sees it down.
	l.hold.Store(true)
	waitCaughtUp(t, ctx, c)
	crashAt := time.Now()
	require.NoError(t, n0.Kill(ctx)) // kill -9 of its postmaster
	l.hold.Store(false)
	testwait.Until(t, time.Minute, "the router to lose the primary", func() bool { return db.Status().Primary == "" })
	promotedAt := promote(t, ctx, n1)
	if v.repointOld {
		require.NoError(t, bc.bs[0].Repoint(ctx, n1))
	}
	before := db.Status()
	l.waitServed(t, opQueryWrite, p1, 20, time.Minute)
	require.NoError(t, n2.Repoint(ctx, n1))
	require.NoError(t, n2.WaitStreaming(ctx))
	if v.role != "" {
		forceRestartpoints(t, ctx, n1, n2)
	}
	testwait.Until(t, time.Minute, fmt.Sprintf("%s readable on timeline %d", p2, tl+1), func() bool { return nodeStatus(t, db, p2).Readable })

	restartedAt := time.Now()
	require.NoError(t, n0.Start(ctx)) // crash recovery: a primary on its old timeline, tl
	t.Logf("%s restarted, accepting connections, in %v", p0, time.Since(restartedAt).Round(time.Millisecond))
	var fenced dbrouter.Event
	if !v.repointOld {
		testwait.Until(t, time.Minute, p0+" fenced", func() bool { return nodeStatus(t, db, p0).State == dbrouter.StateFenced })
		fenced = statusEvent(db, dbrouter.EventFenced) // the hook may not have had it yet
		require.Equal(t, p0, fenced.Node)
	}
	l.waitServed(t, opQueryWrite, p1, 20, time.Minute)
	after := db.Status()
	var routed []string
	for i, n := range after.Nodes {
		routed = append(routed, fmt.Sprintf("%s %d", n.Name, n.Writes-before.Nodes[i].Writes))
	}
	t.Logf("REPORT: crash %s: writes the router sent through each node's bouncer after the promotion (Status().Nodes[].Writes): %s; primary %s; fenced %v",
		v.name, strings.Join(routed, ", "), after.Primary, after.EventCounts[dbrouter.EventFenced] > 0)
	// Writes queued in the old primary's bouncer since the crash end by
	// now: committed on the old primary once it was back, or failed.
	l.settle(t, restartedAt, 2*time.Minute)
	l.stop()
	ops := l.snapshot()

	// Reads: none fails, but those in flight at the crash on a connection
	// the crash broke after their row came back (see failedBut).
	var readErrs, inFlight int
	var firstReadErr error
	for _, o := range ops {
		if o.err == nil || o.kind.write() || o.end.Before(crashAt) {
			continue
		}
		if connectionFailed(o.err) && !o.start.After(crashAt) {
			inFlight++
			continue
		}
		readErrs++
		if firstReadErr == nil {
			firstReadErr = fmt.Errorf("%s at +%v: %w", o.kind, o.start.Sub(crashAt).Round(time.Millisecond), o.err)
		}
	}
	assert.Zero(t, readErrs, "no read fails (first: %v)", firstReadErr)

	// Writes: what each server holds decides. A row the old primary holds
	// and the new one does not was committed on the abandoned history: lost.
	lost := rowsOnlyOn(t, ctx, n0, n1, table)
	var acked, ackedLost, primaryLost, lostUnacked int
	var firstResume time.Time
	for _, o := range ops {
		if !o.kind.write() {
			continue
		}
		if errors.Is(o.err, dbrouter.ErrPrimaryLost) {
			primaryLost++
		}
		if o.err != nil {
			if lost[o.v] {
				lostUnacked++
			}
			continue
		}
		acked++
		if lost[o.v] {
			ackedLost++
			t.Errorf("%s %d acknowledged (ended +%v after the promotion) but committed only on %s's abandoned timeline %d",
				o.kind, o.v, o.end.Sub(promotedAt).Round(time.Millisecond), p0, tl)
		}
		if o.node != "" && o.end.After(promotedAt) {
			assert.Equal(t, p1, o.node, "%s %d acknowledged after the promotion by another node than the new primary", o.kind, o.v)
			assert.Equal(t, tl+1, o.tl, "%s %d acknowledged after the promotion on timeline %d", o.kind, o.v, o.tl)
		}
		if o.node == p1 && (firstResume.IsZero() || o.end.Before(firstResume)) {
			firstResume = o.end
		}
	}
	require.False(t, firstResume.IsZero())
	f := crashFigures{resume: max(firstResume.Sub(promotedAt), 0)}
	if !fenced.Time.IsZero() {
		f.fence = fenced.Time.Sub(restartedAt)
	}
	st := tallyOps(ops)
	t.Logf("REPORT: crash %s: %d rows committed only on the old primary after it came back, %d of them acknowledged; %d writes failed with ErrPrimaryLost; reads in flight at the crash that failed %d; %v",
		v.name, len(lost), ackedLost, primaryLost, inFlight, st)
	t.Logf("events: %s", events.String())
	// The failed statements, by kind, phase and error, with the first of each.
	phase := func(at time.Time) string {
		switch {
		case at.Before(crashAt):
			return "before the crash"
		case at.Before(promotedAt):
			return "crash..promotion"
		case at.Before(restartedAt):
			return "promotion..restart"
		}
		return "after the restart"
	}
	failures := map[string]int{}
	firsts := map[string]bop{}
	for _, o := range ops {
		if o.err != nil {
			key := o.kind.String() + ", " + phase(o.start) + ", " + errClass(o.err)
			if failures[key] == 0 {
				firsts[key] = o
			}
			failures[key]++
		}
	}
	for _, key := range sortedKeys(failures) {
		o := firsts[key]
		t.Logf("REPORT: crash %s: failed %s: %d (the first sent %v after the crash, took %v: %v)", v.name, key, failures[key],
			o.start.Sub(crashAt).Round(time.Millisecond), o.end.Sub(o.start).Round(time.Millisecond), o.err)
	}
	t.Logf("REPORT: crash %s: crash -> router without a primary -> promotion %v; promotion -> old primary restarted %v",
		v.name, promotedAt.Sub(crashAt).Round(time.Millisecond), restartedAt.Sub(promotedAt).Round(time.Millisecond))
	assert.Zero(t, ackedLost)
	assert.Equal(t, len(lost), lostUnacked, "every lost write failed")
	if v.noneLost {
		assert.Empty(t, lost, "writes queued in the old primary's bouncer committed there")
	}
	if v.repointOld {
		// Both bouncers reach the new primary now: either may be the one
		// the router writes through (it fences the other).
		assert.Contains(t, []string{p0, p1}, db.Status().Primary)
	} else {
		assert.Equal(t, p1, db.Status().Primary)
	}
	return f
}

// rowsOnlyOn returns the v of every row of table that from holds and to
// does not, asked of each server directly.
func rowsOnlyOn(t *testing.T, ctx context.Context, from, to *pgcluster.Node, table string) map[int64]bool {
	t.Helper()
	read := func(n *pgcluster.Node) map[int64]bool {
		h, err := n.Open()
		require.NoError(t, err)
		defer h.Close()
		rows, err := h.QueryContext(ctx, "SELECT v FROM "+table)
		require.NoError(t, err)
		defer rows.Close()
		m := map[int64]bool{}
		for rows.Next() {
			var v int64
			require.NoError(t, rows.Scan(&v))
			m[v] = true
		}
		require.NoError(t, rows.Err())
		return m
	}
	a, b := read(from), read(to)
	only := map[int64]bool{}
	for v := range a {
		if !b[v] {
			only[v] = true
		}
	}
	return only
}

// runBounceLoad runs a load of every kind through db for d and returns
// what it did.
func runBounceLoad(t *testing.T, bc *bouncerCluster, db *dbrouter.DB, table string, workers [numOpKinds]int, d time.Duration) []bop {
	t.Helper()
	l := startBounceLoad(t, bc, db, table, workers, 30*time.Second)
	began := time.Now()
	testwait.Until(t, d+time.Minute, fmt.Sprintf("%v of load", d), func() bool { return time.Since(began) >= d })
	l.stop()
	return l.snapshot()
}

// mixedLoad is one goroutine of each kind, and two readers.
var mixedLoad = [numOpKinds]int{opRead: 2, opQueryWrite: 1, opExecWrite: 1, opTxWrite: 1, opReadTx: 1}

// TestPgBouncerWorkingConfigurations runs everything the router offers
// through PgBouncer in the two configurations that work: transaction
// pooling with pgx's simple_protocol exec mode, and session pooling with
// pgx's default. A mixed load of reads, writes and read-write and
// read-only transactions fails no statement, and each lands where it
// should; sessions read their writes; PrepareRouted and Prepare run 200
// times each without an error (behind transaction pooling only with
// WithServerPreparedStatements(false): without it they fail, on prepared
// statements missing or doubled on the server connection); and the SQL()
// face routes as the DB does.
func TestPgBouncerWorkingConfigurations(t *testing.T) {
	c := sharedCluster(t)
	for _, tc := range []struct {
		name, pool, mode string
		needsOption      bool // PrepareRouted and Prepare need WithServerPreparedStatements(false)
	}{
		{"transaction pooling, simple_protocol", pgcluster.PoolTransaction, "simple_protocol", true},
		{"session pooling, pgx's default exec mode", pgcluster.PoolSession, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t, 3*time.Minute)
			bc := startBouncers(t, c, pgcluster.BouncerOptions{PoolMode: tc.pool})
			var events eventLog
			var opts []dbrouter.Option
			if tc.needsOption {
				opts = append(opts, dbrouter.WithServerPreparedStatements(false))
			}
			db := bc.open(t, tc.mode, append(opts, dbrouter.WithEventHook(events.add), dbrouter.WithSessionMode(dbrouter.SessionCausal(200*time.Millisecond)))...)
			table := uniqueName(t, "bounce")
			createBounceTable(t, ctx, db, table)
			t.Cleanup(func() { c.Primary().Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
			waitReplicas(t, ctx, c, "the table", "SELECT to_regclass($1) IS NOT NULL", table)

			t.Run("mixed load", func(t *testing.T) {
				ops := runBounceLoad(t, bc, db, table, mixedLoad, 5*time.Second)
				s := tallyOps(ops)
				t.Logf("REPORT: %s: mixed load for 5s: %v", tc.name, s)
				for k := range numOpKinds {
					assert.Zero(t, s.failed[k], "%ss failed (first: %v)", k, s.firstErr[k])
					assert.Positive(t, s.ok[k], "no %s succeeded", k)
				}
				for _, k := range []opKind{opRead, opReadTx} {
					assert.Zero(t, s.byNode[k]["node0"], "%ss on the primary", k)
					assert.Positive(t, s.byNode[k]["node1"], "%ss on node1", k)
					assert.Positive(t, s.byNode[k]["node2"], "%ss on node2", k)
				}
				for _, k := range []opKind{opQueryWrite, opTxWrite} {
					assert.Equal(t, map[string]int{"node0": s.ok[k]}, s.byNode[k], "%ss", k)
				}
				var execs int
				require.NoError(t, c.Primary().QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE kind = 'exec write' AND node <> 'node0'", &execs))
				assert.Zero(t, execs, "exec writes stored by another node than the primary")
			})

			t.Run("reads spread, writes on the primary", func(t *testing.T) {
				got := bc.whoServesEach(t, ctx, db, 40)
				assert.Zero(t, got["node0"], "%v", got)
				assert.Positive(t, got["node1"], "%v", got)
				assert.Positive(t, got["node2"], "%v", got)
				n, err := bc.ranOn(ctx, db, "INSERT INTO "+table+" (v, kind) VALUES ($1, 'spread') RETURNING port, node", nextV())
				require.NoError(t, err)
				assert.Equal(t, "node0", n)
			})

			t.Run("transactions", func(t *testing.T) {
				for _, ro := range []bool{false, true} {
					for range 10 {
						tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: ro})
						require.NoError(t, err)
						n, err := bc.whoServes(ctx, tx)
						require.NoError(t, err)
						var inRecovery bool
						require.NoError(t, tx.QueryRowContext(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery))
						if ro {
							assert.Contains(t, []string{"node1", "node2"}, n, "a read-only transaction")
							assert.True(t, inRecovery)
						} else {
							assert.Equal(t, "node0", n, "a read-write transaction")
							_, err = tx.ExecContext(ctx, "INSERT INTO "+table+" (v, kind) VALUES ($1, 'tx')", nextV())
							require.NoError(t, err)
						}
						require.NoError(t, tx.Commit())
					}
				}
			})

			t.Run("sessions read their writes", func(t *testing.T) {
				var stale, onReplicas int
				for range 50 {
					s := dbrouter.NewSession()
					sctx := dbrouter.WithSession(ctx, s)
					v := nextV()
					_, err := db.ExecContext(sctx, "INSERT INTO "+table+" (v, kind) VALUES ($1, 'session')", v)
					require.NoError(t, err)
					var n int
					var port int
					var name string
					require.NoError(t, db.QueryRowContext(sctx, "SELECT count(*), inet_server_port(), current_setting('cluster_name') FROM "+table+" WHERE v = $1", v).Scan(&n, &port, &name))
					if n != 1 {
						stale++
					}
					who, err := bc.server(port, name)
					require.NoError(t, err)
					if who != "node0" {
						onReplicas++
					}
				}
				t.Logf("REPORT: %s: 50 sessions each read their write back: %d stale, %d of the reads on a replica", tc.name, stale, onReplicas)
				assert.Zero(t, stale)
			})

			t.Run("PrepareRouted and Prepare", func(t *testing.T) {
				errs := preparedCalls(t, ctx, bc, db, table, 200)
				assert.Zero(t, errs.routed, "PrepareRouted (first: %v)", errs.first)
				assert.Zero(t, errs.prepared, "Prepare (first: %v)", errs.first)
				if !tc.needsOption {
					return
				}
				// Without the option, statements prepared on one server
				// connection are run on another: a clear error, from the
				// server.
				var plainEvents eventLog
				plain := bc.open(t, tc.mode, dbrouter.WithEventHook(plainEvents.add))
				var bad preparedErrs
				for range 20 {
					if bad = preparedCalls(t, ctx, bc, plain, table, 200); bad.routed+bad.prepared > 0 {
						break
					}
				}
				require.NotNil(t, bad.first, "no error without WithServerPreparedStatements(false)")
				t.Logf("REPORT: %s without WithServerPreparedStatements(false): PrepareRouted %d errors, Prepare %d errors in 200 calls each (first: %v)",
					tc.name, bad.routed, bad.prepared, bad.first)
				assert.Contains(t, []string{"26000", "42P05"}, sqlStateOf(bad.first), "%v", bad.first)
				// And the router names the fix, once.
				assert.Equal(t, uint64(1), eventCount(plain, dbrouter.EventStatementClash))
				assert.Contains(t, statusEvent(plain, dbrouter.EventStatementClash).Detail, "WithServerPreparedStatements(false)")
			})

			t.Run("SQL()", func(t *testing.T) {
				face := db.SQL()
				got := bc.whoServesEach(t, ctx, face, 10)
				assert.Zero(t, got["node0"], "%v", got)
				n, err := bc.ranOn(ctx, face, "INSERT INTO "+table+" (v, kind) VALUES ($1, 'face') RETURNING port, node", nextV())
				require.NoError(t, err)
				assert.Equal(t, "node0", n)
				tx, err := face.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
				require.NoError(t, err)
				n, err = bc.whoServes(ctx, tx)
				require.NoError(t, err)
				assert.Contains(t, []string{"node1", "node2"}, n)
				require.NoError(t, tx.Commit())
				tx, err = face.BeginTx(ctx, nil)
				require.NoError(t, err)
				n, err = bc.whoServes(ctx, tx)
				require.NoError(t, err)
				assert.Equal(t, "node0", n)
				require.NoError(t, tx.Rollback())
			})

			for _, n := range db.Status().Nodes {
				assert.Equal(t, dbrouter.StateUp, n.State, "%s: %v", n.Name, n.LastError)
			}
			assert.Zero(t, eventCount(db, dbrouter.EventNodeDown), "events: %s", events.String())
			assert.Zero(t, eventCount(db, dbrouter.EventStatementClash), "events: %s", events.String())
		})
	}
}

// vSeq numbers the rows the tests insert outside a bounceLoad (whose
// values count up from 1): negative, so they never collide.
var vSeq atomic.Int64

func nextV() int64 { return vSeq.Add(-1) }

// preparedErrs counts the calls of preparedCalls that failed.
type preparedErrs struct {
	routed, prepared int
	first            error
}

// preparedCalls runs n calls of a PrepareRouted statement and n of a
// Prepare one (a read and a write each), from 8 goroutines, through db.
func preparedCalls(t *testing.T, ctx context.Context, bc *bouncerCluster, db *dbrouter.DB, table string, n int) preparedErrs {
	t.Helper()
	var mu sync.Mutex
	var e preparedErrs
	fail := func(count *int, err error) {
		mu.Lock()
		defer mu.Unlock()
		*count++
		if e.first == nil {
			e.first = err
		}
	}
	// calls runs the n calls of one kind, a quarter of them writes, and
	// counts its failures in count: an error, or a node that should not
	// have served the call.
	calls := func(kind string, read, write preparedStmt, count *int) {
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := g; i < n; i += 8 {
					var port int
					var name string
					var err error
					isWrite := i%4 == 0
					if isWrite {
						err = write.QueryRowContext(ctx, nextV()).Scan(&port, &name)
					} else {
						err = read.QueryRowContext(ctx).Scan(&port, &name)
					}
					if err == nil {
						var who string
						if who, err = bc.server(port, name); err == nil && isWrite != (who == "node0") {
							err = fmt.Errorf("%s: write=%v served by %s", kind, isWrite, who)
						}
					}
					if err != nil {
						fail(count, err)
					}
				}
			})
		}
		wg.Wait()
	}
	insert := func(kind string) string {
		return "INSERT INTO " + table + " (v, kind) VALUES ($1, '" + kind + "') RETURNING port, node"
	}
	for _, k := range []struct {
		name, kind string
		count      *int
		prepare    func(query string) (preparedStmt, error)
	}{
		{"PrepareRouted", "routed", &e.routed, func(q string) (preparedStmt, error) { return db.PrepareRouted(ctx, q) }},
		{"Prepare", "prepared", &e.prepared, func(q string) (preparedStmt, error) { return db.PrepareContext(ctx, q) }},
	} {
		read, err := k.prepare(whoAmI)
		if err != nil {
			fail(k.count, err)
			return e
		}
		defer read.Close()
		write, err := k.prepare(insert(k.kind))
		if err != nil {
			fail(k.count, err)
			return e
		}
		defer write.Close()
		calls(k.name, read, write, k.count)
	}
	return e
}

// preparedStmt is a prepared statement: a *dbrouter.Stmt or a *sql.Stmt.
type preparedStmt interface {
	QueryRowContext(ctx context.Context, args ...any) *sql.Row
	Close() error
}

// TestPgBouncerTransactionPoolingDefaultExecMode runs the mixed load behind
// transaction pooling with pgx's default exec mode (cache_statement: named
// prepared statements, cached per client connection), which transaction
// pooling breaks. The application's own statements fail (counted and
// reported); the probes, which send no prepared statement, never do: no
// node is marked down over the whole window, and the router names the DSN
// setting that fixes the application's statements, once.
func TestPgBouncerTransactionPoolingDefaultExecMode(t *testing.T) {
	c := sharedCluster(t)
	ctx := testContext(t, 3*time.Minute)
	bc := startBouncers(t, c, pgcluster.BouncerOptions{PoolMode: pgcluster.PoolTransaction})
	var events eventLog
	db := bc.open(t, "", dbrouter.WithEventHook(events.add))
	table := uniqueName(t, "bounce")
	createBounceTable(t, ctx, db, table)
	t.Cleanup(func() { c.Primary().Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
	waitReplicas(t, ctx, c, "the table", "SELECT to_regclass($1) IS NOT NULL", table)

	l := startBounceLoad(t, bc, db, table, [numOpKinds]int{opRead: 4, opQueryWrite: 2, opExecWrite: 2, opTxWrite: 1, opReadTx: 1}, 30*time.Second)
	began := time.Now()
	var notUp []string
	samples := 0
	testwait.Until(t, defaultModeWindow+time.Minute, fmt.Sprintf("%v of load", defaultModeWindow), func() bool {
		samples++
		for _, n := range db.Status().Nodes {
			if n.State != dbrouter.StateUp {
				notUp = append(notUp, fmt.Sprintf("%s %s at +%v: %v", n.Name, n.State, time.Since(began).Round(time.Millisecond), n.LastError))
			}
		}
		return time.Since(began) >= defaultModeWindow
	})
	l.stop()
	s := tallyOps(l.snapshot())
	st := db.Status()
	t.Logf("REPORT: transaction pooling, pgx's default exec mode, %v of mixed load: %v", defaultModeWindow, s)
	for _, n := range st.Nodes {
		t.Logf("REPORT: %s: %s, probe latency %v, last probe error %v", n.Name, n.State, n.Latency, n.LastError)
		assert.Equal(t, dbrouter.StateUp, n.State, n.Name)
	}
	assert.Empty(t, notUp, "a node was not up in %d samples of Status", samples)
	assert.Zero(t, st.EventCounts[dbrouter.EventNodeDown], "events: %s", events.String())
	assert.Equal(t, "node0", st.Primary)
	var failed int
	for k := range numOpKinds {
		failed += s.failed[k]
	}
	assert.Positive(t, failed, "the application's statements met no clash: is the pool mode transaction?")
	for class := range s.errs {
		assert.Contains(t, []string{"42P05", "26000"}, class, "an application statement failed otherwise than on a prepared statement clash")
	}
	assert.Equal(t, uint64(1), st.EventCounts[dbrouter.EventStatementClash], "events: %s", events.String())
	clash := statusEvent(db, dbrouter.EventStatementClash)
	assert.Contains(t, clash.Detail, "default_query_exec_mode=simple_protocol")
	assert.Contains(t, []string{"42P05", "26000"}, sqlStateOf(clash.Err), "%v", clash.Err)
	t.Logf("REPORT: the router's statement clash event: %s: %s (%v)", clash.Node, clash.Detail, clash.Err)
}

// defaultModeWindow is how long TestPgBouncerTransactionPoolingDefaultExecMode
// runs its load.
const defaultModeWindow = 60 * time.Second

// execModeResult is what TestPgBouncerExecModes saw of one statement kind.
type execModeResult struct {
	ok, wrong, failed int
	codes             map[string]int
	first             error
}

func (r execModeResult) works() bool { return r.ok > 0 && r.wrong == 0 && r.failed == 0 }

func (r execModeResult) String() string {
	return fmt.Sprintf("ok=%d wrong=%d failed=%d %v", r.ok, r.wrong, r.failed, r.codes)
}

// TestPgBouncerExecModes records which of pgx's default_query_exec_mode
// values work behind transaction and session pooling, for plain Query and
// Exec through the router: eight goroutines run four different statements
// each, every answer checked (a query's sum, the row an insert stored). A
// mode works when nothing fails and no answer is another statement's; a
// mode that does not work must show it within a few rounds (a race between
// clients on two server connections per pool). The probes send no prepared
// statement, so no node is marked down in any of them.
func TestPgBouncerExecModes(t *testing.T) {
	c := sharedCluster(t)
	ctx := testContext(t, 3*time.Minute)
	type want struct{ query, exec bool }
	for _, pool := range []string{pgcluster.PoolTransaction, pgcluster.PoolSession} {
		for _, tc := range []struct {
			mode string
			want want // behind transaction pooling; behind session pooling every mode works
		}{
			{"cache_statement", want{false, false}},
			{"cache_describe", want{true, true}},
			{"describe_exec", want{false, false}},
			{"exec", want{true, true}},
			{"simple_protocol", want{true, true}},
		} {
			t.Run(pool+"/"+tc.mode, func(t *testing.T) {
				w := tc.want
				o := pgcluster.BouncerOptions{PoolMode: pool, PoolSize: 2}
				if pool == pgcluster.PoolSession {
					w = want{true, true}
					o.PoolSize = 0 // a server connection per client: PgBouncer's default 20 is enough
				}
				// Fresh bouncers: named statements outlive their clients on
				// the server connections and would meet the next mode's.
				bc := startBouncers(t, c, o)
				var events eventLog
				db := bc.open(t, tc.mode, dbrouter.WithEventHook(events.add))
				db.SetMaxOpenConns(8)
				table := uniqueName(t, "modes")
				createBounceTable(t, ctx, db, table)
				t.Cleanup(func() { c.Primary().Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
				var q, e execModeResult
				for round := range 10 {
					rq, re := execModeRound(ctx, bc, db, table)
					q, e = addModeResults(q, rq), addModeResults(e, re)
					if round >= 1 && (w.query || !q.works()) && (w.exec || !e.works()) {
						break // the working ones ran twice, the failing ones failed
					}
				}
				t.Logf("REPORT: exec mode %s behind %s pooling: Query %v; Exec %v", tc.mode, pool, q, e)
				assert.Equal(t, w.query, q.works(), "Query: %v (first error: %v)", q, q.first)
				assert.Equal(t, w.exec, e.works(), "Exec: %v (first error: %v)", e, e.first)
				assert.Zero(t, eventCount(db, dbrouter.EventNodeDown), "events: %s", events.String())
				for _, n := range db.Status().Nodes {
					assert.Equal(t, dbrouter.StateUp, n.State, "%s: %v", n.Name, n.LastError)
				}
			})
		}
	}
}

func addModeResults(a, b execModeResult) execModeResult {
	a.ok, a.wrong, a.failed = a.ok+b.ok, a.wrong+b.wrong, a.failed+b.failed
	if a.codes == nil {
		a.codes = map[string]int{}
	}
	for k, v := range b.codes {
		a.codes[k] += v
	}
	if a.first == nil {
		a.first = b.first
	}
	return a
}

// execModeRound runs 8 goroutines × 24 queries (SELECT $1::int + K, for
// four K) and 8 × 8 inserts (four statements, each storing its own kind)
// through db, and checks every answer.
func execModeRound(ctx context.Context, bc *bouncerCluster, db *dbrouter.DB, table string) (q, e execModeResult) {
	var mu sync.Mutex
	q.codes, e.codes = map[string]int{}, map[string]int{}
	record := func(r *execModeResult, err error, right bool) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			r.failed++
			r.codes[errClass(err)]++
			if r.first == nil {
				r.first = err
			}
		case !right:
			r.wrong++
		default:
			r.ok++
		}
	}
	var inserted sync.Map // v -> the kind its statement stores
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 24 {
				k := (g + i) % 4
				var sum, port int
				err := db.QueryRowContext(ctx, fmt.Sprintf("SELECT $1::int + %d, inet_server_port()", 1000*k), i).Scan(&sum, &port)
				record(&q, err, sum == i+1000*k)
				if i%3 == 0 {
					v := nextV()
					kind := fmt.Sprintf("mode%d", k)
					inserted.Store(v, kind)
					_, err := db.ExecContext(ctx, fmt.Sprintf("INSERT INTO %s (v, kind) VALUES ($1, '%s')", table, kind), v)
					record(&e, err, true)
				}
			}
		})
	}
	wg.Wait()
	// An insert answered by another client's statement stored another kind.
	rows, err := db.QueryContext(dbrouter.UsePrimary(ctx), "SELECT v, kind FROM "+table, pgxSimple)
	if err != nil {
		record(&e, err, false)
		return q, e
	}
	defer rows.Close()
	for rows.Next() {
		var v int64
		var kind string
		if err := rows.Scan(&v, &kind); err != nil {
			record(&e, err, false)
			return q, e
		}
		if want, ok := inserted.Load(v); ok && want != kind {
			mu.Lock()
			e.ok--
			e.wrong++
			mu.Unlock()
		}
	}
	return q, e
}

// probeUser is the role TestPgBouncerSaturatedPool and
// TestPgBouncerExhaustedPool probe as, through a pool of its own in each
// bouncer (WithProbeDSN).
const probeUser = "dbrouter_probe"

// createProbeUser creates probeUser on c (with pg_monitor, so it sees the
// replicas' WAL receivers) and waits until the replicas have it.
func createProbeUser(t *testing.T, ctx context.Context, c *pgcluster.Cluster) {
	t.Helper()
	require.NoError(t, c.Primary().Exec(ctx, "DO $$ BEGIN CREATE ROLE "+probeUser+" LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"))
	require.NoError(t, c.Primary().Exec(ctx, "GRANT pg_monitor TO "+probeUser))
	waitReplicas(t, ctx, c, "the probe role", "SELECT count(*) = 1 FROM pg_roles WHERE rolname = $1", probeUser)
}

// probeAs returns WithProbeDSN's function that probes as user.
func probeAs(user string) func(string) string {
	return func(dsn string) string {
		return strings.Replace(dsn, "postgres://postgres@", "postgres://"+user+"@", 1)
	}
}

// TestPgBouncerSaturatedPool runs 150 readers, each query holding a server
// connection for 1 s, through bouncers whose pools have 20 server
// connections (default_pool_size) each, for 10 s, with the default probe
// interval and timeout (1 s): each replica's bouncer queues about 55
// clients, for about 2.75 s each. The probes' own connection does not help
// there (it keeps the probes out of the application's database/sql pool, not
// out of the bouncer's): it is one more client of the same bouncer pool,
// queued with the others, and healthy nodes go down and up (reported; a
// client that comes in as a server connection is released may be served
// before the queue, so how often varies: TestPgBouncerExhaustedPool shows
// the same deterministically). A reserve pool is shared with the queued
// application clients (reported). A probe user with a pool of its own
// (WithProbeDSN) is never queued: no node goes down, no read fails.
func TestPgBouncerSaturatedPool(t *testing.T) {
	c := sharedCluster(t)
	ctx := testContext(t, 3*time.Minute)
	createProbeUser(t, ctx, c)
	const (
		readers  = 150
		poolSize = 20
		hold     = time.Second
		window   = 10 * time.Second
	)
	for _, tc := range []struct {
		name    string
		opts    pgcluster.BouncerOptions
		probeAs bool // probe as probeUser
		assert  bool // no node goes down, no read fails
	}{
		{name: "no remedy"},
		{name: "reserve_pool_size 5 after 0.5s", opts: pgcluster.BouncerOptions{ReservePoolSize: 5, ReservePoolTimeout: 500 * time.Millisecond}},
		{name: "probe user with its own pool", opts: pgcluster.BouncerOptions{Users: []pgcluster.BouncerUser{{Name: probeUser}}}, probeAs: true, assert: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			o.PoolMode, o.PoolSize, o.MaxClientConn = pgcluster.PoolTransaction, poolSize, 2*readers+50
			bc := startBouncers(t, c, o)
			var events eventLog
			opts := []dbrouter.Option{dbrouter.WithEventHook(events.add)}
			if tc.probeAs {
				opts = append(opts, dbrouter.WithProbeDSN(probeAs(probeUser)))
			}
			db := openDSNs(t, bc.dsns("postgres", "simple_protocol"), bc.names, opts...)
			for _, n := range db.Status().Nodes {
				require.Equal(t, dbrouter.StateUp, n.State, "%s before the load: %v", n.Name, n.LastError)
			}

			lctx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			var mu sync.Mutex
			served := map[string]int{}
			var failed int
			var firstErr error
			query := fmt.Sprintf("SELECT inet_server_port(), current_setting('cluster_name') FROM pg_sleep(%g)", hold.Seconds())
			for range readers {
				wg.Go(func() {
					for lctx.Err() == nil {
						cctx, cancel := context.WithTimeout(lctx, 30*time.Second)
						var port int
						var name string
						err := db.QueryRowContext(cctx, query).Scan(&port, &name)
						cancel()
						if lctx.Err() != nil {
							return
						}
						if err == nil {
							name, err = bc.server(port, name)
						}
						mu.Lock()
						if err != nil {
							failed++
							if firstErr == nil {
								firstErr = err
							}
						} else {
							served[name]++
						}
						mu.Unlock()
					}
				})
			}
			began := time.Now()
			notUp := map[string]int{}
			samples := 0
			var maxWait, maxProbe time.Duration
			testwait.Until(t, window+time.Minute, fmt.Sprintf("%v of %d readers", window, readers), func() bool {
				samples++
				for _, n := range db.Status().Nodes {
					maxProbe = max(maxProbe, n.Latency)
					if n.State != dbrouter.StateUp {
						notUp[n.Name]++
					}
				}
				if samples%20 == 0 {
					if p, ok, err := bc.bs[1].Pool(ctx, "postgres", "postgres"); err == nil && ok {
						maxWait = max(maxWait, p.MaxWait)
					}
				}
				return time.Since(began) >= window
			})
			stop()
			wg.Wait()

			st := db.Status()
			down := st.EventCounts[dbrouter.EventNodeDown]
			t.Logf("REPORT: saturated pool, %s: %d readers holding a server connection for %v each, pools of %d, %v: node down events %d, no primary %d; Status samples with a node not up %v of %d; reads served %v, failed %d (first: %v); longest queue wait seen on node1's bouncer %v; slowest probe %v",
				tc.name, readers, hold, poolSize, window, down, st.EventCounts[dbrouter.EventNoPrimary], notUp, samples, served, failed, firstErr, maxWait.Round(time.Millisecond), maxProbe.Round(time.Millisecond))
			if e := statusEvent(db, dbrouter.EventNodeDown); e.Kind != 0 {
				t.Logf("REPORT: saturated pool, %s: first node down: %s: %v", tc.name, e.Node, e.Err)
			}
			if tc.assert {
				assert.Zero(t, down, "events: %s", events.String())
				assert.Empty(t, notUp, "Status showed a node not up")
				assert.Zero(t, failed, "reads failed (first: %v)", firstErr)
				assert.Positive(t, served["node1"])
				assert.Positive(t, served["node2"])
				assert.Zero(t, served["node0"], "reads fell back to the primary")
			}
		})
	}
}

// TestPgBouncerExhaustedPool holds every server connection of node1's
// bouncer pool (2, default_pool_size) with open transactions, the README's
// "exhausted pool" one layer down: node1 is healthy, but nothing reaches it
// through its bouncer. Its probes, with the default interval and timeout
// (1 s), connect (to the bouncer, at once) and wait in the bouncer's queue:
// node1 goes down, and each probe error says it timed out "waiting for the
// answer", never "connecting" (pgx pings a connection idle for more than a
// second before database/sql hands it out again; that ping waited in the
// queue and failed the probe as connecting, until the probes kept their
// connection). With a reserve pool (reserve_pool_size 1, after 0.2 s) the
// probe, the only client waiting, gets a reserve connection within its
// timeout, and with a probe user whose pool is its own it is not queued at
// all: node1 stays up. With the bouncer stopped, probes cannot connect:
// "connecting", connection refused.
func TestPgBouncerExhaustedPool(t *testing.T) {
	c := sharedCluster(t)
	ctx := testContext(t, 3*time.Minute)
	createProbeUser(t, ctx, c)
	for _, tc := range []struct {
		name     string
		opts     pgcluster.BouncerOptions
		probeAs  bool
		survives bool // node1 stays up
	}{
		{name: "no remedy"},
		{name: "reserve_pool_size 1 after 0.2s", opts: pgcluster.BouncerOptions{ReservePoolSize: 1, ReservePoolTimeout: 200 * time.Millisecond}, survives: true},
		{name: "probe user with its own pool", opts: pgcluster.BouncerOptions{Users: []pgcluster.BouncerUser{{Name: probeUser}}}, probeAs: true, survives: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			o.PoolMode, o.PoolSize = pgcluster.PoolTransaction, 2
			bc := startBouncers(t, c, o)
			var events eventLog
			opts := []dbrouter.Option{dbrouter.WithEventHook(events.add)}
			if tc.probeAs {
				opts = append(opts, dbrouter.WithProbeDSN(probeAs(probeUser)))
			}
			db := openDSNs(t, bc.dsns("postgres", "simple_protocol"), bc.names, opts...)
			b1 := bc.bs[1]
			// errorsOf samples node1's last probe error until cond holds
			// (or, with keep, for keep), and returns every text it showed.
			errorsOf := func(what string, keep time.Duration, cond func(dbrouter.NodeStatus) bool) (seen []error, held bool) {
				began := time.Now()
				held = true
				testwait.Until(t, time.Minute, what, func() bool {
					st := nodeStatus(t, db, "node1")
					if st.LastError != nil && (len(seen) == 0 || seen[len(seen)-1].Error() != st.LastError.Error()) {
						seen = append(seen, st.LastError)
					}
					if keep > 0 {
						held = held && cond(st)
						return time.Since(began) >= keep
					}
					return cond(st)
				})
				return seen, held
			}

			h, err := sql.Open("pgx", withExecMode(b1.DSN(), "simple_protocol"))
			require.NoError(t, err)
			defer h.Close()
			var txs []*sql.Tx
			for range 2 {
				tx, err := h.BeginTx(ctx, nil)
				require.NoError(t, err)
				_, err = tx.ExecContext(ctx, "SELECT 1") // holds a server connection until it ends
				require.NoError(t, err)
				txs = append(txs, tx)
			}
			began := time.Now()
			if tc.survives {
				// Ten probe intervals: long enough for two failed probes in a row.
				seen, up := errorsOf("node1 through 10 s of its bouncer's pool held", 10*time.Second, func(st dbrouter.NodeStatus) bool { return st.State == dbrouter.StateUp })
				st := nodeStatus(t, db, "node1")
				t.Logf("REPORT: exhausted pool, %s: node1 up throughout %v: %v; last probe latency %v; probe errors %v", tc.name, time.Since(began).Round(time.Millisecond), up, st.Latency, seen)
				assert.True(t, up, "node1 went down: %v", seen)
				assert.Zero(t, eventCount(db, dbrouter.EventNodeDown), "events: %s", events.String())
			} else {
				seen, _ := errorsOf("node1 down with its bouncer's pool held", 0, func(st dbrouter.NodeStatus) bool { return st.State == dbrouter.StateDown })
				t.Logf("REPORT: exhausted pool, %s: node1 down after %v; probe errors: %v", tc.name, time.Since(began).Round(time.Millisecond), seen)
				require.NotEmpty(t, seen)
				for _, err := range seen {
					assert.Contains(t, err.Error(), "probe timed out after 1s")
					assert.Contains(t, err.Error(), "waiting for the answer", "the probe connected to the bouncer and waited in its queue")
					assert.NotContains(t, err.Error(), "connecting")
				}
				// Connecting to the bouncer itself is immediate.
				conn, err := sql.Open("pgx", b1.DSN())
				require.NoError(t, err)
				defer conn.Close()
				began = time.Now()
				cc, err := conn.Conn(ctx)
				require.NoError(t, err)
				assert.Less(t, time.Since(began), time.Second, "connecting to the bouncer was slow")
				cc.Close()
			}
			for _, tx := range txs {
				require.NoError(t, tx.Rollback())
			}
			testwait.Until(t, time.Minute, "node1 up with its pool free", func() bool { return nodeStatus(t, db, "node1").State == dbrouter.StateUp })
			if tc.survives {
				return
			}

			require.NoError(t, b1.Stop(ctx))
			seen, _ := errorsOf("node1 down with its bouncer stopped", 0, func(st dbrouter.NodeStatus) bool { return st.State == dbrouter.StateDown })
			t.Logf("REPORT: bouncer stopped: probe errors: %v", seen)
			last := nodeStatus(t, db, "node1").LastError
			assert.Contains(t, last.Error(), "connecting")
			assert.ErrorIs(t, last, syscall.ECONNREFUSED)
			require.NoError(t, b1.Start(ctx))
			testwait.Until(t, time.Minute, "node1 up with its bouncer started again", func() bool { return nodeStatus(t, db, "node1").State == dbrouter.StateUp })
		})
	}
}
