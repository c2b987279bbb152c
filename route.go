package dbrouter

import (
	"context"
	"math/rand/v2"
	"slices"
)

// table is an immutable routing snapshot. Readers load it with one atomic
// load and never lock; the health code builds a new one on every change.
type table struct {
	primary  *node   // nil when no primary is known
	replicas []*node // replicas eligible for reads, in configuration order
	changed  chan struct{}
}

func (t *table) readable(n *node) bool {
	return n == t.primary || slices.Contains(t.replicas, n)
}

// ctxKey is the context key of a ctxRoute.
type ctxKey struct{}

// ctxRoute is what a context says about routing: UsePrimary, and the
// session of WithSession. Both live under one key, so a statement looks the
// context up once.
type ctxRoute struct {
	usePrimary bool
	session    *Session
}

func routeOf(ctx context.Context) ctxRoute {
	r, _ := ctx.Value(ctxKey{}).(ctxRoute)
	return r
}

// decision is where route sends a statement, and why.
type decision struct {
	n      *node
	pinned bool // the node was demanded (UsePrimary, a custom router's Primary or NodeNamed): a failed read is not run elsewhere
	why    Reason
}

// route chooses the node for a statement. write is true for anything that
// may write. It never returns a replica for a write, nor a node that is not
// eligible.
func (db *DB) route(ctx context.Context, rc ctxRoute, query string, write bool) (decision, error) {
	t := db.table.Load()
	if rc == (ctxRoute{}) && len(db.cfg.routers) == 0 {
		// The common case, in as few steps as possible: no session, no
		// custom router, UsePrimary not asked for.
		if write {
			if t.primary != nil {
				return decision{n: t.primary, why: ReasonWrite}, nil
			}
		} else if len(t.replicas) > 0 {
			return decision{n: db.cfg.balancer.pick(t.replicas), why: ReasonRead}, nil
		}
	}
	if rc.usePrimary {
		n, err := db.primaryNode(ctx)
		return decision{n: n, pinned: true, why: ReasonRouter}, err
	}
	for _, r := range db.cfg.routers {
		if tg := r(ctx, query, write); tg.kind != targetDefault {
			if d, ok, err := db.routeTo(ctx, rc, t, tg, write); ok {
				return d, err
			}
			break // an answer the router may not have: the built-in rules decide
		}
	}
	if write {
		n, err := db.primaryNode(ctx)
		return decision{n: n, why: ReasonWrite}, err
	}
	n, why, err := db.replicaNode(ctx, rc, t, nil)
	return decision{n: n, why: why}, err
}

// routeTo honours a custom router's answer tg, when safety allows; ok is
// false when it does not and the built-in rules must decide.
func (db *DB) routeTo(ctx context.Context, rc ctxRoute, t *table, tg Target, write bool) (d decision, ok bool, err error) {
	switch tg.kind {
	case targetPrimary:
		n, err := db.primaryNode(ctx)
		return decision{n: n, pinned: true, why: ReasonRouter}, true, err
	case targetReplica:
		if write {
			return d, false, nil
		}
		n, why, err := db.replicaNode(ctx, rc, t, nil)
		if why == ReasonRead {
			why = ReasonRouter
		}
		return decision{n: n, why: why}, true, err
	case targetNode:
		n := db.mem.Load().byName[tg.name]
		if n != nil && n == t.primary {
			return decision{n: n, pinned: true, why: ReasonRouter}, true, nil
		}
		if n == nil || write || !t.readable(n) {
			return d, false, nil
		}
		// A session must not lose its writes to the router's choice; when
		// it overrules it, the same answer picks another reader.
		replicas, usePrimary, err := db.readers(ctx, rc, t)
		if err != nil {
			return d, true, err
		}
		if !usePrimary && slices.Contains(replicas, n) {
			return decision{n: n, pinned: true, why: ReasonRouter}, true, nil
		}
		n, _, err = db.pickReader(ctx, replicas, usePrimary, nil)
		return decision{n: n, why: ReasonSession}, true, err
	}
	return d, false, nil
}

// primaryNode returns the current primary, waiting for one (WithPrimaryWait,
// bounded by ctx) while none is known.
func (db *DB) primaryNode(ctx context.Context) (*node, error) {
	t := db.table.Load()
	if t.primary != nil {
		return t.primary, nil
	}
	return db.waitPrimary(ctx, t)
}

// replicaNode picks an eligible replica for a read, other than avoid, or
// falls back to the primary, and says why.
func (db *DB) replicaNode(ctx context.Context, rc ctxRoute, t *table, avoid *node) (*node, Reason, error) {
	replicas, usePrimary, err := db.readers(ctx, rc, t)
	if err != nil {
		return nil, ReasonSession, err
	}
	n, why, err := db.pickReader(ctx, replicas, usePrimary, avoid)
	if why == ReasonRead && rc.session != nil && len(replicas) < len(t.replicas) {
		why = ReasonSession // only the replicas that have the session's writes
	}
	return n, why, err
}

// readers returns the replicas of t that may serve a read: every eligible
// one, or those the session of rc allows; usePrimary when only the primary
// may (see sessionReplicas for err).
func (db *DB) readers(ctx context.Context, rc ctxRoute, t *table) (replicas []*node, usePrimary bool, err error) {
	if rc.session != nil {
		return db.sessionReplicas(ctx, rc.session, t)
	}
	return t.replicas, false, nil
}

// pickReader picks among replicas (as readers returned them) for a read,
// other than avoid, or falls back to the primary, and says why.
func (db *DB) pickReader(ctx context.Context, replicas []*node, usePrimary bool, avoid *node) (*node, Reason, error) {
	if usePrimary {
		n, err := db.primaryNode(ctx)
		return n, ReasonSession, err
	}
	if avoid != nil {
		// A retry: any other replica, without moving the balancer on (a
		// round-robin counter advanced twice would send every next read to
		// the failing replica first).
		others := slices.DeleteFunc(slices.Clone(replicas), func(n *node) bool { return n == avoid })
		if len(others) > 0 {
			return others[rand.IntN(len(others))], ReasonRetry, nil
		}
		replicas = nil
	}
	if len(replicas) > 0 {
		return db.cfg.balancer.pick(replicas), ReasonRead, nil
	}
	if !db.cfg.replicaFallback {
		return nil, ReasonFallback, ErrNoReplica
	}
	n, err := db.primaryNode(ctx)
	if avoid != nil {
		return n, ReasonRetry, err
	}
	return n, ReasonFallback, err
}
