package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/pgcluster"
	"github.com/dbrouter/dbrouter/internal/testwait"
	"github.com/dbrouter/dbrouter/patroni"
)

// Failover through a DB opened only from patroni.New and
// dbrouter.OpenDiscovered, on a real etcd + Patroni cluster (leader + 2
// replicas, shared by these tests), under a mixed load: a switchover, a
// crash of the leader and its rejoin, a leader that hangs past the leader
// key's ttl, a member that joins, one that is removed (and whose server is
// started again by hand), and every REST API frozen.
//
// Every statement of the load reports, server-side, which server ran it
// (cluster_name, which the harness sets to the member's name, and
// inet_server_port(): both must agree), and every write inserts a row with
// an id of its own. Meanwhile GET /cluster is read every 100 ms, which
// gives the leader key's holder over time. The rules:
//
//   - A write acknowledged by a node that did not hold the leader key fails
//     the test. The key's holder is known only at the samples, so an ack
//     counts against its node X only when X provably held no key at any
//     instant from when the write was sent to when it was acknowledged:
//     the last sample answered before it was sent, the first asked after
//     it was acknowledged and every sample between them answered, and none
//     named X. (It assumes the key does not move twice within one 100 ms
//     gap; Patroni holds it for loop_wait at least.) A sample that got no
//     answer proves nothing. A write sent to a leader just before it hung
//     and acknowledged after it was thawed passes this rule (it was sent
//     while the node held the key), so the hang test also fails any write
//     of the hung leader acknowledged after the thaw: the key had expired
//     and another member led by then.
//   - Every acknowledged row is on the leader afterwards, stored by the
//     node that acknowledged it, except rows that a leader which crashed or
//     hung acknowledged before the fault and had not yet replicated
//     (replication is asynchronous): those are counted and reported. Such a
//     server sends nothing from the fault on, but the load may read an
//     answer it sent just before a little later, so any answer of a killed
//     leader before its restart, of a hung one before its thaw, counts as
//     sent before the fault.
//   - The first write the DB gets acknowledged by the new leader is timed
//     from the moment that server first accepted writes, as a tight loop
//     asking it directly (every 2 ms, on its own DSN) sees it.
//
// Figures are logged on lines starting with "REPORT:".

// patroniApp is the application_name of the DB's connections, by which a
// server tells them from the harness's own.
const patroniApp = "dbrouter_patroni_failover"

// patroniDiscovery is the DB's WithDiscoveryInterval.
const patroniDiscovery = 500 * time.Millisecond

// patroniCallTimeout bounds each statement of the load.
const patroniCallTimeout = 5 * time.Second

var sharedPatroni struct {
	logf atomic.Pointer[func(string, ...any)] // the running test's t.Logf, or nil

	mu sync.Mutex // protects pc
	pc *pgcluster.PatroniCluster
}

// patroniLogf sends the shared cluster's progress lines to the running
// test, or to the log between tests.
func patroniLogf(format string, args ...any) {
	if f := sharedPatroni.logf.Load(); f != nil {
		(*f)(format, args...)
		return
	}
	log.Printf(format, args...)
}

// patroniCluster returns the Patroni cluster (etcd + 3 members, Patroni 4
// where installed) that these tests share, once it is healthy: a leader and
// every other member streaming from it. Each test leaves it healthy, with 3
// members, as it found it (TestPatroniMemberJoins adds a 4th, which
// TestPatroniMemberRemoved removes). It is started at the first call, and
// started again when it is not healthy within a minute (a test that failed
// left it broken), so that one failure does not fail the tests after it.
func patroniCluster(t *testing.T) *pgcluster.PatroniCluster {
	t.Helper()
	skipShort(t)
	logf := t.Logf
	sharedPatroni.logf.Store(&logf)
	t.Cleanup(func() { sharedPatroni.logf.Store(nil) })
	sharedPatroni.mu.Lock()
	defer sharedPatroni.mu.Unlock()
	if pc := sharedPatroni.pc; pc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := pc.WaitHealthy(ctx)
		cancel()
		if err == nil {
			return pc
		}
		t.Logf("the shared Patroni cluster is not healthy, starting another: %v", err)
		if err := pc.Close(); err != nil {
			t.Logf("closing it: %v", err)
		}
		sharedPatroni.pc = nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pc, err := pgcluster.StartPatroni(ctx, pgcluster.PatroniOptions{Logf: patroniLogf})
	if err != nil {
		t.Fatalf("pgcluster: start patroni: %v", err)
	}
	sharedPatroni.pc = pc
	return pc
}

// closeSharedPatroni stops the shared Patroni cluster, if it was started.
func closeSharedPatroni() {
	sharedPatroni.mu.Lock()
	defer sharedPatroni.mu.Unlock()
	if sharedPatroni.pc != nil {
		if err := sharedPatroni.pc.Close(); err != nil {
			log.Printf("closing the shared Patroni cluster: %v", err)
		}
	}
}

// ignoreHarness ignores goroutines of the harness that come and go during
// a test and end with the cluster, not with the DB: those that reap the
// daemons it starts (a member restarted or added), and database/sql's
// cleaner of its own pools, which starts again whenever a connection goes
// idle (a leaked pool of the DB still shows by its connectionOpener).
var ignoreHarness = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/dbrouter/dbrouter/internal/pgcluster.spawnDaemon.func1"),
	goleak.IgnoreAnyFunction("database/sql.(*DB).connectionCleaner"),
}

// openPatroniDB opens a DB from patroni.New (every member's REST API) and
// dbrouter.OpenDiscovered alone, with WithDiscoveryInterval(patroniDiscovery),
// its connections named patroniApp. It is closed when the test ends, and
// then no goroutine it started may be left (but those leaks ignores).
func openPatroniDB(t *testing.T, pc *pgcluster.PatroniCluster, leaks ...goleak.Option) (*dbrouter.DB, *eventLog) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	src, err := patroni.New(patroniSourceDSN+"&application_name="+patroniApp, pc.RESTURLs()...)
	require.NoError(t, err)
	events := &eventLog{}
	db, err := dbrouter.OpenDiscovered("pgx", src, dbrouter.WithDiscoveryInterval(patroniDiscovery), dbrouter.WithEventHook(events.add))
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, db.Close())
		src.CloseIdleConnections()
		goleak.VerifyNone(t, slices.Concat(leakOptions(), []goleak.Option{ignore}, ignoreHarness, leaks)...)
	})
	return db, events
}

// createPatroniTable creates, through db, a table whose rows carry the
// name of the server that inserted them.
func createPatroniTable(t *testing.T, ctx context.Context, db *dbrouter.DB, prefix string) string {
	t.Helper()
	tbl := uniqueName(t, prefix)
	_, err := db.ExecContext(ctx, "CREATE TABLE "+tbl+
		" (id bigint PRIMARY KEY, node text NOT NULL DEFAULT current_setting('cluster_name'), at timestamptz NOT NULL DEFAULT clock_timestamp())")
	require.NoError(t, err)
	return tbl
}

// stmt is one statement of a patroniLoad.
type stmt struct {
	id         int64 // a write's row id; 0 for a read
	sent, done time.Time
	node       string // cluster_name of the server that answered
	port       int    // its inet_server_port()
	err        error
}

// patroniLoad runs readers and writers through a DB. Each writer inserts
// rows with ids of their own and reads back, with RETURNING, the server
// that stored them.
type patroniLoad struct {
	db     *dbrouter.DB
	insert string
	ids    atomic.Int64
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex // protects following fields
	reads  []stmt
	writes []stmt
}

const patroniRead = "SELECT current_setting('cluster_name'), inet_server_port()"

func startPatroniLoad(t *testing.T, db *dbrouter.DB, tbl string, readers, writers int) *patroniLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &patroniLoad{db: db, ctx: ctx, cancel: cancel,
		insert: "INSERT INTO " + tbl + " (id) VALUES ($1) RETURNING node, inet_server_port()"}
	run := func(write bool) {
		defer l.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond) // a steady load, not a busy loop
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if write {
				l.write(l.insert, patroniCallTimeout)
			} else {
				l.read()
			}
		}
	}
	for range readers {
		l.wg.Add(1)
		go run(false)
	}
	for range writers {
		l.wg.Add(1)
		go run(true)
	}
	t.Cleanup(l.stop)
	return l
}

// write inserts a row with a new id through query (which takes the id as
// $1 and returns the node and port), within timeout, and records it.
func (l *patroniLoad) write(query string, timeout time.Duration) stmt {
	cctx, cancel := context.WithTimeout(l.ctx, timeout)
	defer cancel()
	s := stmt{id: l.ids.Add(1), sent: time.Now()}
	s.err = l.db.QueryRowContext(cctx, query, s.id).Scan(&s.node, &s.port)
	s.done = time.Now()
	if s.err != nil && l.ctx.Err() != nil {
		return s // stopped mid-call: not a result
	}
	l.mu.Lock()
	l.writes = append(l.writes, s)
	l.mu.Unlock()
	return s
}

// goWrite runs write in a goroutine of the load, and sends its result.
func (l *patroniLoad) goWrite(query string, timeout time.Duration) <-chan stmt {
	done := make(chan stmt, 1)
	l.wg.Go(func() { done <- l.write(query, timeout) })
	return done
}

func (l *patroniLoad) read() {
	cctx, cancel := context.WithTimeout(l.ctx, patroniCallTimeout)
	defer cancel()
	s := stmt{sent: time.Now()}
	s.err = l.db.QueryRowContext(cctx, patroniRead).Scan(&s.node, &s.port)
	s.done = time.Now()
	if s.err != nil && l.ctx.Err() != nil {
		return
	}
	l.mu.Lock()
	l.reads = append(l.reads, s)
	l.mu.Unlock()
}

func (l *patroniLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *patroniLoad) snapshot() (reads, writes []stmt) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reads), slices.Clone(l.writes)
}

// served counts the statements that succeeded on node and were sent from
// after on.
func served(ops []stmt, node string, after time.Time) int {
	n := 0
	for _, o := range ops {
		if o.err == nil && o.node == node && !o.sent.Before(after) {
			n++
		}
	}
	return n
}

// waitServed waits until n more reads (or writes) than now succeeded on node.
func (l *patroniLoad) waitServed(t *testing.T, write bool, node string, n int, timeout time.Duration) {
	t.Helper()
	from := time.Now()
	what := "reads"
	if write {
		what = "writes"
	}
	testwait.Until(t, timeout, fmt.Sprintf("%d %s on %s", n, what, node), func() bool {
		reads, writes := l.snapshot()
		if write {
			return served(writes, node, from) >= n
		}
		return served(reads, node, from) >= n
	})
}

// firstDone returns the first statement that succeeded on node, among those
// that ended after after.
func firstDone(ops []stmt, node string, after time.Time) (stmt, bool) {
	var first stmt
	for _, o := range ops {
		if o.err == nil && o.node == node && o.done.After(after) && (first.done.IsZero() || o.done.Before(first.done)) {
			first = o
		}
	}
	return first, !first.done.IsZero()
}

// failures returns the statements that failed among those sent in [from, to).
func failures(ops []stmt, from, to time.Time) []stmt {
	var out []stmt
	for _, o := range ops {
		if o.err != nil && !o.sent.Before(from) && o.sent.Before(to) {
			out = append(out, o)
		}
	}
	return out
}

// errorKinds sums up errors by kind, for a report.
func errorKinds(ops []stmt) string {
	kinds := map[string]int{}
	for _, o := range ops {
		if o.err == nil {
			continue
		}
		var pe *pgconn.PgError
		switch {
		case errors.Is(o.err, dbrouter.ErrPrimaryLost):
			kinds["ErrPrimaryLost"]++
		case errors.Is(o.err, dbrouter.ErrNoPrimary):
			kinds["ErrNoPrimary"]++
		case errors.Is(o.err, context.DeadlineExceeded):
			kinds["deadline"]++
		case errors.As(o.err, &pe):
			kinds["SQLSTATE "+pe.Code]++
		case connectionFailed(o.err):
			kinds["connection"]++
		default:
			kinds["other"]++
		}
	}
	var parts []string
	for k, n := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// checkIdentity checks that every statement that succeeded names, by its
// cluster_name, the member whose port it reports.
func checkIdentity(t *testing.T, pc *pgcluster.PatroniCluster, ops []stmt) {
	t.Helper()
	bad := 0
	for _, o := range ops {
		if o.err != nil {
			continue
		}
		if m := pc.Member(o.node); m == nil || m.Port() != o.port {
			if bad++; bad <= 5 {
				t.Errorf("a statement answered by %q on port %d: not that member's port", o.node, o.port)
			}
		}
	}
}

// keySample is GET /cluster's leader at one moment: the answer came
// between asked and answered.
type keySample struct {
	asked, answered time.Time
	leader          string // the member holding the leader key; "" for none
	ok              bool   // false: no member answered, the holder is unknown
}

// keyWatch reads GET /cluster every 100 ms and records the leader key's
// holder.
type keyWatch struct {
	background

	mu      sync.Mutex // protects samples
	samples []keySample
}

func watchLeaderKey(t *testing.T, pc *pgcluster.PatroniCluster) *keyWatch {
	w := &keyWatch{}
	w.start(t)
	w.every(100*time.Millisecond, func(ctx context.Context) bool {
		s := keySample{asked: time.Now()}
		st, err := pc.ClusterState(ctx)
		s.answered = time.Now()
		if err == nil {
			s.ok = true
			if l, ok := st.Leader(); ok && l.Role == pgcluster.PatroniRoleLeader {
				s.leader = l.Name
			}
		}
		if ctx.Err() != nil {
			return true
		}
		w.mu.Lock()
		w.samples = append(w.samples, s)
		w.mu.Unlock()
		return false
	}, nil)
	return w
}

func (w *keyWatch) snapshot() []keySample {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.samples)
}

// firstHeld returns the first sample asked after after that names leader.
func firstHeld(samples []keySample, leader string, after time.Time) (keySample, bool) {
	for _, s := range samples {
		if s.ok && s.leader == leader && s.asked.After(after) {
			return s, true
		}
	}
	return keySample{}, false
}

// keyless returns the writes acknowledged by a node that provably held no
// leader key from when they were sent to when they were acknowledged (see
// the rule at the top of this file).
func keyless(writes []stmt, samples []keySample) []stmt {
	var out []stmt
	for _, w := range writes {
		if w.err != nil {
			continue
		}
		// i: the last sample answered before w was sent; j: the first asked
		// after it was acknowledged.
		i := sort.Search(len(samples), func(k int) bool { return samples[k].answered.After(w.sent) }) - 1
		j := sort.Search(len(samples), func(k int) bool { return !samples[k].asked.Before(w.done) })
		if i < 0 || j >= len(samples) {
			continue
		}
		if !slices.ContainsFunc(samples[i:j+1], func(s keySample) bool { return !s.ok || s.leader == w.node }) {
			out = append(out, w)
		}
	}
	return out
}

// TestPatroniAckRule checks keyless, the rule that judges writes against
// the sampled leader key, on a made-up timeline: it flags the writes
// acknowledged by a node that provably held no key while they ran, and no
// other.
func TestPatroniAckRule(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	sample := func(ms int, leader string) keySample {
		return keySample{asked: at(ms), answered: at(ms + 5), leader: leader, ok: true}
	}
	samples := []keySample{sample(0, "m0"), sample(100, "m0"), sample(200, ""), sample(300, "m1"), sample(400, "m1"),
		{asked: at(500), answered: at(505)}, sample(600, "m1"), sample(700, "m1")}
	for _, c := range []struct {
		name string
		w    stmt
		bad  bool
	}{
		{"by the holder", stmt{sent: at(120), done: at(130), node: "m0"}, false},
		{"by a node that never held it", stmt{sent: at(120), done: at(130), node: "m2"}, true},
		{"by the old holder while the key moved", stmt{sent: at(150), done: at(250), node: "m0"}, false},
		{"by the new holder while the key moved", stmt{sent: at(150), done: at(250), node: "m1"}, false},
		{"by the old holder after the key moved", stmt{sent: at(310), done: at(320), node: "m0"}, true},
		{"by the old holder while a sample was read", stmt{sent: at(302), done: at(303), node: "m0"}, true},
		{"before the first sample", stmt{sent: at(-10), done: at(1), node: "m2"}, false},
		{"after the last sample", stmt{sent: at(701), done: at(800), node: "m0"}, false},
		{"across a sample without an answer", stmt{sent: at(450), done: at(560), node: "m0"}, false},
		{"by the old holder after that", stmt{sent: at(610), done: at(620), node: "m0"}, true},
		{"that failed", stmt{sent: at(310), done: at(320), node: "m0", err: errors.New("failed")}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.bad, len(keyless([]stmt{c.w}, samples)) == 1)
		})
	}
}

// acceptWatch asks members directly, on their own DSNs, every 2 ms, whether
// their servers accept writes (are out of recovery), and records when each
// first did.
type acceptWatch struct {
	background

	mu sync.Mutex           // protects at
	at map[string]time.Time // when the first answer saying so came back
}

func watchAccepts(t *testing.T, pc *pgcluster.PatroniCluster, names ...string) *acceptWatch {
	t.Helper()
	w := &acceptWatch{at: map[string]time.Time{}}
	w.start(t)
	for _, name := range names {
		m := pc.Member(name)
		require.NotNil(t, m, name)
		h, err := m.Open()
		require.NoError(t, err)
		h.SetMaxOpenConns(1)
		w.every(2*time.Millisecond, func(ctx context.Context) bool {
			qctx, qcancel := context.WithTimeout(ctx, time.Second)
			var rec bool
			err := h.QueryRowContext(qctx, "SELECT pg_is_in_recovery()").Scan(&rec)
			qcancel()
			if err == nil && !rec {
				w.mu.Lock()
				w.at[name] = time.Now()
				w.mu.Unlock()
				return true
			}
			return false
		}, func() { h.Close() })
	}
	return w
}

// wait returns when name's server first accepted writes.
func (w *acceptWatch) wait(t *testing.T, name string) time.Time {
	t.Helper()
	var at time.Time
	testwait.Until(t, time.Minute, name+" accepting writes", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		var ok bool
		at, ok = w.at[name]
		return ok
	})
	return at
}

// otherMembers returns the names of the members other than name.
func otherMembers(pc *pgcluster.PatroniCluster, name string) []string {
	var out []string
	for _, m := range pc.Members() {
		if m.Name() != name {
			out = append(out, m.Name())
		}
	}
	return out
}

// storedRows returns every row of tbl as the leader has it: id -> node.
func storedRows(t *testing.T, ctx context.Context, pc *pgcluster.PatroniCluster, tbl string) map[int64]string {
	t.Helper()
	leader, err := pc.Leader(ctx)
	require.NoError(t, err)
	h, err := leader.Open()
	require.NoError(t, err)
	defer h.Close()
	rows, err := h.QueryContext(ctx, "SELECT id, node FROM "+tbl)
	require.NoError(t, err)
	defer rows.Close()
	stored := map[int64]string{}
	for rows.Next() {
		var id int64
		var node string
		require.NoError(t, rows.Scan(&id, &node))
		stored[id] = node
	}
	require.NoError(t, rows.Err())
	return stored
}

// episode is one change of leader under load, and what is checked of it.
type episode struct {
	what     string    // "switchover", "crash", "hang"
	old, new string    // the leaders before and after
	fault    time.Time // when the switchover was asked for, the leader killed or hung
	accepted time.Time // when the new leader first accepted writes
	// Rows the old leader acknowledged before lostUntil may be missing
	// afterwards, lost to asynchronous replication: the server, killed or
	// hung, sent nothing from the fault on, so their answers left it before
	// (the load may read them a little later). Zero: none may be missing.
	lostUntil time.Time
}

// end stops the episode's load and watchers, checks what they saw (see
// check) and returns the load's writes.
func (e episode) end(t *testing.T, ctx context.Context, pc *pgcluster.PatroniCluster, tbl string, l *patroniLoad, keys *keyWatch, acc *acceptWatch, events *eventLog) []stmt {
	t.Helper()
	l.stop()
	keys.stop()
	acc.stop()
	reads, writes := l.snapshot()
	e.check(t, ctx, pc, tbl, reads, writes, keys.snapshot(), events)
	return writes
}

// check checks the writes and reads of an episode against the leader key
// timeline and the rows stored afterwards, and reports the figures: the
// delay from the new leader accepting writes to the DB's first write
// acknowledged by it, the writes that failed meanwhile, the rows lost.
func (e episode) check(t *testing.T, ctx context.Context, pc *pgcluster.PatroniCluster, tbl string, reads, writes []stmt, samples []keySample, events *eventLog) {
	t.Helper()
	checkIdentity(t, pc, reads)
	checkIdentity(t, pc, writes)

	require.Greater(t, len(samples), 10, "the leader key was sampled")
	for i, w := range keyless(writes, samples) {
		if i < 5 {
			t.Errorf("%s: write %d acknowledged by %s, which held no leader key from %s to %s",
				e.what, w.id, w.node, w.sent.Format("15:04:05.000"), w.done.Format("15:04:05.000"))
		}
	}

	first, ok := firstDone(writes, e.new, e.fault)
	require.True(t, ok, "no write acknowledged by the new leader %s", e.new)
	delay := first.done.Sub(e.accepted)
	assert.Less(t, delay, 5*time.Second, "the DB's first write on the new leader came long after it accepted writes")

	stored := storedRows(t, ctx, pc, tbl)
	acked, lost, missing := 0, 0, 0
	for _, w := range writes {
		if w.err != nil {
			continue
		}
		acked++
		node, ok := stored[w.id]
		switch {
		case ok:
			assert.Equal(t, w.node, node, "row %d was acknowledged by %s but stored by %s", w.id, w.node, node)
		case w.node == e.old && w.done.Before(e.lostUntil):
			lost++ // acknowledged before the fault, not yet replicated
		default:
			if missing++; missing <= 5 {
				t.Errorf("%s: row %d, acknowledged by %s at %s (sent %s), is missing afterwards",
					e.what, w.id, w.node, w.done.Format("15:04:05.000"), w.sent.Format("15:04:05.000"))
			}
		}
	}
	assert.Zero(t, missing, "%s: acknowledged rows missing afterwards", e.what)

	// When the DB made the new leader its primary (the source named it and
	// a probe saw it out of recovery).
	switched := "never"
	events.mu.Lock()
	for _, ev := range events.events {
		if ev.Kind == dbrouter.EventPrimaryChanged && ev.Node == e.new && ev.Time.After(e.fault) {
			switched = fmt.Sprintf("%v", ev.Time.Sub(e.accepted).Round(time.Millisecond))
			break
		}
	}
	events.mu.Unlock()

	during := failures(writes, e.fault, first.done)
	readFails := failures(reads, time.Time{}, time.Now())
	// Reads go on from the replicas while there is no primary: none fails.
	assert.Empty(t, readFails, "%s: reads failed: %s", e.what, errorKinds(readFails))
	t.Logf("REPORT: patroni %s %s %s -> %s: dbrouter's first write acknowledged by %s %v after it accepted writes (target 200ms; the DB's primary changed to it after %s); "+
		"writes sent meanwhile that failed: %d (%s); acknowledged writes %d, of which lost (asynchronous replication, acknowledged by %s before the fault) %d; "+
		"reads %d, failed %d (%s)",
		pc.Version(), e.what, e.old, e.new, e.new, delay.Round(time.Millisecond), switched, len(during), errorKinds(during),
		acked, e.old, lost, len(reads), len(readFails), errorKinds(readFails))
}

// checkWriteErrors checks that every write failed for a reason a failover
// explains: no primary known (ErrNoPrimary), the connection or server
// failed, the node stopped being the primary (ErrPrimaryLost), a server
// refusing it as read-only on its way to being a replica, or (allowDeadline)
// a call that ran out of time on a hung server.
func checkWriteErrors(t *testing.T, writes []stmt, allowDeadline bool) {
	t.Helper()
	n := 0
	for _, w := range writes {
		if w.err == nil || errors.Is(w.err, dbrouter.ErrNoPrimary) || errors.Is(w.err, dbrouter.ErrPrimaryLost) ||
			connectionFailed(w.err) || sqlStateOf(w.err) == "25006" ||
			allowDeadline && errors.Is(w.err, context.DeadlineExceeded) {
			continue
		}
		if n++; n <= 5 {
			t.Errorf("a write failed unexpectedly: %v", w.err)
		}
	}
}

// faultRun is where a Patroni fault test starts: a DB over the shared
// cluster (see openPatroniDB), the leader before the fault, a table of
// createPatroniTable, and a mixed load (4 readers, 3 writers) whose writes
// the leader has served.
type faultRun struct {
	ctx    context.Context
	db     *dbrouter.DB
	events *eventLog
	leader *pgcluster.PatroniMember
	tbl    string
	l      *patroniLoad
}

// startFaultRun starts a faultRun on pc whose ctx ends after timeout; the
// table's name begins with prefix.
func startFaultRun(t *testing.T, pc *pgcluster.PatroniCluster, timeout time.Duration, prefix string) faultRun {
	t.Helper()
	r := faultRun{ctx: testContext(t, timeout)}
	r.db, r.events = openPatroniDB(t, pc)
	var err error
	r.leader, err = pc.Leader(r.ctx)
	require.NoError(t, err)
	r.tbl = createPatroniTable(t, r.ctx, r.db, prefix)
	return r
}

// load starts r's mixed load, once the caller set up what must watch it
// from its first statement, and waits until the leader served it.
func (r *faultRun) load(t *testing.T) {
	t.Helper()
	r.l = startPatroniLoad(t, r.db, r.tbl, 4, 3)
	r.l.waitServed(t, true, r.leader.Name(), 20, time.Minute)
}

// TestPatroniSwitchoverUnderLoad: a switchover (POST /switchover) under a
// mixed load. No read fails, no write is acknowledged by a node without the
// leader key, writes reach the new leader right after it accepts them,
// every acknowledged row is there afterwards, and the old leader serves
// reads again once it rejoined.
func TestPatroniSwitchoverUnderLoad(t *testing.T) {
	pc := patroniCluster(t)
	r := startFaultRun(t, pc, 2*time.Minute, "pswitch")
	ctx, db, events, old, tbl := r.ctx, r.db, r.events, r.leader, r.tbl
	keys := watchLeaderKey(t, pc)
	r.load(t)
	l := r.l
	to := otherMembers(pc, old.Name())[0]
	acc := watchAccepts(t, pc, to)

	asked := time.Now()
	got, err := pc.Switchover(ctx, to)
	returned := time.Now()
	require.NoError(t, err)
	require.Equal(t, to, got.Name())
	accepted := acc.wait(t, to)
	l.waitServed(t, true, to, 20, time.Minute)
	require.NoError(t, pc.WaitHealthy(ctx))
	healthy := time.Now()
	l.waitServed(t, false, old.Name(), 20, time.Minute) // the old leader, now a replica, serves reads again
	back := time.Now()
	e := episode{what: "switchover", old: old.Name(), new: to, fault: asked, accepted: accepted}
	writes := e.end(t, ctx, pc, tbl, l, keys, acc, events)
	checkWriteErrors(t, writes, false)
	key, ok := firstHeld(keys.snapshot(), to, asked)
	require.True(t, ok, "no sample shows %s holding the leader key", to)
	t.Logf("REPORT: patroni %s switchover %s -> %s: Patroni: request -> leader key seen on %s after %v -> %s accepting writes after %v (Switchover returned after %v, cluster healthy after %v); dbrouter: %s serving reads again %v after the request",
		pc.Version(), old.Name(), to, to, key.answered.Sub(asked).Round(time.Millisecond), to, accepted.Sub(asked).Round(time.Millisecond),
		returned.Sub(asked).Round(time.Millisecond), healthy.Sub(asked).Round(time.Millisecond), old.Name(), back.Sub(asked).Round(time.Millisecond))
	assert.Equal(t, to, db.Status().Discovery.Leader)
	assert.Equal(t, to, db.Status().Primary)
}

// TestPatroniLeaderCrash: the leader is killed (kill -9 of its Patroni and
// postmaster) under a mixed load, Patroni promotes a replica once the key
// expires, and the old leader is restarted and rejoins (pg_rewind). No
// write is acknowledged by a node without the key, writes reach the new
// leader right after it accepts them, and every acknowledged row is there
// afterwards but those the crashed leader had not replicated.
func TestPatroniLeaderCrash(t *testing.T) {
	pc := patroniCluster(t)
	r := startFaultRun(t, pc, 3*time.Minute, "pcrash")
	ctx, db, events, old, tbl := r.ctx, r.db, r.events, r.leader, r.tbl
	keys := watchLeaderKey(t, pc)
	r.load(t)
	l := r.l
	acc := watchAccepts(t, pc, otherMembers(pc, old.Name())...)

	killAt := time.Now()
	killed, err := pc.KillLeader(ctx)
	killedAt := time.Now()
	require.NoError(t, err)
	require.Equal(t, old.Name(), killed.Name())
	nl, err := pc.WaitLeader(ctx, old.Name())
	require.NoError(t, err)
	accepted := acc.wait(t, nl.Name())
	l.waitServed(t, true, nl.Name(), 20, time.Minute)
	restartAt := time.Now()
	require.NoError(t, pc.Restart(ctx, old.Name()))
	rejoined := time.Now()
	require.NoError(t, pc.WaitHealthy(ctx))
	l.waitServed(t, false, old.Name(), 20, time.Minute) // back as a replica, it serves reads again
	back := time.Now()
	e := episode{what: "crash", old: old.Name(), new: nl.Name(), fault: killAt, accepted: accepted, lostUntil: restartAt}
	writes := e.end(t, ctx, pc, tbl, l, keys, acc, events)
	checkWriteErrors(t, writes, false)
	for _, w := range writes {
		if w.err == nil && w.node == old.Name() {
			assert.False(t, w.sent.After(killedAt), "write %d, sent after the kill, acknowledged by the killed leader", w.id)
		}
	}
	key, ok := firstHeld(keys.snapshot(), nl.Name(), killAt)
	require.True(t, ok, "no sample shows %s holding the leader key", nl.Name())
	t.Logf("REPORT: patroni %s crash of %s (ttl %v): Patroni: kill -> leader key seen on %s after %v -> %s accepting writes after %v; restart -> %s streaming again after %v; dbrouter: %s serving reads again %v after the restart",
		pc.Version(), old.Name(), pc.TTL(), nl.Name(), key.answered.Sub(killAt).Round(time.Millisecond), nl.Name(), accepted.Sub(killAt).Round(time.Millisecond),
		old.Name(), rejoined.Sub(restartAt).Round(time.Millisecond), old.Name(), back.Sub(restartAt).Round(time.Millisecond))
	assert.Equal(t, nl.Name(), db.Status().Discovery.Leader)
	assert.Equal(t, nl.Name(), db.Status().Primary)
}

// TestPatroniLeaderHang: the leader hangs (SIGSTOP of its Patroni and every
// process of its server) longer than the key's ttl under a mixed load,
// with a write in flight on it whose deadline outlasts the hang. Patroni
// promotes a replica; thawed, the old leader is demoted and rejoins. No
// write is acknowledged by a node without the key (the one in flight
// included: it must not be reported done by a server that lost the key
// while it hung), writes reach the new leader right after it accepts them,
// and every acknowledged row is there afterwards but those the hung leader
// had not replicated before it hung.
func TestPatroniLeaderHang(t *testing.T) {
	pc := patroniCluster(t)
	if !pc.HungLeaderFixed() {
		t.Fatalf("Patroni %s gives the leader key back to a leader that hung past ttl (etcd3; fixed by patroni PR 2689 in 3.0.3): install Patroni 4 with .ci/patroni-setup.sh", pc.Version())
	}
	r := startFaultRun(t, pc, 3*time.Minute, "phang")
	ctx, db, events, old, tbl := r.ctx, r.db, r.events, r.leader, r.tbl
	keys := watchLeaderKey(t, pc)
	r.load(t)
	l := r.l
	acc := watchAccepts(t, pc, otherMembers(pc, old.Name())...)

	// A write in flight on the leader when it hangs, with a deadline
	// longer than the hang: it runs on when the leader is thawed.
	// (pg_sleep ends at once on a server thawed after its end time.)
	const slow = "INSERT INTO %s (id) SELECT $1 FROM pg_sleep(2) RETURNING node, inet_server_port()"
	patient := l.goWrite(fmt.Sprintf(slow, tbl), 3*time.Minute)
	testwait.For(t, 30*time.Second, "the slow write running on "+old.Name(), func() (bool, error) {
		var n int
		err := old.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '"+patroniApp+
			"' AND state = 'active' AND query LIKE 'INSERT INTO "+tbl+" (id) SELECT%'", &n)
		return n > 0, err
	})

	hangAt := time.Now()
	require.NoError(t, pc.Hang(ctx, old.Name()))
	t.Cleanup(func() { pc.Thaw(context.Background(), old.Name()) })
	nl, err := pc.WaitLeader(ctx, old.Name())
	require.NoError(t, err)
	accepted := acc.wait(t, nl.Name())
	l.waitServed(t, true, nl.Name(), 20, time.Minute)
	thawAt := time.Now()
	require.NoError(t, pc.Thaw(ctx, old.Name()))
	require.Greater(t, thawAt.Sub(hangAt), pc.TTL(), "the leader hung longer than ttl")
	var demoted time.Time
	testwait.Until(t, time.Minute, old.Name()+" demoted", func() bool {
		var rec bool
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if old.QueryRow(qctx, "SELECT pg_is_in_recovery()", &rec) == nil && rec {
			demoted = time.Now()
			return true
		}
		return false
	})
	require.NoError(t, pc.WaitHealthy(ctx))
	rejoined := time.Now()
	var slowWrite stmt
	select {
	case slowWrite = <-patient:
	case <-ctx.Done():
		t.Fatal("the slow write never returned")
	}
	l.waitServed(t, false, old.Name(), 20, time.Minute) // back as a replica, it serves reads again
	back := time.Now()
	e := episode{what: "hang", old: old.Name(), new: nl.Name(), fault: hangAt, accepted: accepted, lostUntil: thawAt}
	writes := e.end(t, ctx, pc, tbl, l, keys, acc, events)
	checkWriteErrors(t, writes, true)
	for _, w := range writes {
		if w.err == nil && w.node == old.Name() {
			assert.False(t, w.done.After(thawAt), "write %d acknowledged by %s after it was thawed, long after it lost the leader key", w.id, old.Name())
		}
	}
	t.Logf("the write in flight through the hang returned after %v: %v", slowWrite.done.Sub(slowWrite.sent).Round(time.Millisecond), slowWrite.err)
	require.True(t, slowWrite.done.After(thawAt), "the slow write ended before the hang")
	assert.Error(t, slowWrite.err, "the write %s ran on after it was thawed was reported done", old.Name())
	assert.True(t, errors.Is(slowWrite.err, dbrouter.ErrPrimaryLost) || connectionFailed(slowWrite.err),
		"the write in flight through the hang failed with %v", slowWrite.err)
	key, ok := firstHeld(keys.snapshot(), nl.Name(), hangAt)
	require.True(t, ok, "no sample shows %s holding the leader key", nl.Name())
	t.Logf("REPORT: patroni %s hang of %s (ttl %v, hung %v): Patroni: hang -> leader key seen on %s after %v -> %s accepting writes after %v; thaw -> %s demoted after %v, streaming again after %v; dbrouter: %s serving reads again %v after the thaw",
		pc.Version(), old.Name(), pc.TTL(), thawAt.Sub(hangAt).Round(time.Millisecond), nl.Name(), key.answered.Sub(hangAt).Round(time.Millisecond),
		nl.Name(), accepted.Sub(hangAt).Round(time.Millisecond), old.Name(), demoted.Sub(thawAt).Round(time.Millisecond),
		rejoined.Sub(thawAt).Round(time.Millisecond), old.Name(), back.Sub(thawAt).Round(time.Millisecond))
	assert.Equal(t, nl.Name(), db.Status().Discovery.Leader)
	assert.Equal(t, nl.Name(), db.Status().Primary)
}

// TestPatroniRESTAPIsFrozen freezes every Patroni daemon (SIGSTOP; the
// servers run on) for well under the key's ttl, under a mixed load: the DB
// says the source is unreachable (Status, EventSourceUnreachable) and routes
// on over the members it knew, writes to the leader and reads to the
// replicas, with no failed statement; thawed, the source is read again
// (EventSourceReachable).
func TestPatroniRESTAPIsFrozen(t *testing.T) {
	pc := patroniCluster(t)
	r := startFaultRun(t, pc, 2*time.Minute, "pfrozen")
	r.load(t)
	ctx, db, events, leader, l := r.ctx, r.db, r.events, r.leader, r.l
	replicas := otherMembers(pc, leader.Name())
	require.True(t, db.Status().Discovery.Reachable)

	members := pc.Members()
	t.Cleanup(func() {
		for _, m := range members {
			pc.Thaw(context.Background(), m.Name())
		}
	})
	frozenAt := time.Now()
	for _, m := range members {
		require.NoError(t, pc.FreezePatroni(ctx, m.Name()))
	}
	testwait.Until(t, pc.TTL()/2, "the DB to find the source unreachable", func() bool { return !db.Status().Discovery.Reachable })
	unreachable := time.Now()
	st := db.Status().Discovery
	assert.ErrorIs(t, st.LastError, patroni.ErrUnreachable)
	testwait.Until(t, 10*time.Second, "EventSourceUnreachable", func() bool { return events.find(dbrouter.EventSourceUnreachable).Kind != 0 })
	assert.ErrorIs(t, events.find(dbrouter.EventSourceUnreachable).Err, patroni.ErrUnreachable)

	// Routing goes on over the members it knew, by its own probes.
	for _, r := range replicas {
		l.waitServed(t, false, r, 20, pc.TTL()/4)
	}
	l.waitServed(t, true, leader.Name(), 20, pc.TTL()/4)
	require.Less(t, time.Since(frozenAt), pc.TTL()/2, "frozen too long: a failover could start")
	thawAt := time.Now()
	for _, m := range members {
		require.NoError(t, pc.Thaw(ctx, m.Name()))
	}
	testwait.Until(t, 30*time.Second, "the DB to read the source again", func() bool { return db.Status().Discovery.Reachable })
	reachable := time.Now()
	testwait.Until(t, 10*time.Second, "EventSourceReachable", func() bool { return events.find(dbrouter.EventSourceReachable).Kind != 0 })
	l.waitServed(t, true, leader.Name(), 20, time.Minute)
	l.stop()

	reads, writes := l.snapshot()
	checkIdentity(t, pc, reads)
	checkIdentity(t, pc, writes)
	readFails, writeFails := failures(reads, time.Time{}, time.Now()), failures(writes, time.Time{}, time.Now())
	assert.Empty(t, readFails, "reads failed: %s", errorKinds(readFails))
	assert.Empty(t, writeFails, "writes failed: %s", errorKinds(writeFails))
	assert.Zero(t, served(reads, leader.Name(), time.Time{}), "reads went to the leader although replicas were there")
	for _, w := range writes {
		if w.err == nil {
			assert.Equal(t, leader.Name(), w.node, "write %d", w.id)
		}
	}
	now, err := pc.Leader(ctx)
	require.NoError(t, err)
	assert.Equal(t, leader.Name(), now.Name(), "no failover while Patroni was frozen")
	s := db.Status()
	assert.Equal(t, leader.Name(), s.Primary)
	assert.Equal(t, leader.Name(), s.Discovery.Leader)
	frozenReads := served(reads, replicas[0], frozenAt) + served(reads, replicas[1], frozenAt) - served(reads, replicas[0], thawAt) - served(reads, replicas[1], thawAt)
	frozenWrites := served(writes, leader.Name(), frozenAt) - served(writes, leader.Name(), thawAt)
	t.Logf("REPORT: patroni %s every REST API frozen for %v (ttl %v): dbrouter: source unreachable after %v (patroni.New: 3 URLs x 1 s), reachable again %v after the thaw; meanwhile %d reads on the replicas and %d writes on %s, none failed",
		pc.Version(), thawAt.Sub(frozenAt).Round(time.Millisecond), pc.TTL(), unreachable.Sub(frozenAt).Round(time.Millisecond),
		reachable.Sub(thawAt).Round(time.Millisecond), frozenReads, frozenWrites, leader.Name())
}

// memberWatch reads GET /cluster every 20 ms and records when a member not
// in known first shows, and first shows streaming.
type memberWatch struct {
	background

	mu                  sync.Mutex // protects following fields
	name                string
	listed, streaming   time.Time // answered times of the first samples showing it so
	listedAs, streamsAs string    // its state then
}

func watchNewMember(t *testing.T, pc *pgcluster.PatroniCluster, known []string) *memberWatch {
	w := &memberWatch{}
	w.start(t)
	w.every(20*time.Millisecond, func(ctx context.Context) bool {
		st, err := pc.ClusterState(ctx)
		at := time.Now()
		if err != nil {
			return false
		}
		for _, m := range st.Members {
			if slices.Contains(known, m.Name) {
				continue
			}
			w.mu.Lock()
			w.name = m.Name
			if w.listed.IsZero() {
				w.listed, w.listedAs = at, m.State
			}
			if w.streaming.IsZero() && m.State == "streaming" {
				w.streaming, w.streamsAs = at, m.State
			}
			done := !w.streaming.IsZero()
			w.mu.Unlock()
			if done {
				return true
			}
		}
		return false
	}, nil)
	return w
}

// TestPatroniMemberJoins adds a 4th member (it clones the leader): it serves
// reads through the DB within two discovery intervals of GET /cluster
// showing it streaming, with no restart of anything.
func TestPatroniMemberJoins(t *testing.T) {
	pc := patroniCluster(t)
	ctx := testContext(t, 2*time.Minute)
	// The harness's own pool of the new member's server lives as long as
	// the cluster; TestMain checks for leaked goroutines once the cluster
	// is closed.
	db, events := openPatroniDB(t, pc, goleak.IgnoreAnyFunction("database/sql.(*DB).connectionOpener"))
	tbl := createPatroniTable(t, ctx, db, "pjoin")
	l := startPatroniLoad(t, db, tbl, 4, 1)
	var known []string
	for _, m := range pc.Members() {
		known = append(known, m.Name())
	}
	watch := watchNewMember(t, pc, known)
	began := time.Now()
	m, err := pc.AddMember(ctx)
	require.NoError(t, err)
	added := time.Now()
	testwait.Until(t, 30*time.Second, "/cluster showing "+m.Name()+" streaming", func() bool {
		watch.mu.Lock()
		defer watch.mu.Unlock()
		return !watch.streaming.IsZero()
	})
	watch.stop()
	testwait.Until(t, 30*time.Second, "reads on "+m.Name(), func() bool {
		reads, _ := l.snapshot()
		return served(reads, m.Name(), began) > 0
	})
	l.waitServed(t, false, m.Name(), 20, 30*time.Second)
	l.stop()

	reads, writes := l.snapshot()
	checkIdentity(t, pc, reads)
	first, ok := firstDone(reads, m.Name(), began)
	require.True(t, ok)
	delay := first.done.Sub(watch.streaming)
	t.Logf("REPORT: patroni %s member %s joins: Patroni: AddMember -> listed in /cluster (%s) after %v, streaming after %v (AddMember returned after %v); dbrouter: first read on it %v after /cluster showed it streaming (discovery interval %v)",
		pc.Version(), m.Name(), watch.listedAs, watch.listed.Sub(began).Round(time.Millisecond), watch.streaming.Sub(began).Round(time.Millisecond),
		added.Sub(began).Round(time.Millisecond), delay.Round(time.Millisecond), patroniDiscovery)
	assert.LessOrEqual(t, delay, 2*patroniDiscovery, "a member that joined serves reads within two discovery intervals")
	assert.True(t, events.has(dbrouter.EventMemberJoined, m.Name()))
	st := nodeStatus(t, db, m.Name())
	assert.True(t, st.Readable, "%+v", st)
	assert.False(t, st.Draining)
	readFails := failures(reads, time.Time{}, time.Now())
	assert.Empty(t, readFails, "reads failed: %s", errorKinds(readFails))
	checkWriteErrors(t, writes, false)
}

// routerBackends counts the backends of the DB's connections (by their
// application_name) on m's server.
func routerBackends(ctx context.Context, m *pgcluster.PatroniMember) (int, error) {
	var n int
	err := m.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '"+patroniApp+"'", &n)
	return n, err
}

// TestPatroniMemberRemoved removes a replica (its Patroni stopped cleanly,
// its key deleted) under load: it drains (shown in Status) while a
// statement holds one of its connections, is closed once that ends, and
// then nothing of the DB reaches it, not even when its server is started
// again by hand, with stale data, outside Patroni.
func TestPatroniMemberRemoved(t *testing.T) {
	pc := patroniCluster(t)
	ctx := testContext(t, 2*time.Minute)
	if len(pc.Members()) < 4 {
		_, err := pc.AddMember(ctx) // so that 3 are left
		require.NoError(t, err)
	}
	leader, err := pc.Leader(ctx)
	require.NoError(t, err)
	members := pc.Members()
	var victim *pgcluster.PatroniMember
	for _, m := range slices.Backward(members) {
		if m.Name() != leader.Name() {
			victim = m
			break
		}
	}
	require.NotNil(t, victim)
	db, events := openPatroniDB(t, pc)
	tbl := createPatroniTable(t, ctx, db, "premove")
	l := startPatroniLoad(t, db, tbl, 4, 1)
	l.waitServed(t, false, victim.Name(), 20, time.Minute)
	n, err := routerBackends(ctx, victim)
	require.NoError(t, err)
	require.Positive(t, n, "the DB's connections show on %s", victim.Name())

	// A statement holds a connection of the victim's pool.
	var held *sql.Rows
	for i := 0; i < 100 && held == nil; i++ {
		rows, err := db.QueryContext(ctx, "SELECT current_setting('cluster_name') FROM generate_series(1, 2)")
		require.NoError(t, err)
		var name string
		require.True(t, rows.Next())
		require.NoError(t, rows.Scan(&name))
		if name == victim.Name() {
			held = rows
		} else {
			require.NoError(t, rows.Close())
		}
	}
	require.NotNil(t, held, "no read landed on %s", victim.Name())
	defer held.Close()

	removeAt := time.Now()
	require.NoError(t, pc.RemoveMember(ctx, victim.Name()))
	removed := time.Now()
	testwait.Until(t, 10*time.Second, victim.Name()+" draining", func() bool {
		st, ok := db.Status().Node(victim.Name())
		return ok && st.Draining
	})
	draining := time.Now()
	// It stays so, and serves nothing, while the statement holds its
	// connection: for three discovery intervals and 100 reads elsewhere.
	testwait.Until(t, 30*time.Second, "three discovery intervals and 100 reads", func() bool {
		reads, _ := l.snapshot()
		ok := 0
		for _, r := range reads {
			if r.err == nil && r.sent.After(draining) {
				ok++
			}
		}
		return ok >= 100 && time.Since(draining) > 3*patroniDiscovery
	})
	st, ok := db.Status().Node(victim.Name())
	require.True(t, ok, "%s closed while a statement held its connection", victim.Name())
	assert.True(t, st.Draining)
	assert.False(t, st.Readable)
	reads, _ := l.snapshot()
	assert.Zero(t, served(reads, victim.Name(), draining), "reads reached the draining member")

	require.NoError(t, held.Close())
	closeAt := time.Now()
	testwait.Until(t, 10*time.Second, victim.Name()+" closed", func() bool {
		_, ok := db.Status().Node(victim.Name())
		return !ok
	})
	closed := time.Now()

	// Its server started again by hand, outside Patroni: nothing of the DB
	// reaches it.
	require.NoError(t, pc.StartPostgresByHand(ctx, victim.Name()))
	byHand := time.Now()
	most := 0
	testwait.For(t, 30*time.Second, "four discovery intervals with the server up", func() (bool, error) {
		n, err := routerBackends(ctx, victim)
		most = max(most, n)
		return time.Since(byHand) > 4*patroniDiscovery, err
	})
	l.stop()
	reads, writes := l.snapshot()
	assert.Zero(t, most, "the DB connected to the removed member's server")
	assert.Zero(t, served(reads, victim.Name(), removed), "reads reached the removed member")
	_, ok = db.Status().Node(victim.Name())
	assert.False(t, ok)
	assert.True(t, events.has(dbrouter.EventMemberLeft, victim.Name()))
	for _, e := range db.Status().Events {
		assert.False(t, e.Kind == dbrouter.EventMemberJoined && e.Node == victim.Name() && e.Time.After(removeAt), "%s joined again", victim.Name())
	}
	checkIdentity(t, pc, reads)
	checkWriteErrors(t, writes, false)
	readFails := failures(reads, time.Time{}, time.Now())
	for _, r := range readFails {
		assert.True(t, connectionFailed(r.err), "a read failed: %v", r.err)
	}
	t.Logf("REPORT: patroni %s member %s removed: Patroni: RemoveMember took %v; dbrouter: seen draining %v after RemoveMember began, closed %v after the statement holding its connection ended; 0 connections to its server started by hand (watched for %v); reads failed %d (%s)",
		pc.Version(), victim.Name(), removed.Sub(removeAt).Round(time.Millisecond), draining.Sub(removeAt).Round(time.Millisecond),
		closed.Sub(closeAt).Round(time.Millisecond), time.Since(byHand).Round(time.Millisecond), len(readFails), errorKinds(readFails))
}
