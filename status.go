package dbrouter

import (
	"database/sql"
	"slices"
	"time"
)

// Status is a snapshot of the router: which node is primary and, per node,
// its role, health, replication position, lag and counters. It is a copy;
// changing it changes nothing.
type Status struct {
	Primary string       // name of the current primary; "" when none is known
	Nodes   []NodeStatus // in configuration order: the configured primary first
	Events  []Event      // the last 100 events, oldest first

	EventCounts map[EventKind]uint64 // every event since Open or New, by kind

	// Discovery is OpenDiscovered's source as the DB last saw it; nil for
	// Open and New.
	Discovery *DiscoveryStatus
}

// NodeStatus is one node's part of a Status.
type NodeStatus struct {
	Name           string // host:port/dbname, or as set with WithNames; never a password
	ConfiguredRole Role   // as given to Open or New
	Role           Role   // as the probes report (the configured role until the first probe)
	State          State  // unknown, up, down or fenced
	Readable       bool   // serves reads now (an eligible replica)
	Since          time.Time
	Latency        time.Duration // of the last probe
	LastError      error         // of the last failed probe, if any
	LSN            uint64        // WAL position: current on a primary, replayed on a replica
	Timeline       uint32        // 0 when unknown
	Streaming      bool          // a replica's WAL receiver streams from a primary
	WALReceiver    string        // a replica's WAL receiver state: "streaming", "none" (not running), "hidden" (the probing role lacks pg_read_all_stats), …
	LagBytes       int64         // WAL bytes behind the primary
	LagTime        time.Duration // how long ago the primary was where this replica is
	LagExcluded    bool          // over WithMaxLag: serves no reads until it catches up
	StaleTimeline  bool          // on an older timeline than the primary: serves no reads

	Reads     uint64 // statements routed here as reads (queries, read-only transactions)
	Writes    uint64 // statements routed here as writes (Exec, write queries, transactions, Conn)
	Errors    uint64 // of those, the ones that failed
	Misroutes uint64 // reads this replica refused as writes (SQLSTATE 25006), run again on the primary
	Retries   uint64 // reads whose connection failed here, run again on another node

	Pool sql.DBStats // the node's pool, as its *sql.DB reports it (the probes' own connection aside)

	// Of members of OpenDiscovered's source:
	Leader        bool // the source names it leader
	NoLoadBalance bool // it serves no reads
	Draining      bool // it left the source: it gets no new statements, and is closed once idle (not listed while a member has its name)
}

// Status returns a snapshot of every node's state and counters.
func (db *DB) Status() Status {
	s, nodes := db.status()
	for i, n := range nodes {
		s.Nodes[i].Pool = n.db.Stats() // takes the pool's lock: not under DB.mu
	}
	return s
}

func (db *DB) status() (Status, []*node) {
	db.mu.Lock()
	defer db.mu.Unlock()
	var s Status
	if src := db.hs.source; src != nil {
		c := *src
		s.Discovery = &c
	}
	s.Events = db.recentLocked()
	s.EventCounts = make(map[EventKind]uint64)
	for k, n := range db.hs.eventCounts {
		if n > 0 {
			s.EventCounts[EventKind(k)] = n
		}
	}
	if db.hs.primary != nil {
		s.Primary = db.hs.primary.name
	}
	nodes := slices.Clone(db.nodeList())
	for _, n := range db.hs.draining {
		if !slices.ContainsFunc(nodes, func(m *node) bool { return m.name == n.name }) {
			nodes = append(nodes, n) // a member that moved (a new DSN) drains under the name the new one has: that one is listed
		}
	}
	s.Nodes = make([]NodeStatus, len(nodes))
	for i, n := range nodes {
		h := &n.h
		s.Nodes[i] = NodeStatus{
			Name:           n.name,
			ConfiguredRole: n.configured,
			Role:           h.role,
			State:          h.state(),
			Readable:       h.eligible,
			Since:          h.since,
			Latency:        h.latency,
			LastError:      h.lastErr,
			LSN:            h.lsn,
			Timeline:       h.timeline,
			Streaming:      h.receiver == "streaming",
			WALReceiver:    h.receiver,
			LagBytes:       h.lagBytes,
			LagTime:        h.lagTime,
			LagExcluded:    h.lagged,
			StaleTimeline:  h.staleTL,
			Reads:          n.reads.Load(),
			Writes:         n.writes.Load(),
			Errors:         n.errs.Load(),
			Misroutes:      n.misroutes.Load(),
			Retries:        n.retries.Load(),
			Leader:         n == db.hs.leader,
			NoLoadBalance:  n.noLoadBalance,
			Draining:       i >= len(db.nodeList()),
		}
	}
	return s, nodes
}

// Node returns the status of the node of that name, and whether there is one.
func (s Status) Node(name string) (NodeStatus, bool) {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return NodeStatus{}, false
}
