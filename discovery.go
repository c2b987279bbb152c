package dbrouter

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// A Discoverer says which database servers a DB routes over, and which of
// them the source says holds the leader role: Patroni's GET /cluster (see
// package patroni), a Kubernetes operator's endpoints, a cloud's API.
// OpenDiscovered asks it at start and then every WithDiscoveryInterval.
// Discover must return by ctx's deadline (10 s, or WithProbeTimeout if
// longer) and be safe to call from another goroutine than the one that made
// it; an error, or no member, leaves the DB with the members it knew.
type Discoverer interface {
	Discover(ctx context.Context) ([]Member, error)
}

// A Member is one database server a Discoverer reports.
type Member struct {
	// Name names the node in Status, events, errors and NodeNamed; unique
	// among the members.
	Name string
	// DSN opens it with the driver given to OpenDiscovered. A member whose
	// DSN changed is a new member.
	DSN string
	// Primary says the source holds this member to be the leader: then the
	// router sends writes to no other node, and lifts a fence it had set on
	// this one when it is the only node reporting not-in-recovery.
	Primary bool
	// NoLoadBalance keeps reads off this member (Patroni's noloadbalance
	// tag); it may still be the primary.
	NoLoadBalance bool
}

// DefaultDiscoveryInterval is how often OpenDiscovered's source is asked
// for the members while all is well; while no primary is known it is asked
// more often: see WithDiscoveryInterval.
const DefaultDiscoveryInterval = 3 * time.Second

// fastDiscovery is how often the source is asked while no primary is known.
const fastDiscovery = 250 * time.Millisecond

// discoveryTimeout is how long one Discover may take (or WithProbeTimeout,
// if longer): a source may try several endpoints in turn, each with a
// timeout of its own, and must have the time to reach the last.
const discoveryTimeout = 10 * time.Second

// WithDiscoveryInterval sets how often OpenDiscovered's Discoverer is asked
// for the members. While no primary is known, or a node that does not hold
// the leader role reports being a primary, it is asked every 250 ms (or
// every d, if shorter). Default DefaultDiscoveryInterval (3 s). Must be > 0.
func WithDiscoveryInterval(d time.Duration) Option {
	return func(c *config) { c.positive("WithDiscoveryInterval", d, &c.discoveryInterval) }
}

// OpenDiscovered returns a DB over the members d reports, opening each with
// sql.Open(driverName, member.DSN), and follows them: every
// WithDiscoveryInterval it asks d again. A member that joins is opened and
// probed before it serves anything; one that leaves gets no new statements,
// and is closed once its pool is idle (Status shows it draining until
// then); one whose DSN changed is a new member. Nodes are named by the
// members' names. Where d names a leader (Member.Primary), that is the only
// node that takes writes (see Member). When d cannot be reached, the DB
// keeps the last members it knew and its own rules, and says so in Status
// (Discovery) and an event, until d answers again.
//
// The first Discover must succeed (within 10 s, or WithProbeTimeout if that
// is longer), with at least one member. Close closes every handle opened.
// WithNames cannot be used: the members name the nodes.
func OpenDiscovered(driverName string, d Discoverer, opts ...Option) (*DB, error) {
	switch {
	case driverName == "":
		return nil, badArg("OpenDiscovered: empty driver name")
	case !slices.Contains(sql.Drivers(), driverName):
		return nil, badArg("OpenDiscovered: unknown driver %q (forgotten import?); registered: %v", driverName, sql.Drivers())
	case d == nil:
		return nil, badArg("OpenDiscovered: nil Discoverer")
	}
	cfg, err := newConfig(opts, 0)
	if err != nil {
		return nil, err
	}
	if cfg.names != nil {
		return nil, &OptionError{Option: "WithNames", Value: quoted(cfg.names), Reason: "the members name the nodes with OpenDiscovered"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(cfg.probeTimeout, discoveryTimeout))
	ms, err := d.Discover(ctx)
	cancel()
	if err == nil {
		err = checkMembers(ms)
	}
	if err == nil && len(ms) == 0 {
		err = errors.New("no member")
	}
	if err != nil {
		return nil, fmt.Errorf("dbrouter: OpenDiscovered: %w", err)
	}
	db := &DB{cfg: cfg, owned: true, driverName: driverName, disc: &discovery{d: d, driverName: driverName, now: make(chan struct{}, 1)}}
	db.ctx, db.cancel = context.WithCancel(context.Background())
	m := &members{byName: make(map[string]*node, len(ms))}
	for _, mb := range ms {
		n, err := db.openMember(mb)
		if err != nil {
			for _, n := range m.nodes {
				db.closeNode(n)
			}
			db.cancel()
			return nil, err
		}
		m.add(n)
	}
	db.drv = m.nodes[0].db.Driver()
	db.mem.Store(m)
	db.hs.source = discoveryStatus(true, nil, time.Now())
	db.setLeaderLocked(ms)
	db.face = sql.OpenDB(&connector{db: db})
	db.events.start(db.emit)
	db.startHealth()
	if !db.cfg.noBackground {
		db.wg.Add(1)
		go db.discoveryLoop()
	}
	return db, nil
}

// discovery is OpenDiscovered's part of a DB.
type discovery struct {
	d          Discoverer
	driverName string
	now        chan struct{} // size 1: a coalesced request to discover at once
}

// DiscoveryStatus is what Status says of OpenDiscovered's source.
type DiscoveryStatus struct {
	Reachable bool      // its last Discover succeeded
	Since     time.Time // when Reachable last changed
	LastError error     // of the last failed Discover, if any
	Leader    string    // the member it names leader; "" when none
}

func discoveryStatus(reachable bool, err error, now time.Time) *DiscoveryStatus {
	return &DiscoveryStatus{Reachable: reachable, Since: now, LastError: err}
}

// checkMembers refuses members a DB cannot tell apart or open.
func checkMembers(ms []Member) error {
	for i, m := range ms {
		switch {
		case m.Name == "":
			return fmt.Errorf("member %d has no name", i)
		case m.DSN == "":
			return fmt.Errorf("member %s has no DSN", m.Name)
		}
		for _, o := range ms[:i] {
			if o.Name == m.Name {
				return fmt.Errorf("member %s is listed twice", m.Name)
			}
		}
	}
	return nil
}

// openMember opens a node for member m, not yet probed: it serves nothing
// until a probe says what it is.
func (db *DB) openMember(m Member) (*node, error) {
	h, err := sql.Open(db.disc.driverName, m.DSN)
	if err != nil {
		return nil, fmt.Errorf("dbrouter: open member %s: %w", m.Name, err)
	}
	db.mu.Lock()
	db.pools.apply(h)
	db.mu.Unlock()
	role := RoleReplica
	if m.Primary {
		role = RolePrimary
	}
	n, err := db.newNode(m.Name, h, role, m.DSN)
	if err != nil {
		h.Close()
		return nil, err
	}
	n.dsn, n.member, n.noLoadBalance = m.DSN, true, m.NoLoadBalance
	return n, nil
}

// setLeaderLocked records which node the source names leader.
func (db *DB) setLeaderLocked(ms []Member) {
	db.hs.leader = nil
	db.hs.source.Leader = ""
	byName := db.mem.Load().byName
	for _, m := range ms {
		if m.Primary {
			if n := byName[m.Name]; n != nil && n.dsn == m.DSN {
				db.hs.leader = n
				db.hs.source.Leader = m.Name
			}
		}
	}
}

// askDiscovery asks the discovery loop to ask the source at once.
func (db *DB) askDiscovery() {
	if db.disc == nil {
		return
	}
	select {
	case db.disc.now <- struct{}{}:
	default:
	}
}

func (db *DB) discoveryLoop() {
	defer db.wg.Done()
	timer := time.NewTimer(db.discoveryDelay())
	defer timer.Stop()
	for {
		select {
		case <-db.ctx.Done():
			return
		case <-timer.C:
		case <-db.disc.now:
		}
		db.discover()
		timer.Reset(db.discoveryDelay())
	}
}

// discoveryDelay is how long the loop waits before it asks the source again.
func (db *DB) discoveryDelay() time.Duration {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.hs.primary == nil || db.hs.leader != db.hs.primary || !db.hs.source.Reachable {
		return min(fastDiscovery, db.cfg.discoveryInterval)
	}
	return db.cfg.discoveryInterval
}

// discover asks the source for the members, and makes the DB's nodes match:
// members that joined are opened and probed, those that left drained.
func (db *DB) discover() {
	ctx, cancel := context.WithTimeout(db.ctx, max(db.cfg.probeTimeout, discoveryTimeout))
	ms, err := db.disc.d.Discover(ctx)
	cancel()
	if err == nil {
		err = checkMembers(ms)
	}
	if err == nil && len(ms) == 0 {
		err = errors.New("no member")
	}
	now := db.cfg.clock.now()
	if err != nil {
		db.mu.Lock()
		if db.ctx.Err() == nil {
			if db.hs.source.Reachable {
				db.hs.source = discoveryStatus(false, err, now)
				db.queueLocked(db.event(EventSourceUnreachable, nil, now, "", err))
			}
			db.hs.source.LastError = err
			db.queueLocked(db.rebuildLocked(now)...) // its own rules again
		}
		db.mu.Unlock()
		return
	}

	var joined []*node
	for _, m := range ms { // opened outside the lock
		if n := db.mem.Load().byName[m.Name]; n == nil || n.dsn != m.DSN {
			n, err := db.openMember(m)
			if err != nil {
				db.logMember(m, err)
				continue
			}
			joined = append(joined, n)
		}
	}
	db.mu.Lock()
	if db.ctx.Err() != nil {
		db.mu.Unlock()
		for _, n := range joined {
			db.closeNode(n)
		}
		return
	}
	var events []Event
	if !db.hs.source.Reachable {
		db.hs.source = discoveryStatus(true, nil, now)
		events = append(events, db.event(EventSourceReachable, nil, now, "", nil))
	}
	old := db.mem.Load()
	next := &members{byName: make(map[string]*node, len(ms))}
	var left []*node
	for _, n := range old.nodes {
		i := slices.IndexFunc(ms, func(m Member) bool { return m.Name == n.name && m.DSN == n.dsn })
		if i < 0 {
			left = append(left, n)
			continue
		}
		n.noLoadBalance = ms[i].NoLoadBalance
		next.add(n)
	}
	for _, n := range joined {
		next.add(n)
		now := db.cfg.clock.now()
		n.h = nodeHealth{role: n.configured, since: now, bo: db.newBackoff()}
		events = append(events, db.event(EventMemberJoined, n, now, "", nil))
	}
	for _, n := range left {
		n.h.eligible = false
		if db.hs.promoted == n {
			db.hs.promoted = nil // it will not be probed again: it must not hold off the next promotion
		}
		db.hs.draining = append(db.hs.draining, n)
		events = append(events, db.event(EventMemberLeft, n, now, "", nil))
	}
	db.mem.Store(next)
	db.setLeaderLocked(ms)
	events = append(events, db.rebuildLocked(now)...)
	db.queueLocked(events...)
	db.mu.Unlock()

	for _, n := range left {
		n.stop() // its probe loop ends
		db.wg.Add(1)
		go db.drain(n)
	}
	for _, n := range joined {
		db.probeAndApply(n) // probed before it serves anything
		db.wg.Add(1)
		go db.probeLoop(n)
	}
}

// logMember logs a member that could not be opened.
func (db *DB) logMember(m Member, err error) {
	db.cfg.logger.Warn("dbrouter: member not opened", "node", m.Name, "error", err)
}

// drainPoll and drainTimeout bound how long a member that left is waited
// for to be idle before it is closed.
const (
	drainPoll    = 50 * time.Millisecond
	drainTimeout = time.Minute
)

// drain closes n, a member that left, once nothing of its pool is in use
// (or after drainTimeout), unless the DB closes first: Close closes it then.
func (db *DB) drain(n *node) {
	defer db.wg.Done()
	deadline := time.Now().Add(drainTimeout)
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for n.db.Stats().InUse > 0 && time.Now().Before(deadline) {
		select {
		case <-db.ctx.Done():
			return
		case <-tick.C:
		}
	}
	db.mu.Lock()
	i := slices.Index(db.hs.draining, n)
	if i < 0 || db.ctx.Err() != nil {
		db.mu.Unlock()
		return // Close took it
	}
	db.hs.draining = slices.Delete(db.hs.draining, i, i+1)
	db.mu.Unlock()
	if err := db.closeNode(n); err != nil {
		db.cfg.logger.Warn("dbrouter: closing a member that left", "node", n.name, "error", err)
	}
}
