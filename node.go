package dbrouter

import (
	"database/sql"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Role is what a node is: as configured, or as its probes report.
type Role uint8

const (
	RoleUnknown Role = iota
	RolePrimary
	RoleReplica
)

// String returns "primary", "replica" or "unknown".
func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleReplica:
		return "replica"
	}
	return "unknown"
}

// State is a node's health as the probes see it.
type State uint8

const (
	// StateUnknown: not probed yet; the configured role is trusted.
	StateUnknown State = iota
	// StateUp: the last probe succeeded.
	StateUp
	// StateDown: the last WithFailureThreshold probes failed.
	StateDown
	// StateFenced: the node says it is a primary but another primary on a
	// higher timeline won; it serves nothing until it reports in recovery.
	StateFenced
)

// String returns "up", "down", "fenced" or "unknown".
func (s State) String() string {
	switch s {
	case StateUp:
		return "up"
	case StateDown:
		return "down"
	case StateFenced:
		return "fenced"
	}
	return "unknown"
}

// node is one database server behind the router.
type node struct {
	reads     atomic.Uint64
	writes    atomic.Uint64
	errs      atomic.Uint64
	misroutes atomic.Uint64
	retries   atomic.Uint64
	replayed  atomic.Uint64 // last known WAL position (replayed on a replica); read by sessions

	name       string
	index      int // position in DB.nodes
	db         *sql.DB
	configured Role
	probeNow   chan struct{} // size 1: a coalesced request to probe at once

	probeMu     sync.Mutex // serializes probes of this node; protects following fields
	probeConn   *sql.Conn  // kept for probes; nil until the next probe takes one
	probeConnAt time.Time  // when probeConn was taken

	h nodeHealth // protected by DB.mu
}

// nodeHealth is a node's probed state. It is protected by DB.mu.
type nodeHealth struct {
	probed   bool // a probe has finished
	up       bool
	fails    int  // consecutive failed probes
	role     Role // observed; the configured role until a probe says
	fenced   bool
	eligible bool // serves reads now
	lsn      uint64
	timeline uint32
	receiver string // WAL receiver state, see probeResult
	streamed bool   // seen streaming since the current primary was chosen: may vote for a promotion
	latency  time.Duration
	lastErr  error
	since    time.Time // when state or role last changed
	lagBytes int64
	lagTime  time.Duration
	lagged   bool // excluded from reads for lag
	staleTL  bool // excluded from reads for being on an older timeline
	bo       *backoff.ExponentialBackOff
}

func (h *nodeHealth) state() State {
	switch {
	case !h.probed:
		return StateUnknown
	case !h.up:
		return StateDown
	case h.fenced:
		return StateFenced
	}
	return StateUp
}

// count records a statement routed to n.
func (n *node) count(write bool, err error) {
	if write {
		n.writes.Add(1)
	} else {
		n.reads.Add(1)
	}
	if err != nil {
		n.errs.Add(1)
	}
}

// askProbe asks n's probe loop for a probe at once; a request already
// waiting covers this one.
func (n *node) askProbe() {
	select {
	case n.probeNow <- struct{}{}:
	default:
	}
}
