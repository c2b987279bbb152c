package dbrouterprom

import (
	"database/sql"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/fakedriver"
)

func TestMain(m *testing.M) {
	// pgx's asyncClose may still be telling a server to cancel a query in
	// the background after its caller gave up; it ends by its own deadline.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgconn.(*PgConn).asyncClose.func1"))
}

// fakeNodes is a primary and replicas on the fake driver, which answer every
// query with their name.
type fakeNodes struct {
	conns []*fakedriver.Connector // [0] primary
	dbs   []*sql.DB
}

func newFakeNodes(t testing.TB, replicas int) *fakeNodes {
	t.Helper()
	conns, dbs := fakedriver.Nodes(t, replicas)
	return &fakeNodes{conns: conns, dbs: dbs}
}

// router returns a DB over f with ping-only probes (the fake driver is not
// PostgreSQL) plus opts, closed when the test ends.
func (f *fakeNodes) router(t testing.TB, opts ...dbrouter.Option) *dbrouter.DB {
	t.Helper()
	db, err := dbrouter.New(f.dbs[0], f.dbs[1:], append([]dbrouter.Option{dbrouter.WithDialect(dbrouter.Generic())}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

// fixed is a collector that exports s.
func fixed(s dbrouter.Status) prometheus.Collector {
	return &collector{status: func() dbrouter.Status { return s }}
}

// gather registers cs on a pedantic registry (which checks that every
// metric collected was described, and consistently) and gathers them.
func gather(t testing.TB, cs ...prometheus.Collector) []*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cs {
		require.NoError(t, reg.Register(c))
	}
	mfs, err := reg.Gather()
	require.NoError(t, err)
	return mfs
}

// values returns every counter and gauge of mfs, and every histogram's
// sample count, keyed as the text format writes a series:
// `name{label="value",…}` with the labels sorted.
func values(mfs []*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+strconv.Quote(l.GetValue()))
			}
			slices.Sort(labels)
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}
