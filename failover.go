package dbrouter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
)

// rebuildLocked chooses the primary and the replicas eligible for reads from
// the nodes' probed states, publishes a new routing table when that changed,
// and returns the events to emit (after unlocking).
//
// The primary is the node that reports not being in recovery. When two do
// (an old primary came back after a promotion) the higher timeline wins and
// the other is fenced: no reads, no writes, until it reports being in
// recovery. The highest timeline seen on any node, replicas included, is
// remembered: a node that reports being a primary on a lower one is fenced,
// even while the winner is down or out of the router's reach (a replica
// streaming timeline 2 proves a promotion happened). Replicas on an older
// timeline than the primary's (not re-pointed yet, or following a fenced
// node) serve no reads; while no primary is known, that judgement stands as
// it was, since a primary that is gone cannot be compared with.
func (db *DB) rebuildLocked(now time.Time) []Event {
	var events []Event
	hs := &db.hs
	roles := db.cfg.dialect.knowsRoles()

	all := db.nodeList()
	if roles && !hs.settled && slices.ContainsFunc(all, func(n *node) bool { return n.h.tried }) {
		// The first probe round: the table stays as configured until
		// every node has answered or failed, so that no decision rests
		// on the nodes that happened to answer first.
		if slices.ContainsFunc(all, func(n *node) bool { return !n.h.tried }) {
			return nil
		}
		hs.settled = true
	}
	nodes := all
	if roles {
		events = append(events, db.clusterLocked(all, now)...)
		nodes = slices.DeleteFunc(slices.Clone(all), hs.foreign)
	}
	var primary *node
	var split string     // the fence's reason when two servers are primaries on the newest timeline
	var splitBy [2]*node // those two servers
	switch {
	case roles && hs.source != nil && hs.source.Reachable:
		primary = db.leaderLocked(nodes)
	case roles:
		db.trackTimelinesLocked(nodes)
		for _, n := range nodes {
			if !n.h.up || n.h.role != RolePrimary || n.h.probed && n.h.timeline < hs.maxTimeline {
				continue
			}
			// A node probed as primary beats one only configured as such,
			// and the current primary keeps its place among equals.
			switch {
			case primary == nil, n.h.probed && !primary.h.probed:
				primary = n
			case n == hs.primary && n.h.probed == primary.h.probed:
				primary = n
			}
		}
		if rival := rivalLocked(nodes, primary); rival == nil {
			hs.rivals = rivalry{}
		} else if hs.rivals.confirmed(primary, rival) {
			// Two servers are primaries on the newest timeline: one history
			// promoted twice, a split brain. Which one the cluster keeps is
			// not the router's to guess (each application instance would
			// guess by the order of its own configuration): neither takes
			// writes until one of them is a replica again, or down.
			split = fmt.Sprintf("two primaries on timeline %d: %s and %s", primary.h.timeline,
				min(primary.name, rival.name), max(primary.name, rival.name))
			splitBy = [2]*node{primary, rival}
			primary = nil
		} else {
			// Until both answer again: one may be an alias of the other whose
			// last answer came from before the server restarted.
			primary.askProbe()
			rival.askProbe()
		}
	case hs.source != nil:
		if l := hs.leader; l != nil && l.h.up {
			primary = l
		}
	case len(nodes) > 0 && nodes[0].h.up:
		primary = nodes[0]
	}

	for _, n := range db.nodeList() {
		// A fenced node stays fenced while it is down: it never said it
		// was in recovery, and it comes back as it left.
		fenced := roles && n.h.probed && (n.h.up || n.h.fenced) && n.h.role == RolePrimary && n != primary
		splitNow := n == splitBy[0] || n == splitBy[1]
		// A node fenced already (the other one's rival, before the rivalry
		// was confirmed) is fenced again for the reason it is fenced now.
		if fenced != n.h.fenced || fenced && splitNow != n.h.split {
			n.h.fenced, n.h.split, n.h.since = fenced, fenced && splitNow, now
			n.fenced.Store(fenced)
			kind, detail := EventUnfenced, ""
			if fenced {
				kind = EventFenced
				switch {
				case n.h.foreign:
					detail = hs.foreignDetail(n)
				case splitNow:
					detail = split
				}
			}
			events = append(events, db.event(kind, n, now, detail, nil))
		}
	}

	if primary != hs.primary {
		prev := ""
		if hs.primary != nil {
			prev = hs.primary.name
		}
		if primary == nil {
			// The samples stay: the lag limit goes on judging replicas by
			// the last positions known until a primary is known again.
			hs.lostAt = now
			events = append(events, db.event(EventNoPrimary, hs.primary, now, "", nil))
		} else {
			events = append(events, db.event(EventPrimaryChanged, primary, now, prev, nil))
			hs.promoteFailed = ""
			hs.primaryGen++
			if primary != hs.lastPrimary {
				hs.samples = hs.samples[:0] // another node's WAL: positions start again
			}
			hs.lastPrimary = primary
			for _, n := range db.nodeList() {
				n.h.streamed = false // votes count only for streaming from this primary
			}
		}
		hs.primary = primary
	}

	var replicas []*node
	for _, n := range db.nodeList() {
		if n == primary {
			n.h.eligible = false
			continue
		}
		staleTL := n.h.staleTL
		switch {
		case !roles || !n.h.probed:
			staleTL = false
		case primary != nil && primary.h.probed:
			// Older: not re-pointed yet, or following a fenced node; newer:
			// another history than the primary's.
			staleTL = n.h.timeline != 0 && n.h.timeline != primary.h.timeline
		case n.h.streamTL != 0:
			// No primary: what it last streamed is exact, so it is
			// behind if a newer timeline was seen anywhere.
			staleTL = n.h.streamTL < hs.maxTimeline
		}
		lagged := db.lagLocked(n, now)
		eligible := n.h.up && !n.h.fenced && n.h.role == RoleReplica && !staleTL && !lagged && !n.noLoadBalance && !n.h.foreign
		if n.h.up && !n.h.fenced && n.h.role == RoleReplica {
			switch {
			case !eligible && n.h.eligible && !n.h.foreign: // a node of another cluster has its own event
				why := "lag"
				if staleTL {
					why = "timeline"
				}
				events = append(events, db.event(EventReplicaExcluded, n, now, why, nil))
			case eligible && !n.h.eligible && (n.h.staleTL || n.h.lagged):
				events = append(events, db.event(EventReplicaIncluded, n, now, "", nil))
			}
		}
		n.h.eligible, n.h.staleTL, n.h.lagged = eligible, staleTL, lagged
		if eligible {
			replicas = append(replicas, n)
		}
	}

	old := db.table.Load()
	if old.primary != primary || !slices.Equal(old.replicas, replicas) {
		db.table.Store(&table{primary: primary, replicas: replicas, changed: make(chan struct{})})
		close(old.changed)
	}
	return events
}

// rivalLocked returns another server than primary, among nodes, that reports
// being a primary on primary's timeline, or nil. Two DSNs of one server (an
// address and an alias) are not rivals: their postmaster started at the
// same moment.
func rivalLocked(nodes []*node, primary *node) *node {
	if primary == nil || !primary.h.probed {
		return nil
	}
	for _, n := range nodes {
		if n != primary && n.h.up && n.h.probed && n.h.role == RolePrimary &&
			n.h.timeline == primary.h.timeline && n.h.started != primary.h.started {
			return n
		}
	}
	return nil
}

// rivalry is two servers seen as primaries on the newest timeline, and how
// many successful probes each had then. It is confirmed once both have
// answered again and still are: two DSNs of one server that restarted
// differ until the second DSN's next probe, which reports the new start.
type rivalry struct {
	a, b     *node
	aOK, bOK uint64
}

// confirmed says the rivalry of a and b held over a fresh probe of each, and
// otherwise starts watching it.
func (r *rivalry) confirmed(a, b *node) bool {
	if r.a == b && r.b == a {
		a, b = b, a
	}
	if r.a != a || r.b != b {
		*r = rivalry{a: a, b: b, aOK: a.h.oks, bOK: b.h.oks}
		return false
	}
	return a.h.oks > r.aOK && b.h.oks > r.bOK
}

// waitingProbe is how often every node is probed while writes wait for a
// primary.
const waitingProbe = 20 * time.Millisecond

// waitPrimary waits for a primary to become known, for WithPrimaryWait and
// no longer than ctx, asking every node for a probe at once; t is the table
// that had none.
func (db *DB) waitPrimary(ctx context.Context, t *table) (*node, error) {
	if db.cfg.primaryWait <= 0 {
		return nil, ErrNoPrimary
	}
	db.probeAllNow()
	timer := time.NewTimer(db.cfg.primaryWait)
	defer timer.Stop()
	// While writes wait, every node is probed every waitingProbe: a
	// promotion is seen a few milliseconds after it, not at the next fast
	// probe round.
	tick := time.NewTicker(waitingProbe)
	defer tick.Stop()
	for {
		select {
		case <-t.changed:
			t = db.table.Load()
			if t.primary != nil {
				return t.primary, nil
			}
		case <-tick.C:
			db.probeAllWithin(waitingProbe)
		case <-timer.C:
			return nil, fmt.Errorf("%w (waited %v)", ErrNoPrimary, db.cfg.primaryWait)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrNoPrimary, ctx.Err())
		case <-db.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// leaderLocked returns the primary while OpenDiscovered's source answers:
// the node it names leader, once that node reports not being in recovery,
// and none other. (The leader key is quorum-backed; this router's view is
// one client's.) The source's word lifts a fence the router set on that
// node, as when an HA manager undid a failover: when it is the only node
// reporting not-in-recovery, or on the highest timeline of those that do,
// it is the primary, and its timeline the newest. A node that reports
// not-in-recovery without holding the leader role asks for the source to
// be read again at once: it may be a leader the source names by now.
func (db *DB) leaderLocked(nodes []*node) *node {
	hs := &db.hs
	l := hs.leader
	var top uint32 // the highest timeline of the nodes reporting primary, l aside
	for _, n := range nodes {
		if n != l && n.h.up && n.h.probed && n.h.role == RolePrimary {
			top = max(top, n.h.timeline)
			db.askDiscovery()
		}
	}
	if l == nil || !l.h.up || !l.h.probed || l.h.role != RolePrimary || l.h.timeline < top {
		if l != nil && l.h.up && l.h.role != RolePrimary {
			db.askDiscovery() // named before its server accepts writes: read the source again soon
		}
		return nil
	}
	hs.maxTimeline, hs.maxTLBy = l.h.timeline, []*node{l}
	return l
}

// clusterLocked decides which cluster the DB's nodes belong to, by their
// system identifiers (initdb draws one, every replica copies it): the one
// most nodes report, the earliest node's among equals (for Open and New the
// node configured as primary). A node of another cluster (a DSN that points
// at the wrong server, a node rebuilt from another cluster's backup) serves
// nothing: its WAL positions and timelines are of another history, and
// counting its timeline could fence the real primary. (rebuildLocked
// waits for the first probe round to end before it decides anything, so
// that the first nodes to answer do not outvote those still to.) It
// returns an event for each node found foreign, or a member again.
func (db *DB) clusterLocked(nodes []*node, now time.Time) []Event {
	hs := &db.hs
	count := map[uint64]int{}
	for _, n := range nodes {
		if n.h.sysid != 0 {
			count[n.h.sysid]++
		}
	}
	var cluster uint64
	for _, n := range nodes { // in order: the earliest wins among equals
		if id := n.h.sysid; id != 0 && (cluster == 0 || count[id] > count[cluster]) {
			cluster = id
		}
	}
	hs.cluster = cluster
	var events []Event
	for _, n := range nodes {
		foreign := hs.foreign(n)
		if foreign == n.h.foreign {
			continue
		}
		n.h.foreign = foreign
		if foreign && slices.Contains(hs.maxTLBy, n) {
			// Taken for a member before the others answered: its
			// timeline, of another history, fences nothing.
			hs.maxTLBy = slices.DeleteFunc(hs.maxTLBy, func(m *node) bool { return m == n })
			if len(hs.maxTLBy) == 0 {
				hs.maxTimeline = 0
			}
		}
		if n.h.role == RolePrimary {
			continue // fenced, or no longer, below
		}
		if foreign {
			events = append(events, db.event(EventReplicaExcluded, n, now, hs.foreignDetail(n), nil))
		} else {
			events = append(events, db.event(EventReplicaIncluded, n, now, "", nil))
		}
	}
	return events
}

// foreignDetail says why n, of another cluster, serves nothing.
func (hs *healthState) foreignDetail(n *node) string {
	return fmt.Sprintf("another cluster: system identifier %d, the cluster's %d", n.h.sysid, hs.cluster)
}

// foreign reports whether n is of another cluster than the DB's.
func (hs *healthState) foreign(n *node) bool {
	return n.h.sysid != 0 && hs.cluster != 0 && n.h.sysid != hs.cluster
}

// trackTimelinesLocked keeps the highest timeline seen on any node, which
// fences a primary on a lower one. The mark comes down only when every node
// that was seen on it has since become a replica on an older timeline: an
// HA manager rewound it and moved the cluster back, and the node it fenced
// is the primary again.
func (db *DB) trackTimelinesLocked(nodes []*node) {
	hs := &db.hs
	for _, n := range nodes {
		if !n.h.up || !n.h.probed {
			continue
		}
		switch {
		case n.h.timeline > hs.maxTimeline:
			hs.maxTimeline, hs.maxTLBy = n.h.timeline, []*node{n}
		case n.h.timeline == hs.maxTimeline && n.h.timeline != 0 && !slices.Contains(hs.maxTLBy, n):
			hs.maxTLBy = append(hs.maxTLBy, n)
		}
	}
	if len(hs.maxTLBy) == 0 {
		return
	}
	for _, n := range hs.maxTLBy {
		if !slices.Contains(nodes, n) || !n.h.up || !n.h.probed || n.h.role != RoleReplica ||
			n.h.timeline == 0 || n.h.timeline >= hs.maxTimeline {
			return
		}
	}
	var top uint32
	for _, n := range nodes {
		if n.h.up && n.h.probed {
			top = max(top, n.h.timeline)
		}
	}
	hs.maxTimeline, hs.maxTLBy = top, nil
	for _, n := range nodes {
		if n.h.up && n.h.probed && n.h.timeline == top {
			hs.maxTLBy = append(hs.maxTLBy, n)
		}
	}
}

// promotionDueLocked reports whether to try a promotion now, and marks one
// in progress: automatic promotion is on, no primary has been reachable for
// the configured time, and the replicas agree the primary is gone: none
// reports a streaming WAL receiver, and at least one that was seen
// streaming no longer does (a network cut between the application and the
// primary alone must not promote; nor may replicas that never stream, e.g.
// fed from an archive, vote). A replica whose receiver state the probing
// role may not see (no pg_read_all_stats) counts as streaming, so such a
// role never promotes. At least one replica must be on the newest timeline.
// Which replica, if any, is promoted is decided by promote, from facts
// asked for right before.
func (db *DB) promotionDueLocked(now time.Time) bool {
	hs := &db.hs
	if !db.cfg.autoPromote || !db.cfg.dialect.knowsRoles() || hs.primary != nil || hs.promoting ||
		hs.promoted != nil || now.Sub(hs.lostAt) < db.cfg.autoPromoteAfter {
		return false
	}
	if hs.source != nil && hs.source.Reachable {
		return false // the source names the primary (see leaderLocked): promoting is its HA manager's job
	}
	voters, candidates := 0, 0
	for _, n := range db.nodeList() {
		if !n.h.probed || !n.h.up || n.h.role != RoleReplica || n.h.foreign {
			continue // a node of another cluster neither votes nor vetoes
		}
		if n.h.receiver == "streaming" || n.h.receiver == "hidden" {
			return false // it streams from a primary we cannot reach, or we cannot tell
		}
		if n.h.streamed {
			voters++
		}
		if db.promotionCandidateLocked(n) {
			candidates++
		}
	}
	if voters == 0 || candidates == 0 {
		return false
	}
	hs.promoting = true
	return true
}

// silentCandidate is choosePromotion's reason to call a promotion off when
// a candidate gave no answer.
type silentCandidate struct {
	node string
	err  error
}

func (e *silentCandidate) Error() string {
	return fmt.Sprintf("%s, a replica that is up, did not answer: %v", e.node, e.err)
}
func (e *silentCandidate) Unwrap() error { return e.err }

// calledOffReason is what makes two called-off promotions the same for
// EventPromoteFailed: the message, except that a silent candidate is the
// same whatever its error said (a timeout names a new local port each time).
func calledOffReason(err error) string {
	if sc, ok := errors.AsType[*silentCandidate](err); ok {
		return "silent " + sc.node
	}
	return err.Error()
}

// promotionCandidateLocked says n may be promoted, as far as the probes
// know: a replica of the cluster that is up, on the newest timeline. db.mu
// is held.
func (db *DB) promotionCandidateLocked(n *node) bool {
	h := &n.h
	return h.probed && h.up && h.role == RoleReplica && !h.foreign && !h.staleTL && h.timeline >= db.hs.maxTimeline
}

// promotionProbe is what promote asks every node right before it promotes:
// role, replayed and received WAL positions, timeline, WAL receiver state,
// two facts of the server itself to break ties with, the same for whoever
// asks: when its postmaster started (microseconds since the epoch) and its
// port; and its cluster's system identifier.
const promotionProbe = `SELECT r,
	(CASE WHEN r THEN COALESCE(pg_last_wal_replay_lsn(), '0/0') ELSE pg_current_wal_lsn() END - '0/0')::text,
	(CASE WHEN r THEN COALESCE(pg_last_wal_receive_lsn(), '0/0') ELSE pg_current_wal_lsn() END - '0/0')::text,
	CASE WHEN r THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), (pg_control_checkpoint()).timeline_id)
		ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
	CASE WHEN r THEN COALESCE((SELECT COALESCE(status, 'hidden') FROM pg_stat_wal_receiver), 'none') ELSE '' END,
	(extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint,
	COALESCE(inet_server_port(), 0),
	(pg_control_system()).system_identifier::text
FROM pg_is_in_recovery() AS r`

// promotionFact is one node's answer to promotionProbe.
type promotionFact struct {
	n               *node
	candidate       bool // a candidate as far as the probes know: its facts are needed (see choosePromotion)
	err             error
	inRecovery      bool
	replay, receive uint64
	timeline        uint32
	receiver        string
	started, port   int64
	sysid           uint64
}

// askPromotionFacts asks every node promotionProbe, in parallel, each within
// the probe timeout.
func (db *DB) askPromotionFacts() []promotionFact {
	nodes := db.nodeList() // once: members may join meanwhile
	facts := make([]promotionFact, len(nodes))
	candidate := make([]bool, len(nodes))
	db.mu.Lock()
	for i, n := range nodes {
		candidate[i] = db.promotionCandidateLocked(n)
	}
	db.mu.Unlock()
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(db.ctx, db.cfg.probeTimeout)
			defer cancel()
			f := promotionFact{n: n, candidate: candidate[i]}
			var replay, receive, sysid string
			f.err = n.probeQueryRow(ctx, promotionProbe, &f.inRecovery, &replay, &receive,
				&f.timeline, &f.receiver, &f.started, &f.port, &sysid)
			if f.err == nil {
				f.replay, f.err = strconv.ParseUint(replay, 10, 64)
			}
			if f.err == nil {
				f.receive, f.err = strconv.ParseUint(receive, 10, 64)
			}
			if f.err == nil {
				f.sysid, f.err = parseSystemID(sysid)
			}
			facts[i] = f
		})
	}
	wg.Wait()
	return facts
}

// choosePromotion picks the replica to promote from facts asked for just
// now, or says why none may be: a node reports being a primary on the
// newest timeline (maxTL) or a newer one (someone promoted it already), or a
// replica streams or follows a newer timeline, or a candidate (a replica
// on the newest timeline that is up) gave no answer: it may be the most
// advanced (one that is down, or on an older timeline, is not waited for).
// Among the replicas on the
// newest timeline the highest replayed position wins, then the highest
// received one, then the server that started first, then the lower port:
// every application instance that sees the same servers picks the same
// replica, whatever the order of its configuration. A node of another
// cluster than cluster (0: unknown) counts for nothing.
func choosePromotion(facts []promotionFact, maxTL uint32, cluster uint64) (*node, error) {
	var cands []promotionFact
	for _, f := range facts {
		switch {
		case f.err != nil && f.candidate:
			// It may be the most advanced: promoting another would lose
			// the writes only it has. Once it is down, it is not waited for.
			return nil, &silentCandidate{f.n.name, f.err}
		case f.err != nil, cluster != 0 && f.sysid != cluster:
			continue
		case !f.inRecovery && f.timeline >= maxTL:
			return nil, fmt.Errorf("%s reports being a primary on timeline %d", f.n.name, f.timeline)
		case !f.inRecovery:
			continue // an old primary on an older timeline: fenced, never a candidate
		case f.receiver == "streaming" || f.receiver == "hidden":
			return nil, fmt.Errorf("%s's WAL receiver is %s", f.n.name, f.receiver)
		case f.timeline > maxTL:
			return nil, fmt.Errorf("%s follows timeline %d, newer than any seen", f.n.name, f.timeline)
		case f.timeline == maxTL:
			cands = append(cands, f)
		}
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("no replica on timeline %d answered", maxTL)
	}
	best := slices.MinFunc(cands, func(a, b promotionFact) int {
		return cmp.Or(cmp.Compare(b.replay, a.replay), cmp.Compare(b.receive, a.receive),
			cmp.Compare(a.started, b.started), cmp.Compare(a.port, b.port))
	})
	return best.n, nil
}

// promote asks every node for fresh facts, picks the replica to promote
// (choosePromotion) and runs pg_promote on it, outside the lock, then probes
// every node. When the facts forbid it, nothing is promoted and another
// full wait without a primary must pass before the next attempt.
func (db *DB) promote() {
	db.mu.Lock()
	maxTL, cluster, gen := db.hs.maxTimeline, db.hs.cluster, db.hs.primaryGen
	db.mu.Unlock()
	n, err := choosePromotion(db.askPromotionFacts(), maxTL, cluster)
	calledOff := err != nil
	if err == nil {
		ctx, cancel := context.WithTimeout(db.ctx, 30*time.Second)
		var ok bool
		err = n.db.QueryRowContext(ctx, "SELECT pg_promote(true, 25)", n.simple...).Scan(&ok)
		cancel()
		if err == nil && !ok {
			err = errors.New("pg_promote returned false")
		}
		if err != nil {
			err = nodeErr(n, "promote", err)
		}
	} else {
		err = fmt.Errorf("dbrouter: no promotion: %w", err)
	}
	now := db.cfg.clock.now()
	ev := db.event(EventPromoted, n, now, "", nil)
	if err != nil {
		ev = db.event(EventPromoteFailed, n, now, "", err)
	}
	db.mu.Lock()
	if !calledOff || calledOffReason(err) != db.hs.promoteFailed {
		db.queueLocked(ev)
	} // else called off again for the same reason: a lasting condition is told once, not every attempt
	db.hs.promoteFailed = ""
	if calledOff && db.hs.primaryGen == gen {
		db.hs.promoteFailed = calledOffReason(err) // unless a primary became known meanwhile: then the next outage tells it again
	}
	db.mu.Unlock()
	if ev.Kind == EventPromoted {
		db.probeAndApply(n) // see it as a primary before anything else decides
	}
	db.mu.Lock()
	db.hs.promoting = false
	// Another attempt only after n was probed again and another full wait
	// without a primary passed: the probes must first see what this one did.
	if ev.Kind == EventPromoted {
		db.hs.promoted = n
	}
	db.hs.lostAt = db.cfg.clock.now()
	db.mu.Unlock()
	db.probeAllNow()
}
