package dbrouterprom

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter"
)

func newHistogram(t testing.TB, opts ...HistogramOption) *StatementHistogram {
	t.Helper()
	h, err := NewStatementHistogram(opts...)
	require.NoError(t, err)
	return h
}

func TestStatementHistogram(t *testing.T) {
	h := newHistogram(t, WithBuckets(0.01, 0.1, 1))
	for _, s := range []dbrouter.Statement{
		{Node: "db1", Write: true, Reason: dbrouter.ReasonWrite, Duration: 5 * time.Millisecond},
		{Node: "db2", Reason: dbrouter.ReasonRead, Duration: 50 * time.Millisecond},
		{Node: "db2", Reason: dbrouter.ReasonRead, Duration: 50 * time.Millisecond, Err: errors.New("failed")},
		{Node: "db2", Reason: dbrouter.ReasonRead, Duration: 2 * time.Second},
		{Node: "db1", Reason: dbrouter.ReasonFallback, Duration: 500 * time.Millisecond},
		{Node: "", Write: true, Reason: dbrouter.ReasonWrite, Duration: time.Second, Err: dbrouter.ErrNoPrimary},
	} {
		h.Observe(s)
	}
	const want = `
# HELP dbrouter_statement_duration_seconds How long routed statements took, by the node that ran them and their route (read or write): until they ended, or, for a query, until its rows were returned.
# TYPE dbrouter_statement_duration_seconds histogram
dbrouter_statement_duration_seconds_bucket{node="db1",route="read",le="0.01"} 0
dbrouter_statement_duration_seconds_bucket{node="db1",route="read",le="0.1"} 0
dbrouter_statement_duration_seconds_bucket{node="db1",route="read",le="1"} 1
dbrouter_statement_duration_seconds_bucket{node="db1",route="read",le="+Inf"} 1
dbrouter_statement_duration_seconds_sum{node="db1",route="read"} 0.5
dbrouter_statement_duration_seconds_count{node="db1",route="read"} 1
dbrouter_statement_duration_seconds_bucket{node="db1",route="write",le="0.01"} 1
dbrouter_statement_duration_seconds_bucket{node="db1",route="write",le="0.1"} 1
dbrouter_statement_duration_seconds_bucket{node="db1",route="write",le="1"} 1
dbrouter_statement_duration_seconds_bucket{node="db1",route="write",le="+Inf"} 1
dbrouter_statement_duration_seconds_sum{node="db1",route="write"} 0.005
dbrouter_statement_duration_seconds_count{node="db1",route="write"} 1
dbrouter_statement_duration_seconds_bucket{node="db2",route="read",le="0.01"} 0
dbrouter_statement_duration_seconds_bucket{node="db2",route="read",le="0.1"} 2
dbrouter_statement_duration_seconds_bucket{node="db2",route="read",le="1"} 2
dbrouter_statement_duration_seconds_bucket{node="db2",route="read",le="+Inf"} 3
dbrouter_statement_duration_seconds_sum{node="db2",route="read"} 2.1
dbrouter_statement_duration_seconds_count{node="db2",route="read"} 3
`
	assert.NoError(t, testutil.CollectAndCompare(h, strings.NewReader(want)))
	problems, err := testutil.CollectAndLint(h)
	require.NoError(t, err)
	assert.Empty(t, problems)
}

func TestStatementHistogramDefaultBuckets(t *testing.T) {
	h := newHistogram(t)
	h.Observe(dbrouter.Statement{Node: "db1", Duration: time.Millisecond})
	mfs := gather(t, h)
	require.Len(t, mfs, 1)
	var bounds []float64
	for _, b := range mfs[0].GetMetric()[0].GetHistogram().GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
	}
	assert.Equal(t, defaultBuckets, bounds)
}

func TestStatementHistogramOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []HistogramOption
	}{
		{"no bucket", []HistogramOption{WithBuckets()}},
		{"decreasing", []HistogramOption{WithBuckets(1, 0.5)}},
		{"repeated", []HistogramOption{WithBuckets(0.1, 0.1)}},
		{"NaN", []HistogramOption{WithBuckets(0.1, math.NaN())}},
		{"nil option", []HistogramOption{nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := NewStatementHistogram(tc.opts...)
			assert.Nil(t, h)
			assert.ErrorIs(t, err, ErrInvalidOption)
		})
	}
	buckets := []float64{0.1, 1}
	h := newHistogram(t, WithBuckets(buckets...))
	buckets[0] = 5 // the option kept a copy
	h.Observe(dbrouter.Statement{Node: "db1", Duration: 200 * time.Millisecond})
	assert.Equal(t, 0.1, gather(t, h)[0].GetMetric()[0].GetHistogram().GetBucket()[0].GetUpperBound())
}

func TestStatementHistogramFromDB(t *testing.T) {
	ctx := context.Background()
	h := newHistogram(t)
	f := newFakeNodes(t, 2)
	db := f.router(t, dbrouter.WithStatementHook(h.Observe))
	for range 4 {
		var node string
		require.NoError(t, db.QueryRowContext(ctx, "SELECT 1").Scan(&node))
	}
	_, err := db.ExecContext(ctx, "DELETE FROM t")
	require.NoError(t, err)

	v := values(gather(t, h, NewCollector(db)))
	assert.Equal(t, 1.0, v[`dbrouter_statement_duration_seconds{node="primary",route="write"}`])
	assert.Equal(t, 4.0, v[`dbrouter_statement_duration_seconds{node="replica1",route="read"}`]+v[`dbrouter_statement_duration_seconds{node="replica2",route="read"}`])
	// As many as the collector counted.
	assert.Equal(t, v[`dbrouter_statements_total{node="replica1",route="read"}`], v[`dbrouter_statement_duration_seconds{node="replica1",route="read"}`])
}

func TestStatementHistogramConcurrent(t *testing.T) {
	h := newHistogram(t)
	const goroutines, each = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				// New label pairs appear while others are observed.
				node := "db" + strconv.Itoa((g+i)%5)
				h.Observe(dbrouter.Statement{Node: node, Write: i%2 == 0, Duration: time.Millisecond})
			}
		})
	}
	wg.Wait()
	var total float64
	v := values(gather(t, h))
	for _, n := range v {
		total += n
	}
	assert.Equal(t, float64(goroutines*each), total)
	assert.Len(t, v, 10, "5 nodes, 2 routes")
}

func TestStatementHistogramBadNodeName(t *testing.T) {
	h := newHistogram(t)
	h.Observe(dbrouter.Statement{Node: "db\xff", Duration: time.Millisecond}) // not recorded, no panic
	h.Observe(dbrouter.Statement{Node: "db2", Duration: time.Millisecond})
	assert.Equal(t, map[string]float64{`dbrouter_statement_duration_seconds{node="db2",route="read"}`: 1}, values(gather(t, h)))
}

func TestStatementHistogramObserveAllocs(t *testing.T) {
	h := newHistogram(t)
	s := dbrouter.Statement{Node: "db1:5432/app", Reason: dbrouter.ReasonRead, Duration: 3 * time.Millisecond}
	h.Observe(s) // the first for a label pair makes its observer
	assert.Zero(t, testing.AllocsPerRun(1000, func() { h.Observe(s) }))
}

// BenchmarkObserve is Observe beside the least it can do: the same
// observation on a prometheus.Observer already curried for its labels.
func BenchmarkObserve(b *testing.B) {
	s := dbrouter.Statement{Node: "db1:5432/app", Reason: dbrouter.ReasonRead, Duration: 3 * time.Millisecond}
	b.Run("StatementHistogram", func(b *testing.B) {
		h, err := NewStatementHistogram()
		require.NoError(b, err)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				h.Observe(s)
			}
		})
	})
	b.Run("prometheus.Observer", func(b *testing.B) {
		vec := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "x_seconds", Help: "x", Buckets: defaultBuckets}, []string{"node", "route"})
		o := vec.WithLabelValues(s.Node, "read")
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				o.Observe(s.Duration.Seconds())
			}
		})
	})
}
