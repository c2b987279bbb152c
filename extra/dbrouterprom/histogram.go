package dbrouterprom

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dbrouter/dbrouter"
)

// ErrInvalidOption is wrapped by the error NewStatementHistogram returns for
// an option value it refuses.
var ErrInvalidOption = errors.New("dbrouterprom: invalid option")

// StatementHistogram is a histogram of statement durations,
// dbrouter_statement_duration_seconds, by node and route ("read" or
// "write"). Pass its Observe to dbrouter.WithStatementHook and register it:
// it is a prometheus.Collector. It is safe for concurrent use.
type StatementHistogram struct {
	vec       *prometheus.HistogramVec
	observers atomic.Pointer[observers] // immutable; replaced whole by observer

	mu sync.Mutex // serializes replacing observers
}

var _ prometheus.Collector = (*StatementHistogram)(nil)

// observers are the histogram's observers by node, one map per route
// (string keys: the fastest lookup Go's maps have).
type observers struct {
	read, write map[string]prometheus.Observer
}

// of returns the map of the route a statement takes.
func (o *observers) of(write bool) map[string]prometheus.Observer {
	if write {
		return o.write
	}
	return o.read
}

// HistogramOption configures NewStatementHistogram.
type HistogramOption func(*histogramConfig)

type histogramConfig struct {
	buckets []float64
	errs    []error
}

// defaultBuckets are the upper bounds of the histogram's buckets, in
// seconds, from half a millisecond to ten seconds.
var defaultBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// WithBuckets sets the upper bounds of the histogram's buckets, in seconds,
// in increasing order (the +Inf bucket is always there). Default: 0.0005,
// 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10.
func WithBuckets(upperBounds ...float64) HistogramOption {
	return func(c *histogramConfig) {
		if len(upperBounds) == 0 {
			c.errs = append(c.errs, fmt.Errorf("%w: WithBuckets(): no bucket", ErrInvalidOption))
			return
		}
		for i, b := range upperBounds {
			if math.IsNaN(b) || (i > 0 && b <= upperBounds[i-1]) {
				c.errs = append(c.errs, fmt.Errorf("%w: WithBuckets(%v): must be numbers in increasing order", ErrInvalidOption, upperBounds))
				return
			}
		}
		c.buckets = append([]float64(nil), upperBounds...)
	}
}

// NewStatementHistogram returns an empty histogram of statement durations.
// It fails, wrapping ErrInvalidOption, for an option value it refuses.
func NewStatementHistogram(opts ...HistogramOption) (*StatementHistogram, error) {
	c := histogramConfig{buckets: defaultBuckets}
	for i, o := range opts {
		if o == nil {
			c.errs = append(c.errs, fmt.Errorf("%w: option %d is nil", ErrInvalidOption, i))
			continue
		}
		o(&c)
	}
	if err := errors.Join(c.errs...); err != nil {
		return nil, err
	}
	h := &StatementHistogram{vec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "dbrouter_statement_duration_seconds",
		Help:    "How long routed statements took, by the node that ran them and their route (read or write): until they ended, or, for a query, until its rows were returned.",
		Buckets: c.buckets,
	}, []string{"node", "route"})}
	h.observers.Store(&observers{read: map[string]prometheus.Observer{}, write: map[string]prometheus.Observer{}})
	return h, nil
}

// Observe records a statement's duration. It is meant for
// dbrouter.WithStatementHook; in the steady state (a node and route seen
// before) it takes no lock and allocates nothing. A statement that no node
// ran (dbrouter.ErrNoPrimary, dbrouter.ErrNoReplica) is not recorded.
func (h *StatementHistogram) Observe(s dbrouter.Statement) {
	if s.Node == "" {
		return
	}
	o, ok := h.observers.Load().of(s.Write)[s.Node]
	if !ok {
		o = h.observer(s.Node, s.Write)
	}
	o.Observe(s.Duration.Seconds())
}

// observer returns the observer of a node and route, adding it to the
// published set (a copy, replaced whole) when it is new.
func (h *StatementHistogram) observer(node string, write bool) prometheus.Observer {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.observers.Load()
	if o, ok := old.of(write)[node]; ok {
		return o
	}
	route := "read"
	if write {
		route = "write"
	}
	o, err := h.vec.GetMetricWithLabelValues(node, route)
	if err != nil {
		// A node name the registry would refuse (not valid UTF-8): that
		// node's statements are not recorded, rather than panicking.
		o = discard{}
	}
	next := *old // the other route's map is shared: it does not change
	m := maps.Clone(old.of(write))
	m[node] = o
	if write {
		next.write = m
	} else {
		next.read = m
	}
	h.observers.Store(&next)
	return o
}

// discard is an observer that records nothing.
type discard struct{}

func (discard) Observe(float64) {}

// Describe sends the histogram's description.
func (h *StatementHistogram) Describe(ch chan<- *prometheus.Desc) { h.vec.Describe(ch) }

// Collect sends the histogram's series, one per node and route seen.
func (h *StatementHistogram) Collect(ch chan<- prometheus.Metric) { h.vec.Collect(ch) }
