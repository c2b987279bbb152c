package dbrouter

import "context"

// A Router is a custom routing rule, like a Django DATABASE_ROUTERS entry. It
// sees every statement before the built-in rules: query is the SQL ("" for
// BeginTx and Conn), write whether the statement may write (Exec, a write
// query, a read-write transaction, Conn). It answers a Target; Default leaves
// the choice to the next router and finally to the built-in rules.
//
// Whatever a router answers, a write never goes to a replica, and a node that
// is down, fenced or over the lag limit is never chosen: then the built-in
// rules decide. Routers run on the hot path and must not block.
type Router func(ctx context.Context, query string, write bool) Target

// A Target is a Router's answer.
type Target struct {
	kind targetKind
	name string
}

type targetKind uint8

const (
	targetDefault targetKind = iota
	targetPrimary
	targetReplica
	targetNode
)

var (
	// Default leaves the choice to the next router, then to the built-in rules.
	Default = Target{}
	// Primary sends the statement to the current primary.
	Primary = Target{kind: targetPrimary}
	// Replica sends a read to a replica chosen by the balancer (the primary
	// when none is eligible and fallback is on). Writes still go to the
	// primary.
	Replica = Target{kind: targetReplica}
)

// NodeNamed sends the statement to the node of that name (see WithNames): a
// read to that node if it is eligible, a write only if that node is the
// current primary. Otherwise, and for unknown names, the built-in rules decide.
func NodeNamed(name string) Target { return Target{kind: targetNode, name: name} }

// String returns "default", "primary", "replica" or "node(NAME)".
func (t Target) String() string {
	switch t.kind {
	case targetPrimary:
		return "primary"
	case targetReplica:
		return "replica"
	case targetNode:
		return "node(" + t.name + ")"
	}
	return "default"
}

// UsePrimary returns a context under which every statement goes to the
// primary, reads included: Django's using("default"). Use it for a read that
// must see the latest committed data, without a session.
func UsePrimary(ctx context.Context) context.Context {
	r := routeOf(ctx)
	r.usePrimary = true
	return context.WithValue(ctx, ctxKey{}, r)
}
