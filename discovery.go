package dbrouter

import (
	"context"
	"time"
)

// A Discoverer says which database servers a DB routes over, and which of
// them the source says holds the leader role: Patroni's GET /cluster (see
// package patroni), a Kubernetes operator's endpoints, a cloud's API.
// OpenDiscovered asks it at start and then every WithDiscoveryInterval.
// Discover must return promptly (bound it by ctx) and be safe to call from
// another goroutine than the one that made it.
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

// WithDiscoveryInterval sets how often OpenDiscovered's Discoverer is asked
// for the members. While no primary is known, or a node that does not hold
// the leader role reports being a primary, it is asked every 250 ms (or
// every d, if shorter). Default DefaultDiscoveryInterval (3 s). Must be > 0.
func WithDiscoveryInterval(d time.Duration) Option {
	return func(c *config) { c.positive("WithDiscoveryInterval", d, &c.discoveryInterval) }
}
