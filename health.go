package dbrouter

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// clock tells time; tests inject a fake one.
type clock interface{ now() time.Time }

type realClock struct{}

func (realClock) now() time.Time { return time.Now() }

// healthState is the DB-wide part of the health picture. It is protected by
// DB.mu.
type healthState struct {
	primary      *node  // the current primary, nil when none is known
	lastPrimary  *node  // the last node known as primary, for Primary while none is
	maxTimeline  uint32 // the highest timeline any primary reported
	lostAt       time.Time
	fast         bool // probing fast: no primary, or the primary failed a probe or is slow to answer one
	slowPrimary  bool // a probe of the primary has taken longer than slowPrimaryAfter
	stuckPrimary bool // writes on the primary look stuck, until it answers a probe

	primaryProbeGen uint64      // numbers the probes of the primary
	primaryProbing  uint64      // the one in flight, or 0
	samples         []lsnSample // the primary's WAL position over time, oldest first
	promoting       bool
	promoted        *node  // the node promoted last, until a probe of it succeeds: no other promotion before
	promoteFailed   string // why the last promotion was called off, until a primary is known: told once
	primaryGen      uint64 // counts the primaries that became known: see promote

	source   *DiscoveryStatus // OpenDiscovered's source; nil for Open and New
	leader   *node            // the node the source names leader; nil when none
	draining []*node          // members that left, until they are closed
	maxTLBy  []*node          // the nodes seen on maxTimeline, for lifting a fence
	cluster  uint64           // the system identifier of the DB's cluster (see clusterLocked); 0 unknown
	settled  bool             // the first probe round has ended (see rebuildLocked)
	rivals   rivalry          // two servers seen as primaries on the newest timeline, until both are probed again

	recent      [recentEvents]Event // the last events, a ring; see queueLocked
	recentN     int                 // events queued so far
	eventCounts [eventKinds]uint64  // events queued so far, by kind
}

// startHealth publishes the configured routing table, probes every node once
// (in parallel, bounded by the probe timeout) so that the first statements
// already go where the nodes say, and starts one probe loop per node.
func (db *DB) startHealth() {
	now := db.cfg.clock.now()
	for _, n := range db.nodeList() {
		n.h = nodeHealth{up: true, role: n.configured, since: now, bo: db.newBackoff()}
	}
	db.mu.Lock()
	db.hs.lostAt = now // no primary may be known yet (OpenDiscovered): WithAutoPromote's wait counts from here
	db.table.Store(&table{changed: make(chan struct{})})
	db.rebuildLocked(now)
	db.mu.Unlock()
	if db.cfg.noBackground {
		return
	}
	db.probeAll()
	for _, n := range db.nodeList() {
		db.wg.Add(1)
		go db.probeLoop(n)
	}
}

// probeAll probes every node now, in parallel, and returns once the routing
// table reflects the results.
func (db *DB) probeAll() {
	var wg sync.WaitGroup
	for _, n := range db.nodeList() {
		wg.Go(func() { db.probeAndApply(n) })
	}
	wg.Wait()
}

func (db *DB) newBackoff() *backoff.ExponentialBackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = min(DefaultFastProbeInterval, db.cfg.probeInterval)
	bo.MaxInterval = db.cfg.maxBackoff
	bo.MaxElapsedTime = 0 // never give up
	bo.Reset()
	return bo
}

func (db *DB) probeLoop(n *node) {
	defer db.wg.Done()
	timer := time.NewTimer(db.probeDelay(n))
	defer timer.Stop()
	// The primary's loop also wakes every slowPrimaryAfter to see whether
	// its writes are stuck (see stuckWrites).
	watch := time.NewTicker(slowPrimaryAfter)
	defer watch.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-timer.C:
		case <-n.probeNow:
		case <-watch.C:
			if n == db.table.Load().primary && n.stuckWrites() {
				db.primaryIsStuck()
			}
			continue
		}
		db.probeAndApply(n)
		timer.Reset(db.probeDelay(n))
	}
}

// stuckWrites reports whether a write sent to n before the last watch is
// still running, while none has ended since: a primary that hangs shows it
// here before its probe times out. Called from n's probe loop only.
func (n *node) stuckWrites() bool {
	sent, ended := n.writesSent.Load(), n.writes.Load()
	stuck := n.watch[0] > ended && ended == n.watch[1]
	n.watch = [2]uint64{sent, ended}
	return stuck
}

// primaryIsStuck switches to fast probing, as a slow probe of the primary
// does.
func (db *DB) primaryIsStuck() {
	db.mu.Lock()
	wake := !db.hs.fast && db.ctx.Err() == nil
	db.hs.fast, db.hs.stuckPrimary = true, true
	db.mu.Unlock()
	if wake {
		db.probeAllNow()
	}
}

func (db *DB) probeAndApply(n *node) {
	ctx, cancel := context.WithTimeout(n.ctx, db.cfg.probeTimeout)
	began := time.Now()
	var slow *time.Timer
	var gen uint64
	if n == db.table.Load().primary && !db.cfg.noBackground {
		// A primary that does not answer within slowPrimaryAfter may hang:
		// probe everyone fast now, not only once this probe times out, so a
		// replica promoted meanwhile is seen at once.
		db.mu.Lock()
		db.hs.primaryProbeGen++
		gen = db.hs.primaryProbeGen
		db.hs.primaryProbing = gen
		db.mu.Unlock()
		slow = time.AfterFunc(slowPrimaryAfter, func() { db.primaryIsSlow(gen) })
	}
	r := db.probe(ctx, n)
	latency := time.Since(began)
	cancel()
	if slow != nil {
		slow.Stop()
		db.mu.Lock()
		if db.hs.primaryProbing == gen {
			db.hs.primaryProbing = 0 // a late timer now does nothing
		}
		db.hs.slowPrimary = false
		db.mu.Unlock()
	}
	if r.err != nil && ctx.Err() != nil && errors.Is(r.err, ctx.Err()) {
		r.err = fmt.Errorf("probe timed out after %v: %w", db.cfg.probeTimeout, r.err)
	}
	db.apply(n, r, latency)
	if r.err == nil && r.receiver == "hidden" && db.grantNoted.CompareAndSwap(false, true) {
		db.noteMissingGrant(n)
	}
}

// noteMissingGrant says, once, that the probing role may not see n's WAL
// receiver (it lacks pg_read_all_stats): then a replica's timeline is known
// only from its restartpoints, so on a cluster that failed over before (its
// replicas' last restartpoints can be on the older timeline) and after a
// failover the replicas serve no reads until their next one (up to
// checkpoint_timeout), and the router never promotes.
func (db *DB) noteMissingGrant(n *node) {
	ctx, cancel := context.WithTimeout(db.ctx, db.cfg.probeTimeout)
	defer cancel()
	role := "the probing role"
	var name string
	if err := n.probeQueryRow(ctx, "SELECT quote_ident(current_user)", &name); err == nil {
		role = name
	}
	detail := "GRANT pg_monitor TO " + role + ": without it (or pg_read_all_stats) a replica's timeline is seen only at its " +
		"restartpoints, so on a cluster that failed over before, and after a failover, a replica whose last restartpoint is on " +
		"an older timeline than the primary's serves no reads until its next one (up to checkpoint_timeout), " +
		"and WithAutoPromote never promotes"
	db.mu.Lock()
	if db.ctx.Err() == nil {
		db.queueLocked(db.event(EventMissingGrant, n, db.cfg.clock.now(), detail, nil))
	}
	db.mu.Unlock()
}

// probeVerdict is what a probe's error says of its node.
type probeVerdict uint8

const (
	probeOK      probeVerdict = iota
	probeFailed               // no answer, or the connection failed: one failure more
	probeDownNow              // a pooler says the server behind it cannot be reached: down at once
	probeAlive                // the server answered with an error about the probe, not itself
)

// verdict judges a probe's error. An error the server sent (an SQLSTATE from
// a live backend) says the server is up, unless it is one that says the
// server is going away or cannot be reached (connection exceptions, 08xxx;
// shutdown, 57P0x). PgBouncer answers 08P01 "server login has been failing"
// (and "pgbouncer cannot connect to server") while the node behind it is
// down: that is a down signal at once, whatever WithFailureThreshold says.
// A probe that could not connect (log in) learned nothing of the node,
// whatever the server answered (a role or database it lacks, too many
// clients, a pooler's login that waited for a server): one failure more.
func verdict(err error) probeVerdict {
	var ce *connectError
	switch {
	case err == nil:
		return probeOK
	case poolerLostServer(err):
		return probeDownNow
	case errors.As(err, &ce):
		return probeFailed
	case poolerQueueFull(err):
		return probeAlive // waited for the pooler's pool, not for the server
	case isConnError(err) || sqlState(err) == "", loginRefused(err):
		return probeFailed
	}
	return probeAlive
}

// loginRefused says the server would not let the probe in (the role, its
// password or the database is not there, as on a replica the role has not
// replicated to yet): the application's connections would fare no better.
func loginRefused(err error) bool {
	s := sqlState(err)
	return strings.HasPrefix(s, "28") || s == "3D000"
}

// applyTimeline records the timeline a probe reported. A primary's is exact,
// and so is the one a replica's receiver streams. When a replica's receiver
// stops (its primary died) or the role may not see it, the probe has only
// its last restartpoint's timeline, which stays old for up to
// checkpoint_timeout after a promotion; the timeline the receiver last
// streamed is kept instead, since a replica gets no WAL of another timeline
// without a receiver. (Judging it by the old restartpoint made every
// replica of a cluster on timeline 2 or later look stale the moment its
// primary died.)
func (h *nodeHealth) applyTimeline(role Role, r probeResult) {
	switch {
	case role == RolePrimary:
		h.timeline, h.streamTL = r.timeline, 0
	case r.timeline != 0:
		h.timeline, h.streamTL = r.timeline, r.timeline
	default:
		h.timeline = max(h.streamTL, r.restartTL)
	}
}

// slowPrimaryAfter is how long a probe of the primary may take before the
// other nodes are probed fast, as when it fails.
const slowPrimaryAfter = 250 * time.Millisecond

// primaryIsSlow switches to fast probing while probe gen of the primary
// hangs.
func (db *DB) primaryIsSlow(gen uint64) {
	db.mu.Lock()
	if db.hs.primaryProbing != gen || db.ctx.Err() != nil {
		db.mu.Unlock()
		return
	}
	wake := !db.hs.fast
	db.hs.slowPrimary, db.hs.fast = true, true
	db.mu.Unlock()
	if wake {
		db.probeAllNow()
	}
}

// probe probes n through its probe pool (see probePool): never through the
// application's pool, so an application that exhausted it cannot starve the
// probes and get a healthy node marked down. (A pooler in front is another
// pool, shared with the application unless WithProbeDSN gives the probes
// a user of their own there.) A probe that fails says whether it failed
// connecting or waiting for the server's answer (which a pooler in front,
// its pool full, may be holding in its queue).
func (db *DB) probe(ctx context.Context, n *node) probeResult {
	n.probeMu.Lock()
	defer n.probeMu.Unlock()
	n.probeSeq++
	seq := n.probeSeq
	var r probeResult
	err := n.onProbeConnLocked(ctx, func(conn *sql.Conn) error {
		r = db.cfg.dialect.probe(ctx, conn, n.simple)
		return r.err
	})
	if _, ok := errors.AsType[*connectError](err); ok {
		return probeResult{err: err, seq: seq}
	}
	if r.err != nil {
		r.err = fmt.Errorf("waiting for the answer: %w", r.err)
	}
	r.seq = seq
	return r
}

// diedIdle says a probe's error on a kept connection is that connection's
// end, not an answer about the server: a connection-class error other than
// a timeout (a hung server would hang the retry too) or a pooler's word
// about its server (down) or its pool (full: the retry would queue again).
func diedIdle(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || poolerLostServer(err) || poolerQueueFull(err) {
		return false
	}
	return isConnError(err)
}

// connectError is a probe's failure to connect to its node (or to the
// pooler in front of it): "connecting: " and the driver's error, which it
// unwraps to.
type connectError struct{ err error }

func (e *connectError) Error() string { return "connecting: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// probeDelay is how long n's loop waits before its next probe.
func (db *DB) probeDelay(n *node) time.Duration {
	db.mu.Lock()
	defer db.mu.Unlock()
	fast := min(DefaultFastProbeInterval, db.cfg.probeInterval)
	switch {
	case db.hs.fast:
		// No primary known, or the primary failed or is slow to answer a
		// probe: every node, down ones included (the primary may come
		// back), fast.
		return fast
	case n.h.probed && !n.h.up:
		return min(n.h.bo.NextBackOff(), db.cfg.maxBackoff)
	case n.h.fails > 0:
		return fast
	}
	return db.cfg.probeInterval
}

// signal is the passive health signal: an error from real traffic that says
// the connection or the server failed (or, on the primary, a write refused
// as read-only: it was demoted; or a deadline that ran out) asks for an
// immediate probe of that node. Probes are coalesced, and one error never
// marks a node down by itself, but a pooler's saying that the server behind
// it cannot be reached, which marks it down at once, as from a probe.
func (db *DB) signal(n *node, err error) {
	if err == nil {
		return
	}
	if statementClash(err) && db.clashNoted.CompareAndSwap(false, true) {
		db.noteClash(n, err)
	}
	if poolerLostServer(err) {
		db.downNow(n, err)
		n.askProbe()
		return
	}
	primary := n == db.table.Load().primary
	// A deadline that ran out on the primary may be a hung primary: worth a
	// probe (which, if the primary hangs, turns on fast probing of all).
	if isConnError(err) || loginRefused(err) || primary && (isReadOnlyError(err) || errors.Is(err, context.DeadlineExceeded)) {
		n.askProbe()
	}
}

// probeAllNow asks every node's loop for an immediate probe, at most once
// per fast probe interval however many writes are waiting.
func (db *DB) probeAllNow() { db.probeAllWithin(DefaultFastProbeInterval) }

// probeAllWithin asks every node's loop for an immediate probe, unless that
// was asked less than gap ago.
func (db *DB) probeAllWithin(gap time.Duration) {
	now := time.Now().UnixNano()
	last := db.lastProbeAll.Load()
	if now-last < int64(gap) || !db.lastProbeAll.CompareAndSwap(last, now) {
		return
	}
	for _, n := range db.nodeList() {
		n.askProbe()
	}
}

// apply records a probe result of n, rebuilds the routing table, emits the
// events, after unlocking, and promotes a replica if that is due.
func (db *DB) apply(n *node, r probeResult, latency time.Duration) {
	if db.record(n, r, latency) {
		db.promote()
	}
}

// downNow marks n down on a pooler's answer to real traffic that the server
// behind it cannot be reached (see poolerLostServer), as a probe meeting it
// would, without waiting for one: the probe may be waiting in that pooler's
// queue. A promotion this makes due is left to the next probe.
func (db *DB) downNow(n *node, err error) {
	db.record(n, probeResult{err: err}, -1)
}

// record records a probe result of n (its latency unless negative),
// rebuilds the routing table, and emits the events, after unlocking. It
// reports whether a promotion is due.
func (db *DB) record(n *node, r probeResult, latency time.Duration) (promote bool) {
	db.mu.Lock()
	if n.ctx.Err() != nil {
		// n left the DB (or the DB closed) while it was probed: its probe
		// was cancelled, which says nothing of its health, and nothing of
		// it is written after Close.
		db.mu.Unlock()
		return false
	}
	h := &n.h
	if r.seq != 0 {
		if r.seq <= h.seq {
			// A probe that ran before one already recorded (two probes of n
			// end in one order and take the lock in the other: a
			// promotion's own probe and n's loop): what it saw is older.
			db.mu.Unlock()
			return false
		}
		h.seq = r.seq
	}
	now := db.cfg.clock.now()
	var events []Event
	h.tried = true
	before := h.state()
	if latency >= 0 {
		h.latency = latency
	}
	v := verdict(r.err)
	if v == probeAlive && !h.known {
		v = probeFailed // alive, but what it is was never learned
	}
	switch v {
	case probeAlive:
		// The server answered, with an error about the probe rather than
		// about itself (a pooler's prepared statement clash, a permission):
		// it is alive, and what it is stays as the last probe saw it.
		h.fails, h.lastErr = 0, r.err
	case probeDownNow:
		h.fails, h.lastErr = max(h.fails+1, db.cfg.failureThreshold), r.err
		if h.up {
			h.bo.Reset()
		}
		h.up, h.probed = false, true
	case probeFailed:
		h.fails++
		h.lastErr = r.err
		if h.fails >= db.cfg.failureThreshold {
			if h.up {
				h.bo.Reset()
			}
			h.up, h.probed = false, true
		}
	default:
		h.fails, h.up, h.probed, h.known = 0, true, true, true
		if db.cfg.dialect.knowsRoles() {
			role := RoleReplica
			if !r.inRecovery {
				role = RolePrimary
			}
			if role != h.role {
				events = append(events, db.event(EventRoleChanged, n, now, h.role.String()+" -> "+role.String(), nil))
				h.role, h.since = role, now
			}
			h.lsn, h.receiver, h.sysid, h.started = r.lsn, r.receiver, r.sysid, r.started
			h.oks++
			h.applyTimeline(role, r)
			if r.receiver == "streaming" {
				h.streamed = true
			}
			n.replayed.Store(r.lsn)
			if role == RolePrimary && !db.hs.foreign(n) {
				db.samplePrimaryLocked(n, now)
				if n == db.hs.primary || db.hs.primary == nil {
					db.sawPrimaryAt(r.lsn)
				}
			}
		}
	}
	if after := h.state(); after != before {
		h.since = now
		switch {
		case after == StateDown:
			events = append(events, db.event(EventNodeDown, n, now, "", r.err))
		case before == StateDown:
			events = append(events, db.event(EventNodeUp, n, now, "", nil))
		}
	}
	if db.hs.promoted == n && r.err == nil {
		db.hs.promoted = nil // seen again: its state now decides
	}
	events = append(events, db.rebuildLocked(now)...)
	if n == db.hs.primary && r.err == nil {
		db.hs.stuckPrimary = false
	}
	fast := db.hs.primary == nil || db.hs.primary.h.fails > 0 || db.hs.slowPrimary || db.hs.stuckPrimary
	wake := fast && !db.hs.fast
	db.hs.fast = fast
	promote = db.promotionDueLocked(now)
	db.queueLocked(events...)
	db.mu.Unlock()

	if wake {
		db.probeAllNow()
	}
	return promote
}

// statementClash reports whether err is what pgx's named prepared
// statements meet behind a transaction pooler: those of its statement cache
// ("stmtcache_…") or of Prepare ("stmt_…", which Prepare and PrepareRouted
// make), created on one server connection and looked for on another
// (26000), or created twice on one (42P05).
func statementClash(err error) bool {
	switch sqlState(err) {
	case "42P05", "26000":
		msg := err.Error()
		return strings.Contains(msg, `prepared statement "stmtcache_`) || strings.Contains(msg, `prepared statement "stmt_`)
	}
	return false
}

// noteClash says, once, what fixes a statement clash: the DSN's exec mode.
func (db *DB) noteClash(n *node, err error) {
	detail := "pgx's prepared statements collide behind a transaction pooler (PgBouncer before 1.21): set " +
		"default_query_exec_mode=simple_protocol (or exec, or cache_describe) in the DSN, and WithServerPreparedStatements(false)"
	db.mu.Lock()
	if db.ctx.Err() == nil {
		db.queueLocked(db.event(EventStatementClash, n, db.cfg.clock.now(), detail, err))
	}
	db.mu.Unlock()
}
