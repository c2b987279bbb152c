package dbrouter

import (
	"context"
	"time"
)

// Reason says why a statement went to the node that ran it.
type Reason uint8

const (
	ReasonRead        Reason = iota + 1 // a read, on a replica the balancer picked
	ReasonWrite                         // a write, on the primary
	ReasonTransaction                   // a transaction (or a statement in one), on its node
	ReasonSession                       // a session's reads that replicas lack (or a connection's own writes) kept it on the primary, or on a replica that has them
	ReasonRouter                        // a custom router, or UsePrimary, chose the node
	ReasonFallback                      // a read on the primary, no replica being eligible
	ReasonRetry                         // a read run again on another node, its connection having failed
	ReasonMisroute                      // a read run again on the primary, a replica having refused it as something only a primary can run
)

// String returns the reason as dashboards and the status page show it:
// "read", "write", "transaction", "session", "custom router", "fallback",
// "retry" or "misroute".
func (r Reason) String() string {
	switch r {
	case ReasonRead:
		return "read"
	case ReasonWrite:
		return "write"
	case ReasonTransaction:
		return "transaction"
	case ReasonSession:
		return "session"
	case ReasonRouter:
		return "custom router"
	case ReasonFallback:
		return "fallback"
	case ReasonRetry:
		return "retry"
	case ReasonMisroute:
		return "misroute"
	}
	return "unknown"
}

// Statement is one routed statement, as the hook given to WithStatementHook
// sees it: what ran where, why, how long it took and how it ended.
type Statement struct {
	Node     string        // the node that ran it; "" when none could (ErrNoPrimary, ErrNoReplica)
	Reason   Reason        // why it went there
	Write    bool          // it may write
	Query    string        // its SQL; "" for BEGIN
	Start    time.Time     // when it was routed
	Duration time.Duration // until it ended, or, for a query, until its rows were returned
	Err      error         // its error, if any
	// Context is the context the statement ran with: the caller's trace
	// span and request values (examples/otel parents its spans on it).
	Context context.Context
}

// WithStatementHook calls h after every routed statement, of the DB and of
// its SQL() face, on the goroutine that ran it: metrics, tracing, the node
// that served a request. A statement run twice (a retry, a misroute) is
// reported twice. h must be quick and must not block. Unset, it costs
// nothing (not even reading the clock). Default: none.
func WithStatementHook(h func(Statement)) Option {
	return func(c *config) {
		if h == nil {
			c.fail("WithStatementHook", nil, "must not be nil")
			return
		}
		c.stmtHook = h
	}
}

// hookStart is when a statement starts, for the statement hook: the zero
// time, without reading the clock, when none is set.
func (db *DB) hookStart() time.Time {
	if db.cfg.stmtHook == nil {
		return time.Time{}
	}
	return time.Now()
}

// observe passes a statement that started at start (see hookStart) to the
// statement hook, if one is set. Both are small enough to be inlined: unset,
// the hook costs a nil check.
func (db *DB) observe(ctx context.Context, start time.Time, n *node, why Reason, query string, write bool, err error) {
	if db.cfg.stmtHook != nil {
		db.report(ctx, start, n, why, query, write, err)
	}
}

// report calls the statement hook.
func (db *DB) report(ctx context.Context, start time.Time, n *node, why Reason, query string, write bool, err error) {
	s := Statement{Reason: why, Write: write, Query: query, Start: start, Duration: time.Since(start), Err: err, Context: ctx}
	if n != nil {
		s.Node = n.name
	}
	db.cfg.stmtHook(s)
}
