package integration

import (
	"cmp"
	"database/sql"

	"github.com/dbrouter/dbrouter/internal/testwait"

	"github.com/dbrouter/dbrouter"

	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/internal/pgcluster"
	"github.com/dbrouter/dbrouter/internal/tcpproxy"
)

// Failover on a real primary + 2 replicas, under a steady concurrent read and
// write load. Every read and write records, server-side, which node ran it
// (cluster_name), so the tests assert where each statement went. The figures
// they print (FAILOVER …) are what the README reports.

// op is one statement of the load.
type op struct {
	start, end time.Time
	node       string // the node that ran it, by its own account
	err        error
}

// load runs readers and writers against db until stopped.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	hold   atomic.Bool // writers skip their turns while set

	mu     sync.Mutex // protects following fields
	reads  []op
	writes []op
}

// A face is what the load's statements go through: the *dbrouter.DB, its
// SQL() *sql.DB, or *sql.Stmts from DB.Prepare.
type face string

const (
	viaDB    face = "DB"
	viaSQL   face = "SQL()"
	viaStmts face = "prepared statements"
)

// statements returns the load's read and write (of v into table) through f;
// each scans the node that ran it.
func (f face) statements(t *testing.T, db *dbrouter.DB, table string) (read func(context.Context) *sql.Row, write func(context.Context, int) *sql.Row) {
	t.Helper()
	insert := "INSERT INTO " + table + " (v) VALUES ($1) RETURNING current_setting('cluster_name')"
	switch f {
	case viaDB:
		return func(ctx context.Context) *sql.Row { return db.QueryRowContext(ctx, whoServes) },
			func(ctx context.Context, v int) *sql.Row { return db.QueryRowContext(ctx, insert, v) }
	case viaSQL:
		h := db.SQL()
		return func(ctx context.Context) *sql.Row { return h.QueryRowContext(ctx, whoServes) },
			func(ctx context.Context, v int) *sql.Row { return h.QueryRowContext(ctx, insert, v) }
	case viaStmts:
		ctx := context.Background()
		r, err := db.PrepareContext(ctx, whoServes)
		require.NoError(t, err)
		w, err := db.PrepareContext(ctx, insert)
		require.NoError(t, err)
		t.Cleanup(func() { r.Close(); w.Close() })
		return func(ctx context.Context) *sql.Row { return r.QueryRowContext(ctx) },
			func(ctx context.Context, v int) *sql.Row { return w.QueryRowContext(ctx, v) }
	}
	t.Fatalf("no face %q", f)
	return nil, nil
}

// startLoad starts readers and writers. Each call has its own deadline
// (callTimeout). Writers insert into table and read back, with RETURNING,
// the node that inserted.
func startLoad(t *testing.T, db *dbrouter.DB, table string, readers, writers int, callTimeout time.Duration) *load {
	t.Helper()
	return startLoadVia(t, viaDB, db, table, readers, writers, callTimeout)
}

// startLoadVia is startLoad with the statements going through f.
func startLoadVia(t *testing.T, f face, db *dbrouter.DB, table string, readers, writers int, callTimeout time.Duration) *load {
	t.Helper()
	readRow, writeRow := f.statements(t, db, table)
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	run := func(write bool) {
		defer l.wg.Done()
		tick := time.NewTicker(5 * time.Millisecond) // pace: a steady load, not a busy loop
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if write && l.hold.Load() {
				continue
			}
			cctx, ccancel := context.WithTimeout(ctx, callTimeout)
			o := op{start: time.Now()}
			if write {
				o.err = writeRow(cctx, i).Scan(&o.node)
			} else {
				o.err = readRow(cctx).Scan(&o.node)
			}
			o.end = time.Now()
			ccancel()
			if ctx.Err() != nil {
				return // stopped mid-call: not a result
			}
			l.mu.Lock()
			if write {
				l.writes = append(l.writes, o)
			} else {
				l.reads = append(l.reads, o)
			}
			l.mu.Unlock()
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

func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *load) snapshot() (reads, writes []op) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reads), slices.Clone(l.writes)
}

// waitWrites waits until n more writes than now succeeded on node.
func (l *load) waitWrites(t *testing.T, node string, n int, timeout time.Duration) {
	t.Helper()
	count := func() int {
		_, ws := l.snapshot()
		c := 0
		for _, w := range ws {
			if w.err == nil && w.node == node {
				c++
			}
		}
		return c
	}
	base := count()
	testwait.Until(t, timeout, fmt.Sprintf("%d writes on %s", n, node), func() bool { return count() >= base+n })
}

func failed(ops []op, after time.Time) (n int, first error) {
	for _, o := range ops {
		if o.err != nil && !o.start.Before(after) {
			if n == 0 {
				first = o.err
			}
			n++
		}
	}
	return n, first
}

// servedBetween lists the nodes that served successful ops that started in [from, to).
// failedBut counts the ops that failed from after on, but for those that
// failed with a connection error while a cut happened (in flight at the
// cut: the router retries a read only until its first row comes back, and
// a cut can land after that, in the rows' end), which it counts apart.
func failedBut(ops []op, after time.Time, cuts []time.Time) (n, inFlight int, first error) {
	for _, o := range ops {
		if o.err == nil || o.start.Before(after) {
			continue
		}
		if connectionFailed(o.err) && slices.ContainsFunc(cuts, func(c time.Time) bool { return !c.Before(o.start) && !c.After(o.end) }) {
			inFlight++
			continue
		}
		n++
		if first == nil {
			first = o.err
		}
	}
	return n, inFlight, first
}

func servedBetween(ops []op, from, to time.Time) map[string]int {
	m := map[string]int{}
	for _, o := range ops {
		if o.err == nil && !o.start.Before(from) && o.start.Before(to) {
			m[o.node]++
		}
	}
	return m
}

// firstSuccessOn returns when the first write that succeeded on node ended.
func firstSuccessOn(ops []op, node string) (time.Time, bool) {
	var first time.Time
	for _, o := range ops {
		if o.err == nil && o.node == node && (first.IsZero() || o.end.Before(first)) {
			first = o.end
		}
	}
	return first, !first.IsZero()
}

// readsGoOnWithoutPrimary waits until the router has lost the primary and
// the replicas have served n reads since: while no primary is known, reads
// must not wait for one. (On a cluster that had failed over before, the
// replicas whose receivers stopped with their primary were once judged by
// their last restartpoint's older timeline, and reads waited for a primary.)
func readsGoOnWithoutPrimary(t *testing.T, db *dbrouter.DB, l *load, n int) {
	t.Helper()
	testwait.Until(t, time.Minute, "the router to lose the primary", func() bool { return db.Status().Primary == "" })
	lost := time.Now()
	testwait.Until(t, time.Minute, fmt.Sprintf("%d reads from the replicas without a primary", n), func() bool {
		reads, _ := l.snapshot()
		served := 0
		for _, r := range reads {
			if r.err == nil && r.start.After(lost) {
				served++
			}
		}
		return served >= n
	})
}

func createLoadTable(t *testing.T, ctx context.Context, db *dbrouter.DB, table string) {
	t.Helper()
	_, err := db.ExecContext(ctx, "CREATE TABLE "+table+" (id bigserial PRIMARY KEY, v int, node text DEFAULT current_setting('cluster_name'))")
	require.NoError(t, err)
}

// TestFailoverCrash crashes the primary under load, promotes a replica
// externally, leaves the other replica behind on the old timeline for a
// while, re-points it, and finally brings the old primary back as a primary
// on its old timeline.
func TestFailoverCrash(t *testing.T) {
	for _, tl := range []int{1, 2} {
		t.Run(fmt.Sprintf("timeline %d", tl), func(t *testing.T) { testCrash(t, clusterOnTimeline(t, tl), tl, viaDB) })
	}
	for _, f := range []face{viaSQL, viaStmts} {
		t.Run("through "+string(f)+", timeline 2", func(t *testing.T) { testCrash(t, clusterOnTimeline(t, 2), 2, f) })
	}
}

// testCrash crashes c's primary (n0, on timeline tl) under load through f,
// promotes n1, re-points n2 and brings n0 back on its old timeline.
func testCrash(t *testing.T, c *pgcluster.Cluster, tl int, f face) {
	ctx := testContext(t, 4*time.Minute)
	n0, n1, n2 := c.Primary(), c.Replicas()[0], c.Replicas()[1]
	p0, p1, p2 := n0.Name(), n1.Name(), n2.Name()
	var events eventLog
	db := openRouter(t, c, dbrouter.WithEventHook(events.add))
	createLoadTable(t, ctx, db, "crash_t")

	l := startLoadVia(t, f, db, "crash_t", 4, 2, 5*time.Second)
	l.waitWrites(t, p0, 20, time.Minute)
	// The writers hold still for a moment so that both replicas have
	// replayed all the primary's WAL when it crashes: otherwise node2 may
	// have received WAL that node1 never got, and could not follow node1's
	// new timeline after being re-pointed (it would need pg_rewind). Reads
	// go on throughout; the writers resume right after the crash.
	l.hold.Store(true)
	waitCaughtUp(t, ctx, c)

	crashAt := time.Now()
	require.NoError(t, n0.Crash(ctx))
	l.hold.Store(false)
	readsGoOnWithoutPrimary(t, db, l, 40)
	promotedAt := promote(t, ctx, n1)
	l.waitWrites(t, p1, 20, time.Minute)

	reads, writes := l.snapshot()
	first, ok := firstSuccessOn(writes, p1)
	require.True(t, ok)
	resume := max(first.Sub(promotedAt), 0)
	readErrs, firstReadErr := failed(reads, crashAt)
	writeErrs, _ := failed(writes, crashAt)
	t.Logf("FAILOVER crash (%s backend, timeline %d, through %s): promotion -> first write on new primary %v; crash -> first write %v; read errors %d; write errors %d (writes to the crashed primary before it was known down)",
		c.Backend(), tl, f, resume.Round(time.Millisecond), first.Sub(crashAt).Round(time.Millisecond), readErrs, writeErrs)
	assert.Zero(t, readErrs, "no read fails during the failover (first: %v)", firstReadErr)
	assert.Less(t, resume, 10*time.Second, "writes resume on the new primary")
	for _, w := range writes {
		if w.err != nil {
			assert.True(t, connectionFailed(w.err) || errors.Is(w.err, dbrouter.ErrNoPrimary),
				"a write fails only by reaching the crashed primary or finding none: %v", w.err)
		}
	}
	for _, w := range writes {
		if w.err != nil {
			continue
		}
		switch {
		case w.end.Before(crashAt):
			assert.Equal(t, p0, w.node)
		case w.start.After(promotedAt):
			assert.Equal(t, p1, w.node, "after the promotion every write goes to the new primary")
		default:
			assert.Contains(t, []string{p0, p1}, w.node)
		}
	}

	// The replica left behind (still pointed at the dead primary) holds none
	// of the new writes: from the first write on the new primary on, it
	// serves no reads.
	assert.Zero(t, servedBetween(reads, first, time.Now())[p2], "node2 is on the old timeline")
	st := nodeStatus(t, db, p2)
	assert.True(t, st.StaleTimeline, "%+v", st)
	assert.False(t, st.Readable)

	// Re-pointed at node1, node2 streams on timeline 2 and serves reads
	// again. (Re-pointed only after the old primary returned, it might have
	// followed that one past the fork and need pg_rewind.)
	require.NoError(t, n2.Repoint(ctx, n1))
	require.NoError(t, n2.WaitStreaming(ctx))
	testwait.Until(t, time.Minute, "node2 readable again", func() bool { return nodeStatus(t, db, p2).Readable })
	readmitted := time.Now()
	testwait.Until(t, time.Minute, "reads on node2", func() bool {
		reads, _ := l.snapshot()
		return servedBetween(reads, readmitted, time.Now())[p2] > 0
	})
	// The old primary returns as a primary on its old timeline: fenced.
	require.NoError(t, n0.Start(ctx))
	testwait.Until(t, time.Minute, "node0 fenced", func() bool { return nodeStatus(t, db, p0).State == dbrouter.StateFenced })
	fencedAt := time.Now()
	before := nodeStatus(t, db, p0)
	l.waitWrites(t, p1, 30, time.Minute)
	reads, writes = l.snapshot()
	after := nodeStatus(t, db, p0)
	assert.Zero(t, servedBetween(reads, fencedAt, time.Now())[p0], "no read reaches the fenced old primary")
	assert.Zero(t, servedBetween(writes, fencedAt, time.Now())[p0], "no write reaches the fenced old primary")
	assert.Equal(t, before.Reads+before.Writes, after.Reads+after.Writes, "its counters do not move")
	assert.Equal(t, p1, db.Status().Primary)
	assert.True(t, events.has(dbrouter.EventFenced, p0))

	l.stop()
	reads, _ = l.snapshot()
	readErrs, firstReadErr = failed(reads, crashAt)
	assert.Zero(t, readErrs, "no read failed in the whole episode (first: %v)", firstReadErr)
	t.Logf("FAILOVER crash (%s backend, timeline %d, through %s): %d reads, %d writes in the episode; events: %s", c.Backend(), tl, f, len(reads), len(writes), events.String())
}

// TestFailoverHang freezes the primary (SIGSTOP / container pause): its TCP
// port still accepts, nothing answers. Calls with a deadline return by it, no
// goroutines pile up, and after a replica is promoted writes go there.
func TestFailoverHang(t *testing.T) {
	t.Run("promoted after the router saw the primary down", func(t *testing.T) { testHang(t, clusterOnTimeline(t, 1), 1, true, viaDB) })
	t.Run("promoted right after the freeze", func(t *testing.T) { testHang(t, clusterOnTimeline(t, 1), 1, false, viaDB) })
	t.Run("timeline 2, promoted after the router saw the primary down", func(t *testing.T) {
		testHang(t, clusterOnTimeline(t, 2), 2, true, viaDB)
	})
	for _, f := range []face{viaSQL, viaStmts} {
		t.Run("through "+string(f)+", timeline 2, promoted after the router saw the primary down", func(t *testing.T) {
			testHang(t, clusterOnTimeline(t, 2), 2, true, f)
		})
	}
}

func testHang(t *testing.T, c *pgcluster.Cluster, tl int, waitDown bool, f face) {
	ctx := testContext(t, 4*time.Minute)
	n0, n1 := c.Primary(), c.Replicas()[0]
	p0, p1 := n0.Name(), n1.Name()
	db := openRouter(t, c)
	createLoadTable(t, ctx, db, "hang_t")
	const callTimeout = time.Second
	l := startLoadVia(t, f, db, "hang_t", 4, 2, callTimeout)
	l.waitWrites(t, p0, 20, time.Minute)
	waitReplicated(t, ctx, c, "hang_t")
	baseline := runtime.NumGoroutine()

	frozenAt := time.Now()
	require.NoError(t, n0.Freeze(ctx))
	var detected time.Duration
	if waitDown {
		testwait.Until(t, time.Minute, "the router to see the frozen primary down", func() bool {
			return nodeStatus(t, db, p0).State == dbrouter.StateDown
		})
		detected = time.Since(frozenAt)
	}
	during := runtime.NumGoroutine()
	promotedAt := promote(t, ctx, n1)
	// When does the router send writes to node1? The load's own writers may
	// still sit out their 1 s deadline on the frozen node, so a fresh write
	// shows it better.
	testwait.Until(t, time.Minute, "writes routed to node1", func() bool { return db.Status().Primary == p1 })
	switched := time.Since(promotedAt)
	wctx, wcancel := context.WithTimeout(ctx, callTimeout)
	var on string
	require.NoError(t, db.QueryRowContext(wctx, "INSERT INTO hang_t (v) VALUES (-1) RETURNING current_setting('cluster_name')").Scan(&on))
	wcancel()
	fresh := time.Since(promotedAt)
	assert.Equal(t, p1, on)
	l.waitWrites(t, p1, 20, time.Minute)
	l.stop()
	reads, writes := l.snapshot()
	first, ok := firstSuccessOn(writes, p1)
	require.True(t, ok)
	resume := max(first.Sub(promotedAt), 0)
	var slowest time.Duration
	for _, o := range append(reads, writes...) {
		slowest = max(slowest, o.end.Sub(o.start))
	}
	readErrs, firstReadErr := failed(reads, frozenAt)
	writeErrs, _ := failed(writes, frozenAt)
	how := "promoted right after the freeze"
	if waitDown {
		how = fmt.Sprintf("promoted after it was seen down (%v after the freeze)", detected.Round(time.Millisecond))
	}
	t.Logf("FAILOVER hang (%s backend, timeline %d, through %s), %s: promotion -> writes routed to it %v, a fresh write done %v, first write of the load %v; slowest call %v (deadline %v); goroutines %d -> %d; read errors %d; write errors %d",
		c.Backend(), tl, f, how, switched.Round(time.Millisecond), fresh.Round(time.Millisecond), resume.Round(time.Millisecond),
		slowest.Round(time.Millisecond), callTimeout, baseline, during, readErrs, writeErrs)
	assert.Less(t, fresh, 5*time.Second)
	assert.Zero(t, readErrs, "reads go to replicas (first: %v)", firstReadErr)
	assert.Less(t, resume, 5*time.Second)
	assert.Less(t, slowest, callTimeout+2*time.Second, "calls return by their deadline")
	assert.Less(t, during, baseline+40, "no goroutines pile up on the frozen node")
	for _, w := range writes {
		if w.err == nil && w.start.After(promotedAt) {
			assert.Equal(t, p1, w.node)
		}
	}
}

// TestPrimaryRestart restarts the primary of a cluster on timeline 2 under
// load, with no failover, as a minor upgrade, a setting that needs a restart
// or an OOM kill does: killed (-9, crash recovery on restart) and stopped
// cleanly. No read fails (the replicas serve them throughout), writes
// resume on the same node once it is back, nothing is fenced, no other
// node ever takes a write, and the replicas, which reconnect to it, serve
// reads again.
func TestPrimaryRestart(t *testing.T) {
	for _, kill := range []bool{true, false} {
		name := map[bool]string{true: "kill -9", false: "clean stop"}[kill]
		t.Run(name, func(t *testing.T) {
			c := clusterOnTimeline(t, 2)
			ctx := testContext(t, 3*time.Minute)
			n0 := c.Primary()
			p0 := n0.Name()
			var events eventLog
			db := openRouter(t, c, dbrouter.WithEventHook(events.add))
			const table = "restart_t"
			createLoadTable(t, ctx, db, table)
			l := startLoad(t, db, table, 4, 2, 5*time.Second)
			l.waitWrites(t, p0, 20, time.Minute)

			downAt := time.Now()
			if kill {
				require.NoError(t, n0.Kill(ctx))
			} else {
				require.NoError(t, n0.Stop(ctx))
			}
			testwait.Until(t, time.Minute, "the router to lose the primary", func() bool { return db.Status().Primary == "" })
			lost := time.Since(downAt)
			require.NoError(t, n0.Start(ctx))
			upAt := time.Now()
			l.waitWrites(t, p0, 20, time.Minute)
			for _, r := range c.Replicas() {
				testwait.Until(t, time.Minute, r.Name()+" readable again", func() bool { return nodeStatus(t, db, r.Name()).Readable })
			}
			l.stop()
			reads, writes := l.snapshot()

			readErrs, firstReadErr := failed(reads, downAt)
			assert.Zero(t, readErrs, "no read fails (first: %v)", firstReadErr)
			var resumed time.Time
			for _, w := range writes {
				if w.err != nil {
					continue
				}
				assert.Equal(t, p0, w.node, "a write taken by another node than the primary")
				if !w.end.Before(upAt) && (resumed.IsZero() || w.end.Before(resumed)) {
					resumed = w.end
				}
			}
			writeErrs, firstWriteErr := failed(writes, downAt)
			st := nodeStatus(t, db, p0)
			assert.Equal(t, p0, db.Status().Primary)
			assert.Equal(t, dbrouter.StateUp, st.State)
			assert.Equal(t, uint32(2), st.Timeline)
			assert.Zero(t, db.Status().EventCounts[dbrouter.EventFenced], "nothing fenced")
			t.Logf("FAILOVER primary restart (%s backend, timeline 2, %s): router without a primary %v after it went down; back -> first write %v; read errors %d of %d; write errors %d of %d (first: %v); events: %s",
				c.Backend(), name, lost.Round(time.Millisecond), resumed.Sub(upAt).Round(time.Millisecond), readErrs, len(reads), writeErrs, len(writes), firstWriteErr, events.String())
		})
	}
}

// TestNodeOfAnotherCluster gives the router, beside a primary and two
// replicas on timeline 1, the primary and the replica of another cluster,
// which failed over once (timeline 2): DSNs pointing at the wrong servers.
// Its nodes serve nothing (its primary is fenced, its replica reads
// nothing), its higher timeline does not fence the real primary, and every
// read and write lands on the real cluster, as the servers' own ports and
// system identifiers say. (Before, the other cluster's timeline fenced the
// real primary, and its primary took the writes.)
func TestNodeOfAnotherCluster(t *testing.T) {
	a, b := newCluster(t, 2), clusterOnTimeline(t, 2)
	ctx := testContext(t, 2*time.Minute)
	nodes := []*pgcluster.Node{a.Primary(), a.Replicas()[0], a.Replicas()[1], b.Primary(), b.Replicas()[0]}
	names := []string{"a0", "a1", "a2", "b-primary", "b-replica"}
	byPort := map[int]string{}
	var dsns []string
	for i, n := range nodes {
		dsns = append(dsns, n.DSN())
		byPort[n.Port()] = names[i]
	}
	var aID, bID string
	require.NoError(t, a.Primary().QueryRow(ctx, "SELECT (pg_control_system()).system_identifier::text", &aID))
	require.NoError(t, b.Primary().QueryRow(ctx, "SELECT (pg_control_system()).system_identifier::text", &bID))
	require.NotEqual(t, aID, bID)
	var events eventLog
	db := openDSNs(t, dsns, names, dbrouter.WithEventHook(events.add))

	st := db.Status()
	assert.Equal(t, "a0", st.Primary)
	byName := statusByName(st)
	assert.Equal(t, dbrouter.StateFenced, byName["b-primary"].State)
	assert.False(t, byName["b-replica"].Readable)
	assert.True(t, byName["a1"].Readable && byName["a2"].Readable)
	testwait.Until(t, time.Minute, "the event naming the other cluster", func() bool { return events.find(dbrouter.EventReplicaExcluded).Kind != 0 })
	assert.Contains(t, events.find(dbrouter.EventReplicaExcluded).Detail, "another cluster: system identifier "+bID)

	serve := func(query string) string {
		var port int
		var id string
		require.NoError(t, db.QueryRowContext(ctx, query).Scan(&port, &id))
		assert.Equal(t, aID, id, "served by another cluster")
		return byPort[port]
	}
	reads := tallyServers(20, func() string {
		return serve("SELECT inet_server_port(), (pg_control_system()).system_identifier::text")
	})
	assert.Equal(t, map[string]int{"a1": 10, "a2": 10}, reads)
	_, err := db.ExecContext(ctx, "CREATE TABLE another_cluster_t (v int)")
	require.NoError(t, err)
	writes := tallyServers(5, func() string {
		return serve("INSERT INTO another_cluster_t VALUES (1) RETURNING inet_server_port(), (pg_control_system()).system_identifier::text")
	})
	assert.Equal(t, map[string]int{"a0": 5}, writes)
	assert.False(t, events.has(dbrouter.EventFenced, "a0"), "the real primary fenced, even for a moment")
	assert.False(t, events.has(dbrouter.EventPrimaryChanged, "b-primary"), "the other cluster's primary chosen, even for a moment")
	t.Logf("FAILOVER nodes of another cluster: reads %v, writes %v; events: %s", reads, writes, events.String())
}

// TestReplicaAtMaxConnections fills a replica to max_connections (its
// server answers every new connection with 53300, "sorry, too many clients
// already"), with every pool of the router keeping no idle connection, so
// that each statement opens one: a read routed there never reached the
// server and runs again on the other replica, through the DB and through
// SQL(), and none fails; writes are not affected. Once the replica has room
// again, it serves reads again.
func TestReplicaAtMaxConnections(t *testing.T) {
	c := newCluster(t, 2)
	ctx := testContext(t, 2*time.Minute)
	db := openRouter(t, c)
	db.SetMaxIdleConns(0)
	r1, r2 := c.Replicas()[0], c.Replicas()[1]
	_, err := db.ExecContext(ctx, "CREATE TABLE full_t (v int)")
	require.NoError(t, err)
	waitReplicated(t, ctx, c, "full_t")

	filler, err := r1.Open()
	require.NoError(t, err)
	defer filler.Close()
	var conns []*sql.Conn
	for {
		cn, err := filler.Conn(ctx)
		if err == nil {
			err = cn.PingContext(ctx)
		}
		if err != nil {
			require.Equal(t, "53300", sqlStateOf(err), "filling %s: %v", r1.Name(), err)
			break
		}
		conns = append(conns, cn)
		require.Less(t, len(conns), 200, "max_connections never reached")
	}
	t.Logf("%s full after %d connections of the test", r1.Name(), len(conns))

	for _, h := range []struct {
		name string
		q    interface {
			QueryRowContext(context.Context, string, ...any) *sql.Row
		}
	}{{"DB", db}, {"SQL()", db.SQL()}} {
		t.Run(h.name, func(t *testing.T) {
			before := nodeStatus(t, db, r1.Name()).Retries
			var failed int
			var firstErr error
			got := map[string]int{}
			for range 40 {
				var name string
				if err := h.q.QueryRowContext(ctx, whoServes).Scan(&name); err != nil {
					failed++
					firstErr = cmp.Or(firstErr, err)
					continue
				}
				got[name]++
			}
			retried := nodeStatus(t, db, r1.Name()).Retries - before
			t.Logf("FAILOVER %s at max_connections, through %s: served %v, %d failed, %d run again on %s", r1.Name(), h.name, got, failed, retried, r2.Name())
			assert.Zero(t, failed, "no read fails (first: %v)", firstErr)
			assert.Equal(t, map[string]int{r2.Name(): 40}, got)
			assert.Positive(t, retried, "reads routed to %s", r1.Name())
		})
	}
	_, err = db.ExecContext(ctx, "INSERT INTO full_t VALUES (1)")
	require.NoError(t, err, "a write while a replica is full")

	for _, cn := range conns {
		require.NoError(t, cn.Close())
	}
	filler.Close()
	testwait.Until(t, time.Minute, r1.Name()+" serving reads again", func() bool { return servedBy(t, ctx, db) == r1.Name() })
}

// TestNetworkCut puts a TCP proxy between the router and each node (the
// nodes replicate directly). Cutting the primary off from the router alone
// must not promote anything, even with auto-promotion on; cutting a replica
// off moves reads to the other replica with no failed read.
func TestNetworkCut(t *testing.T) {
	c := newCluster(t, 2)
	ctx := testContext(t, 4*time.Minute)
	var proxies []*tcpproxy.Proxy
	var dsns []string
	for _, n := range c.Nodes() {
		p, err := tcpproxy.Start(n.Addr())
		require.NoError(t, err)
		t.Cleanup(func() { p.Close() })
		proxies = append(proxies, p)
		dsns = append(dsns, n.DSNFor("127.0.0.1", p.Port()))
	}
	const after = time.Second
	var names []string
	for _, n := range c.Nodes() {
		names = append(names, n.Name())
	}
	db := openDSNs(t, dsns, names, dbrouter.WithAutoPromote(after), dbrouter.WithPrimaryWait(0))
	createLoadTable(t, ctx, db, "cut_t")
	l := startLoad(t, db, "cut_t", 4, 0, 5*time.Second)
	testwait.Until(t, time.Minute, "reads", func() bool { r, _ := l.snapshot(); return len(r) > 40 })

	t.Run("primary cut from the router only: no promotion", func(t *testing.T) {
		proxies[0].Cut()
		testwait.Until(t, time.Minute, "node0 down", func() bool { return nodeStatus(t, db, "node0").State == dbrouter.StateDown })
		// Hold on for several times the promotion delay: nothing may happen.
		deadline := time.Now().Add(4 * after)
		for time.Now().Before(deadline) {
			for _, n := range c.Replicas() {
				rec, err := n.InRecovery(ctx)
				require.NoError(t, err)
				require.True(t, rec, "%s was promoted although it still streams from the primary", n.Name())
			}
			assert.Empty(t, db.Status().Primary)
		}
		_, err := db.ExecContext(ctx, "INSERT INTO cut_t (v) VALUES (1)")
		assert.ErrorIs(t, err, dbrouter.ErrNoPrimary)
		proxies[0].Restore()
		testwait.Until(t, time.Minute, "node0 primary again", func() bool { return db.Status().Primary == "node0" })
		_, err = db.ExecContext(ctx, "INSERT INTO cut_t (v) VALUES (1)")
		assert.NoError(t, err)
	})

	var cuts []time.Time // reads in flight at a cut may fail after their row came back: see failedBut
	t.Run("replica cut: reads move to the other replica", func(t *testing.T) {
		cutAt := time.Now()
		cuts = append(cuts, cutAt)
		proxies[1].Cut()
		testwait.Until(t, time.Minute, "node1 down", func() bool { return nodeStatus(t, db, "node1").State == dbrouter.StateDown })
		downAt := time.Now()
		testwait.Until(t, time.Minute, "reads after the cut", func() bool {
			r, _ := l.snapshot()
			return servedBetween(r, downAt, time.Now())["node2"] > 40
		})
		reads, _ := l.snapshot()
		errs, inFlight, firstErr := failedBut(reads, cutAt, cuts)
		assert.Zero(t, errs, "no read fails (first: %v)", firstErr)
		assert.Zero(t, servedBetween(reads, downAt, time.Now())["node1"])
		retries := nodeStatus(t, db, "node1").Retries
		t.Logf("FAILOVER replica cut (%s backend): read errors %d (and %d in flight at the cut, after their row came back); reads re-run on another node %d",
			c.Backend(), errs, inFlight, retries)
		proxies[1].Restore()
		testwait.Until(t, time.Minute, "node1 readable again", func() bool { return nodeStatus(t, db, "node1").Readable })
	})

	t.Run("replica flapping never moves the primary", func(t *testing.T) {
		for range 3 {
			cuts = append(cuts, time.Now())
			proxies[2].Cut()
			testwait.Until(t, time.Minute, "node2 down", func() bool { return nodeStatus(t, db, "node2").State == dbrouter.StateDown })
			proxies[2].Restore()
			testwait.Until(t, time.Minute, "node2 up", func() bool { return nodeStatus(t, db, "node2").State == dbrouter.StateUp })
			assert.Equal(t, "node0", db.Status().Primary)
		}
		reads, _ := l.snapshot()
		errs, inFlight, firstErr := failedBut(reads, time.Time{}, cuts)
		assert.Zero(t, errs, "no read failed in the whole test (first: %v)", firstErr)
		t.Logf("FAILOVER replica flapping (%s backend): read errors %d (and %d in flight at a cut, after their row came back)", c.Backend(), errs, inFlight)
	})
}

// TestAutoPromoteAfterCrash crashes the primary with auto-promotion on: the
// replicas lose their WAL stream, so the router promotes the most advanced
// one and writes resume there.
func TestAutoPromoteAfterCrash(t *testing.T) {
	c := newCluster(t, 2)
	ctx := testContext(t, 4*time.Minute)
	var events eventLog
	db := openRouter(t, c, dbrouter.WithAutoPromote(time.Second), dbrouter.WithPrimaryWait(30*time.Second), dbrouter.WithEventHook(events.add))
	createLoadTable(t, ctx, db, "auto_t")
	l := startLoad(t, db, "auto_t", 2, 2, 30*time.Second)
	l.waitWrites(t, "node0", 20, time.Minute)
	waitReplicated(t, ctx, c, "auto_t")
	crashAt := time.Now()
	require.NoError(t, c.Primary().Crash(ctx))
	testwait.Until(t, 2*time.Minute, "a promotion", func() bool { return db.Status().Primary != "" && db.Status().Primary != "node0" })
	promoted := db.Status().Primary
	l.waitWrites(t, promoted, 20, time.Minute)
	_, writes := l.snapshot()
	first, _ := firstSuccessOn(writes, promoted)
	t.Logf("FAILOVER auto-promote (%s backend): %s promoted; crash -> first write on it %v; events: %s",
		c.Backend(), promoted, first.Sub(crashAt).Round(time.Millisecond), events.String())
	// pg_promote(wait) returns up to 100 ms after the server left recovery
	// (it polls), and only then does the router record its promotion: the
	// probes may have seen the new primary, and writes reached it, before.
	testwait.Until(t, 10*time.Second, "the router's EventPromoted for "+promoted, func() bool { return events.has(dbrouter.EventPromoted, promoted) })
	for _, n := range c.Replicas() {
		rec, err := n.InRecovery(ctx)
		require.NoError(t, err)
		assert.Equal(t, n.Name() != promoted, rec, "only %s was promoted", promoted)
	}
}

// promote promotes n without waiting (pg_promote(false)) and watches it,
// over one connection, every millisecond: it returns when n first reported
// that it is out of recovery, the moment it could take writes.
func promote(t *testing.T, ctx context.Context, n *pgcluster.Node) time.Time {
	t.Helper()
	h, err := n.Open()
	require.NoError(t, err)
	defer h.Close()
	conn, err := h.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, "SELECT pg_promote(false)")
	require.NoError(t, err)
	for {
		var rec bool
		require.NoError(t, conn.QueryRowContext(ctx, "SELECT pg_is_in_recovery()").Scan(&rec))
		if !rec {
			return time.Now()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s not promoted: %v", n.Name(), ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// waitReplicated waits until every replica holds every row of table that
// the primary holds.
func waitReplicated(t *testing.T, ctx context.Context, c *pgcluster.Cluster, table string) {
	t.Helper()
	var want int
	require.NoError(t, c.Primary().QueryRow(ctx, "SELECT count(*) FROM "+table, &want))
	for _, r := range c.Replicas() {
		testwait.Until(t, time.Minute, r.Name()+" caught up", func() bool {
			var got int
			return r.QueryRow(ctx, "SELECT count(*) FROM "+table, &got) == nil && got >= want
		})
	}
}

// waitCaughtUp waits until every replica has replayed all the WAL the
// primary has written.
func waitCaughtUp(t *testing.T, ctx context.Context, c *pgcluster.Cluster) {
	t.Helper()
	testwait.Until(t, time.Minute, "replicas caught up with the primary", func() bool {
		var primary string
		if c.Primary().QueryRow(ctx, "SELECT pg_current_wal_lsn()::text", &primary) != nil {
			return false
		}
		for _, r := range c.Replicas() {
			var behind bool
			if r.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() < '"+primary+"'::pg_lsn", &behind) != nil || behind {
				return false
			}
		}
		return true
	})
}

// eventLog collects events from the hook.
type eventLog struct {
	mu     sync.Mutex
	events []dbrouter.Event
}

func (l *eventLog) add(e dbrouter.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *eventLog) has(kind dbrouter.EventKind, node string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.events, func(e dbrouter.Event) bool { return e.Kind == kind && e.Node == node })
}

// find returns the first event of kind, or a zero Event.
func (l *eventLog) find(kind dbrouter.EventKind) dbrouter.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.Kind == kind {
			return e
		}
	}
	return dbrouter.Event{}
}

func (l *eventLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s string
	for i, e := range l.events {
		if i > 0 {
			s += ", "
		}
		s += e.Kind.String() + " " + e.Node
		if e.Detail != "" {
			s += " (" + e.Detail + ")"
		}
	}
	return s
}

// TestIntegrationProbeAsPlainRole probes as a role without pg_monitor:
// roles, positions and timelines are learned all the same; the WAL
// receiver's state is hidden, which keeps auto-promotion from acting.
func TestIntegrationProbeAsPlainRole(t *testing.T) {
	c := sharedCluster(t)
	ctx := testContext(t, time.Minute)
	require.NoError(t, c.Primary().Exec(ctx, "DO $$ BEGIN CREATE ROLE plain_app LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"))
	var dsns []string
	for _, n := range c.Nodes() {
		dsns = append(dsns, strings.Replace(n.DSN(), "postgres://postgres@", "postgres://plain_app@", 1))
	}
	var db *dbrouter.DB
	testwait.Until(t, time.Minute, "the role on every replica", func() bool {
		if db != nil {
			db.Close()
		}
		var err error
		db, err = dbrouter.Open("pgx", dsns[0], dsns[1:], dbrouter.WithNames("node0", "node1", "node2"), dbrouter.WithAutoPromote(time.Second))
		require.NoError(t, err)
		s := db.Status()
		return s.Nodes[1].State == dbrouter.StateUp && s.Nodes[2].State == dbrouter.StateUp
	})
	defer db.Close()
	s := db.Status()
	assert.Equal(t, "node0", s.Primary)
	for _, n := range s.Nodes[1:] {
		assert.Equal(t, dbrouter.RoleReplica, n.Role)
		assert.Equal(t, uint32(1), n.Timeline)
		assert.Equal(t, "hidden", n.WALReceiver)
		assert.True(t, n.Readable)
	}
	assert.Contains(t, []string{"node1", "node2"}, servedBy(t, ctx, db))
}

// TestFailoverSwitchover is a planned switchover as an HA manager makes it:
// the old primary is shut down cleanly once the replicas have its WAL, a
// replica is promoted and the other re-pointed, on a fresh cluster and on
// one that has failed over before. Reads never fail (the replicas serve
// them while there is no primary, and are not judged against the primary
// that went away), and no write is acknowledged by the old primary after it
// was stopped.
func TestFailoverSwitchover(t *testing.T) {
	for _, tl := range []int{1, 2} {
		t.Run(fmt.Sprintf("timeline %d", tl), func(t *testing.T) { testSwitchover(t, clusterOnTimeline(t, tl), tl) })
	}
}

func testSwitchover(t *testing.T, c *pgcluster.Cluster, tl int) {
	ctx := testContext(t, 4*time.Minute)
	n0, n1, n2 := c.Primary(), c.Replicas()[0], c.Replicas()[1]
	p0, p1, p2 := n0.Name(), n1.Name(), n2.Name()
	var events eventLog
	db := openRouter(t, c, dbrouter.WithEventHook(events.add))
	createLoadTable(t, ctx, db, "switch_t")
	l := startLoad(t, db, "switch_t", 4, 2, 5*time.Second)
	l.waitWrites(t, p0, 20, time.Minute)

	l.hold.Store(true)
	waitCaughtUp(t, ctx, c)
	stoppedAt := time.Now()
	require.NoError(t, n0.Stop(ctx))
	l.hold.Store(false)
	readsGoOnWithoutPrimary(t, db, l, 40)
	promotedAt := promote(t, ctx, n1)
	require.NoError(t, n2.Repoint(ctx, n1))
	l.waitWrites(t, p1, 20, time.Minute)
	require.NoError(t, n2.WaitStreaming(ctx))
	testwait.Until(t, time.Minute, p2+" readable on the new timeline", func() bool { return nodeStatus(t, db, p2).Readable })
	l.stop()

	reads, writes := l.snapshot()
	first, ok := firstSuccessOn(writes, p1)
	require.True(t, ok)
	readErrs, firstReadErr := failed(reads, stoppedAt)
	writeErrs, _ := failed(writes, stoppedAt)
	t.Logf("FAILOVER switchover (%s backend, timeline %d): stop -> promotion %v; promotion -> first write on the new primary %v; read errors %d; write errors %d; reads during the switchover by %v",
		c.Backend(), tl, promotedAt.Sub(stoppedAt).Round(time.Millisecond), max(first.Sub(promotedAt), 0).Round(time.Millisecond),
		readErrs, writeErrs, servedBetween(reads, stoppedAt, first))
	assert.Zero(t, readErrs, "no read fails through a switchover (first: %v)", firstReadErr)
	assert.Less(t, first.Sub(promotedAt), 10*time.Second, "writes resume on the new primary")
	for _, w := range writes {
		if w.err == nil && w.end.After(stoppedAt) {
			assert.NotEqual(t, p0, w.node, "a write acknowledged by the stopped old primary")
		}
		if w.err == nil && w.start.After(promotedAt) {
			assert.Equal(t, p1, w.node, "after the promotion every write goes to the new primary")
		}
	}
	assert.Positive(t, servedBetween(reads, stoppedAt, first)[p1]+servedBetween(reads, stoppedAt, first)[p2],
		"the replicas served reads while there was no primary")
}

// TestFailoverAsPlainRole runs a failover with a plain login role, which
// sees no WAL receiver details (received_tli is NULL without
// pg_read_all_stats): the router says so at Open, naming the grant; reads
// never fail and never reach the replica left on the old timeline; once
// re-pointed, that replica serves no reads until its next restartpoint shows
// the new timeline (PostgreSQL offers such a role no other way to tell),
// and then it does.
func TestFailoverAsPlainRole(t *testing.T) {
	c := newCluster(t, 2)
	ctx := testContext(t, 4*time.Minute)
	n0, n1, n2 := c.Primary(), c.Replicas()[0], c.Replicas()[1]
	require.NoError(t, n0.Exec(ctx, "CREATE ROLE plain_app LOGIN"))
	require.NoError(t, n0.Exec(ctx, "CREATE TABLE plain_t (id bigserial PRIMARY KEY, v bigint)"))
	require.NoError(t, n0.Exec(ctx, "GRANT ALL ON plain_t, plain_t_id_seq TO plain_app"))
	waitReplicated(t, ctx, c, "plain_t")
	db, grant := openAsPlainRole(t, c)
	assert.Contains(t, grant.Detail, "GRANT pg_monitor TO plain_app")
	t.Logf("FAILOVER plain role: event %q: %s", grant.Kind, grant.Detail)

	l := startLoad(t, db, "plain_t", 4, 2, 5*time.Second)
	l.waitWrites(t, "node0", 20, time.Minute)
	l.hold.Store(true)
	waitCaughtUp(t, ctx, c)
	crashAt := time.Now()
	require.NoError(t, n0.Crash(ctx))
	l.hold.Store(false)
	promote(t, ctx, n1)
	l.waitWrites(t, "node1", 20, time.Minute)
	_, writes := l.snapshot()
	first, _ := firstSuccessOn(writes, "node1")
	require.NoError(t, n2.Repoint(ctx, n1))
	require.NoError(t, n2.WaitStreaming(ctx))
	repointed := time.Now()
	l.waitWrites(t, "node1", 40, time.Minute)
	st := nodeStatus(t, db, "node2")
	assert.False(t, st.Readable, "node2's timeline cannot be seen yet: %+v", st)

	// Its next restartpoint (forced here, as superuser) shows timeline 2.
	restartpoint := time.Now()
	forceRestartpoints(t, ctx, n1, n2)
	testwait.Until(t, time.Minute, "node2 readable after its restartpoint", func() bool { return nodeStatus(t, db, "node2").Readable })
	readmitted := time.Now()
	testwait.Until(t, time.Minute, "reads on node2", func() bool {
		reads, _ := l.snapshot()
		return servedBetween(reads, readmitted, time.Now())["node2"] > 0
	})
	l.stop()
	reads, _ := l.snapshot()
	readErrs, firstErr := failed(reads, crashAt)
	t.Logf("FAILOVER plain role: read errors %d; node2 re-pointed -> readable %v (after a forced restartpoint); reads it served before: %d",
		readErrs, readmitted.Sub(repointed).Round(time.Millisecond), servedBetween(reads, first, restartpoint)["node2"])
	assert.Zero(t, readErrs, "no read fails (first: %v)", firstErr)
	assert.Zero(t, servedBetween(reads, first, restartpoint)["node2"], "node2 served reads before its timeline was known")
}

// TestPlainRoleOnTimeline2 opens a router as a plain login role on a
// cluster that failed over before, whose replicas stream timeline 2 while
// their last restartpoints are still on timeline 1 (as clusterOnTimeline
// shows): such a role cannot tell them from replicas left on the abandoned
// history, so they serve no reads until their next restartpoint, and reads
// go to the primary meanwhile (WithReplicaFallback's default), none failing.
// After a restartpoint (forced here, as superuser, as an operator can),
// reads spread over both replicas.
func TestPlainRoleOnTimeline2(t *testing.T) {
	c := clusterOnTimeline(t, 2)
	ctx := testContext(t, 3*time.Minute)
	p := c.Primary()
	require.NoError(t, p.Exec(ctx, "CREATE ROLE plain_app LOGIN"))
	waitReplicas(t, ctx, c, "the role", "SELECT count(*) = 1 FROM pg_roles WHERE rolname = $1", "plain_app")
	db, grant := openAsPlainRole(t, c)
	assert.Contains(t, grant.Detail, "a cluster that failed over before")

	for _, r := range c.Replicas() {
		st := nodeStatus(t, db, r.Name())
		assert.Equal(t, dbrouter.StateUp, st.State, "%s", r.Name())
		assert.False(t, st.Readable, "%s: its timeline cannot be seen yet: %+v", r.Name(), st)
	}
	before := tallyServers(10, func() string { return servedBy(t, ctx, db) })
	assert.Equal(t, map[string]int{p.Name(): 10}, before, "reads before the restartpoints")

	forceRestartpoints(t, ctx, p, c.Replicas()...)
	checkpointed := time.Now()
	for _, r := range c.Replicas() {
		testwait.Until(t, time.Minute, r.Name()+" readable after its restartpoint", func() bool { return nodeStatus(t, db, r.Name()).Readable })
	}
	t.Logf("FAILOVER plain role on timeline 2: both replicas readable %v after their restartpoints", time.Since(checkpointed).Round(time.Millisecond))
	after := tallyServers(20, func() string { return servedBy(t, ctx, db) })
	assert.Equal(t, map[string]int{c.Replicas()[0].Name(): 10, c.Replicas()[1].Name(): 10}, after, "reads after the restartpoints")
}

// openAsPlainRole opens a router over c's nodes logged in as plain_app, a
// login role without pg_monitor, and returns it once it has said so, with
// the EventMissingGrant that says it.
func openAsPlainRole(t *testing.T, c *pgcluster.Cluster) (*dbrouter.DB, dbrouter.Event) {
	t.Helper()
	var dsns, names []string
	for _, n := range c.Nodes() {
		dsns = append(dsns, probeAs("plain_app")(n.DSN()))
		names = append(names, n.Name())
	}
	var events eventLog
	db := openDSNs(t, dsns, names, dbrouter.WithEventHook(events.add))
	testwait.Until(t, time.Minute, "the missing grant named", func() bool { return events.find(dbrouter.EventMissingGrant).Kind != 0 })
	return db, events.find(dbrouter.EventMissingGrant)
}

// forceRestartpoints makes each replica's next restartpoint now, as
// superuser: a checkpoint on the primary, replayed by the replica, then
// CHECKPOINT on the replica, whose last restartpoint then shows the
// primary's timeline.
func forceRestartpoints(t testing.TB, ctx context.Context, primary *pgcluster.Node, replicas ...*pgcluster.Node) {
	t.Helper()
	require.NoError(t, primary.Exec(ctx, "CHECKPOINT"))
	var lsn string
	require.NoError(t, primary.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text", &lsn))
	for _, r := range replicas {
		testwait.Until(t, time.Minute, r.Name()+" replayed the checkpoint", func() bool {
			var ok bool
			return r.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= '"+lsn+"'::pg_lsn", &ok) == nil && ok
		})
		require.NoError(t, r.Exec(ctx, "CHECKPOINT"))
	}
}

// TestFenceSeesTheTimelineOfAReplica: the old primary crashed, node1 was
// promoted but the router cannot reach it, node2 streams timeline 2 from
// node1, and the old primary restarts as a primary on timeline 1. The
// timeline node2 reports proves a promotion: the old primary is fenced, no
// write reaches it, and reads stay on node2. (Before, only primaries'
// timelines counted, and the old primary took the writes while node2 served
// reads from the other history.)
func TestFenceSeesTheTimelineOfAReplica(t *testing.T) {
	c := newCluster(t, 2)
	ctx := testContext(t, 4*time.Minute)
	n0, n1, n2 := c.Primary(), c.Replicas()[0], c.Replicas()[1]
	var proxies []*tcpproxy.Proxy
	var dsns, names []string
	for _, n := range c.Nodes() {
		p, err := tcpproxy.Start(n.Addr())
		require.NoError(t, err)
		t.Cleanup(func() { p.Close() })
		proxies = append(proxies, p)
		dsns = append(dsns, n.DSNFor("127.0.0.1", p.Port()))
		names = append(names, n.Name())
	}
	db := openDSNs(t, dsns, names, dbrouter.WithPrimaryWait(0))
	createLoadTable(t, ctx, db, "fence_t")
	waitCaughtUp(t, ctx, c)

	require.NoError(t, n0.Crash(ctx))
	promote(t, ctx, n1)
	proxies[1].Cut() // the router cannot reach the new primary
	require.NoError(t, n2.Repoint(ctx, n1))
	require.NoError(t, n2.WaitStreaming(ctx))
	testwait.Until(t, time.Minute, "node2 seen on timeline 2", func() bool { return nodeStatus(t, db, "node2").Timeline == 2 })
	require.NoError(t, n0.Start(ctx)) // back as a primary on timeline 1
	testwait.Until(t, time.Minute, "node0 probed again", func() bool { return nodeStatus(t, db, "node0").State != dbrouter.StateDown })
	st := nodeStatus(t, db, "node0")
	assert.Equal(t, dbrouter.StateFenced, st.State, "%+v", st)
	assert.Empty(t, db.Status().Primary)
	for range 20 {
		_, err := db.ExecContext(ctx, "INSERT INTO fence_t (v) VALUES (1)")
		assert.ErrorIs(t, err, dbrouter.ErrNoPrimary)
		assert.Equal(t, "node2", servedBy(t, ctx, db))
	}
	var rows int
	require.NoError(t, n0.QueryRow(ctx, "SELECT count(*) FROM fence_t", &rows))
	assert.Zero(t, rows, "a write reached the old primary")
}

// TestPrimaryOnlyReads: functions only a primary can run go to it, and what
// a replica refuses as such (an unlogged table, 0A000) runs again on the
// primary, counted as a misroute.
func TestPrimaryOnlyReads(t *testing.T) {
	c := sharedCluster(t)
	ctx := testContext(t, time.Minute)
	db := openRouter(t, c)
	for _, q := range []string{"SELECT pg_current_wal_lsn()::text", "SELECT pg_walfile_name(pg_current_wal_lsn())", "SELECT pg_current_wal_insert_lsn()::text"} {
		var s string
		require.NoError(t, db.QueryRowContext(ctx, q).Scan(&s), q)
	}
	tbl := uniqueName(t, "unlogged")
	_, err := db.ExecContext(ctx, "CREATE UNLOGGED TABLE "+tbl+" (id int)")
	require.NoError(t, err)
	t.Cleanup(func() { db.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+tbl) })
	waitReplicas(t, ctx, c, "the unlogged table", "SELECT to_regclass($1) IS NOT NULL", tbl)
	before := totalMisroutes(db.Status())
	for range 4 {
		var who string
		require.NoError(t, db.QueryRowContext(ctx, "SELECT current_setting('cluster_name') FROM (SELECT count(*) FROM "+tbl+") x").Scan(&who))
		assert.Equal(t, "node0", who)
	}
	assert.Equal(t, before+4, totalMisroutes(db.Status()), "each refusal by a replica is a misroute")
}

// TestDoublePromotion: the primary crashes and both replicas are promoted
// (two promoters that could not see each other's promotion): two servers
// are primaries on timeline 2, their histories parting there. Two DBs, as
// two application instances listing the replicas in different orders, take
// no write on either until the operator stops one; then both write to the
// other. (Before, each DB took writes on the one it saw first: in one of
// two runs DB a wrote 58 rows to node1 and DB b 58 rows to node2 in 3 s.)
func TestDoublePromotion(t *testing.T) {
	c := newCluster(t, 2)
	ctx := testContext(t, 3*time.Minute)
	n0, n1, n2 := c.Primary(), c.Replicas()[0], c.Replicas()[1]
	a := openRouter(t, c, dbrouter.WithPrimaryWait(0))
	b := openDSNs(t, []string{n0.DSN(), n2.DSN(), n1.DSN()}, []string{n0.Name(), n2.Name(), n1.Name()}, dbrouter.WithPrimaryWait(0))
	createLoadTable(t, ctx, a, "double_t")
	waitReplicated(t, ctx, c, "double_t")

	require.NoError(t, n0.Kill(ctx))
	promote(t, ctx, n1)
	promote(t, ctx, n2)
	for _, db := range []*dbrouter.DB{a, b} {
		testwait.Until(t, time.Minute, "both promoted nodes fenced", func() bool {
			return nodeStatus(t, db, n1.Name()).State == dbrouter.StateFenced && nodeStatus(t, db, n2.Name()).State == dbrouter.StateFenced
		})
		for range 10 {
			_, err := db.ExecContext(ctx, "INSERT INTO double_t (v) VALUES (1)")
			assert.ErrorIs(t, err, dbrouter.ErrNoPrimary)
		}
	}
	for _, n := range []*pgcluster.Node{n1, n2} {
		var rows int
		require.NoError(t, n.QueryRow(ctx, "SELECT count(*) FROM double_t", &rows))
		assert.Zero(t, rows, "a write reached %s", n.Name())
	}

	require.NoError(t, n2.Stop(ctx))
	for _, db := range []*dbrouter.DB{a, b} {
		testwait.Until(t, time.Minute, n1.Name()+" the primary", func() bool { return db.Status().Primary == n1.Name() })
		var who string
		require.NoError(t, db.QueryRowContext(ctx, "INSERT INTO double_t (v) VALUES (2) RETURNING current_setting('cluster_name')").Scan(&who))
		assert.Equal(t, n1.Name(), who)
	}
}
