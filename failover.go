package dbrouter

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

	var primary *node
	if roles {
		for _, n := range db.nodes {
			if n.h.up && n.h.probed && n.h.timeline > hs.maxTimeline {
				hs.maxTimeline = n.h.timeline
			}
		}
		for _, n := range db.nodes {
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
	} else if n0 := db.nodes[0]; n0.h.up {
		primary = n0
	}

	for _, n := range db.nodes {
		fenced := roles && n.h.probed && n.h.up && n.h.role == RolePrimary && n != primary
		if fenced != n.h.fenced {
			n.h.fenced, n.h.since = fenced, now
			kind := EventUnfenced
			if fenced {
				kind = EventFenced
			}
			events = append(events, db.event(kind, n, now, "", nil))
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
			if primary != hs.lastPrimary {
				hs.samples = hs.samples[:0] // another node's WAL: positions start again
			}
			hs.lastPrimary = primary
			for _, n := range db.nodes {
				n.h.streamed = false // votes count only for streaming from this primary
			}
		}
		hs.primary = primary
	}

	var replicas []*node
	for _, n := range db.nodes {
		if n == primary {
			n.h.eligible = false
			continue
		}
		staleTL := n.h.staleTL
		switch {
		case !roles || !n.h.probed:
			staleTL = false
		case primary != nil:
			staleTL = n.h.timeline != 0 && n.h.timeline < primary.h.timeline
		case n.h.streamTL != 0:
			// No primary: what it last streamed is exact, so it is
			// behind if a newer timeline was seen anywhere.
			staleTL = n.h.streamTL < hs.maxTimeline
		}
		lagged := db.lagLocked(n, now)
		eligible := n.h.up && !n.h.fenced && n.h.role == RoleReplica && !staleTL && !lagged
		if n.h.up && !n.h.fenced && n.h.role == RoleReplica {
			switch {
			case !eligible && n.h.eligible:
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
	for {
		select {
		case <-t.changed:
			t = db.table.Load()
			if t.primary != nil {
				return t.primary, nil
			}
		case <-timer.C:
			return nil, fmt.Errorf("%w (waited %v)", ErrNoPrimary, db.cfg.primaryWait)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrNoPrimary, ctx.Err())
		case <-db.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// promotionCandidateLocked returns the replica to promote, when automatic
// promotion is on, no primary has been reachable for the configured time,
// and the replicas agree the primary is gone: none reports a streaming WAL
// receiver, and at least one that was seen streaming no longer does (a
// network cut between the application and the primary alone must not
// promote; nor may replicas that never stream, e.g. fed from an archive,
// vote). A replica whose receiver state the probing role may not see (no
// pg_read_all_stats) counts as streaming, so such a role never promotes.
// Only replicas on the newest timeline are candidates (one left behind on an
// older timeline lacks the newer writes); among them the highest replayed
// WAL position wins.
func (db *DB) promotionCandidateLocked(now time.Time) *node {
	hs := &db.hs
	if !db.cfg.autoPromote || !db.cfg.dialect.knowsRoles() || hs.primary != nil || hs.promoting ||
		hs.promoted != nil || now.Sub(hs.lostAt) < db.cfg.autoPromoteAfter {
		return nil
	}
	var best *node
	voters := 0
	for _, n := range db.nodes {
		if !n.h.probed || !n.h.up || n.h.role != RoleReplica {
			continue
		}
		if n.h.receiver == "streaming" || n.h.receiver == "hidden" {
			// It streams from a primary we cannot reach, or we cannot tell.
			return nil
		}
		if n.h.streamed {
			voters++
		}
		if n.h.staleTL || n.h.timeline < hs.maxTimeline {
			continue
		}
		if best == nil || n.h.lsn > best.h.lsn {
			best = n
		}
	}
	if best == nil || voters == 0 {
		return nil
	}
	hs.promoting = true
	return best
}

// promote runs pg_promote on n, outside the lock, then probes every node.
func (db *DB) promote(n *node) {
	ctx, cancel := context.WithTimeout(db.ctx, 30*time.Second)
	var ok bool
	err := n.db.QueryRowContext(ctx, "SELECT pg_promote(true, 25)").Scan(&ok)
	cancel()
	if err == nil && !ok {
		err = errors.New("pg_promote returned false")
	}
	now := db.cfg.clock.now()
	ev := db.event(EventPromoted, n, now, "", nil)
	if err != nil {
		ev = db.event(EventPromoteFailed, n, now, "", nodeErr(n, "promote", err))
	}
	db.mu.Lock()
	db.events.push(ev)
	db.mu.Unlock()
	if err == nil {
		db.probeAndApply(n) // see it as a primary before anything else decides
	}
	db.mu.Lock()
	db.hs.promoting = false
	// Another attempt only after n was probed again and another full wait
	// without a primary passed: the probes must first see what this one did.
	db.hs.promoted = n
	db.hs.lostAt = db.cfg.clock.now()
	db.mu.Unlock()
	db.probeAllNow()
}
