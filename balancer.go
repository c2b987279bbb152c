package dbrouter

import (
	"math/rand/v2"
	"sync/atomic"
)

// A Balancer chooses which eligible replica serves a read. Its choice runs
// on every read, over the routing table's immutable list of eligible
// replicas, and never blocks. Make one with RoundRobin, Random or
// LeastInFlight; each DB needs its own.
type Balancer interface {
	pick(replicas []*node) *node
}

// RoundRobin returns a Balancer that takes the eligible replicas in turn,
// starting at a random one: one atomic add per read. It is the default.
func RoundRobin() Balancer {
	b := &roundRobin{}
	b.next.Store(rand.Uint64())
	return b
}

type roundRobin struct{ next atomic.Uint64 }

func (b *roundRobin) pick(replicas []*node) *node {
	return replicas[turn(b.next.Add(1)-1, len(replicas))]
}

// turn returns x modulo n, without a division when n is a power of two (one
// or two replicas, most often).
func turn(x uint64, n int) uint64 {
	if m := uint64(n); m&(m-1) == 0 {
		return x & (m - 1)
	}
	return x % uint64(n)
}

// Random returns a Balancer that picks an eligible replica uniformly at random.
func Random() Balancer { return random{} }

type random struct{}

func (random) pick(replicas []*node) *node { return replicas[rand.IntN(len(replicas))] }

// LeastInFlight returns a Balancer that picks the eligible replica with the
// fewest connections in use (sql.DBStats.InUse: running statements and open
// Rows), taking replicas in turn among equals. Reading those counts takes
// each replica pool's lock, so it costs more per read than RoundRobin.
func LeastInFlight() Balancer {
	b := &leastInFlight{}
	b.next.Store(rand.Uint64())
	return b
}

type leastInFlight struct{ next atomic.Uint64 }

func (b *leastInFlight) pick(replicas []*node) *node {
	start := int(turn(b.next.Add(1)-1, len(replicas)))
	best, bestUse := replicas[start], replicas[start].db.Stats().InUse
	for i := 1; i < len(replicas) && bestUse > 0; i++ {
		n := replicas[(start+i)%len(replicas)]
		if use := n.db.Stats().InUse; use < bestUse {
			best, bestUse = n, use
		}
	}
	return best
}
