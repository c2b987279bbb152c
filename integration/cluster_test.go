package integration

import (
	"github.com/dbrouter/dbrouter"

	"context"
	"database/sql"
	"log"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver

	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

// Integration tests run on a real PostgreSQL primary and streaming replicas
// from internal/pgcluster (local binaries, or Docker with
// DBROUTER_TEST_BACKEND=docker). They are skipped only under -short; when no
// backend can start they fail, saying how to get one.

var shared struct {
	once sync.Once
	c    *pgcluster.Cluster
	err  error
}

// sharedCluster returns a primary + 2 replicas shared by the tests that do
// not break nodes. Tests that crash, freeze or promote start their own with
// newCluster.
func sharedCluster(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	skipShort(t)
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		began := time.Now()
		shared.c, shared.err = pgcluster.Start(ctx, pgcluster.Options{Replicas: 2, Logf: log.Printf})
		if shared.err == nil {
			log.Printf("shared cluster (%s backend): primary + 2 replicas up in %v", shared.c.Backend(), time.Since(began).Round(time.Millisecond))
		}
	})
	if shared.err != nil {
		t.Fatalf("integration test needs a PostgreSQL cluster: %v", shared.err)
	}
	return shared.c
}

func closeSharedCluster() {
	if shared.c != nil {
		if err := shared.c.Close(); err != nil {
			log.Printf("closing the shared cluster: %v", err)
		}
	}
}

// newCluster starts a cluster of its own for a test that breaks nodes.
func newCluster(t testing.TB, replicas int) *pgcluster.Cluster {
	t.Helper()
	skipShort(t)
	return pgcluster.StartT(t, pgcluster.Options{Replicas: replicas})
}

// clusterOnTimeline starts a primary and 2 replicas on the given timeline, 1
// or 2. On timeline 2 it has failed over once already, as real clusters
// have: node0 was the primary; node1 was promoted, node2 and node3 follow
// it, node0 is gone. (A cluster that has failed over before has replicas
// whose last restartpoints can be on an older timeline than the one they
// stream, which a cluster fresh from initdb never shows.)
func clusterOnTimeline(t testing.TB, timeline int) *pgcluster.Cluster {
	t.Helper()
	if timeline == 1 {
		return newCluster(t, 2)
	}
	c := newCluster(t, 3)
	ctx := testContext(t, 2*time.Minute)
	require.NoError(t, c.FailOver(ctx, c.Replicas()[0]))
	var tl int
	require.NoError(t, c.Primary().QueryRow(ctx,
		"SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int", &tl))
	require.Equal(t, 2, tl, "the cluster is on timeline 2")
	for _, r := range c.Replicas() {
		var rtl int
		require.NoError(t, r.QueryRow(ctx, "SELECT (pg_control_checkpoint()).timeline_id", &rtl))
		t.Logf("%s streams timeline 2; its last restartpoint is on timeline %d", r.Name(), rtl)
	}
	return c
}

func skipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped under -short")
	}
}

// openRouter opens a DB over the cluster's nodes through pgx, named by their
// cluster_name, closed (and checked for leaked goroutines) when the test
// ends.
func openRouter(t testing.TB, c *pgcluster.Cluster, opts ...dbrouter.Option) *dbrouter.DB {
	t.Helper()
	var dsns, names []string
	for _, n := range c.Nodes() {
		dsns = append(dsns, n.DSN())
		names = append(names, n.Name())
	}
	return openDSNs(t, dsns, names, opts...)
}

// openDSNs opens a DB over dsns (the primary first), naming the nodes names
// (their cluster_name, so a node's name in Status is the one it reports
// itself), closed and checked for leaked goroutines when the test ends.
func openDSNs(t testing.TB, dsns, names []string, opts ...dbrouter.Option) *dbrouter.DB {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	db, err := dbrouter.Open("pgx", dsns[0], dsns[1:], append([]dbrouter.Option{dbrouter.WithNames(names[0], names[1:]...)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, db.Close())
		goleak.VerifyNone(t, append(leakOptions(), ignore)...)
	})
	return db
}

// whoServes is the server-side fact that names the node that ran a query.
const whoServes = "SELECT current_setting('cluster_name')"

// servedBy runs whoServes through q and returns the node's name.
func servedBy(t testing.TB, ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) string {
	t.Helper()
	var name string
	require.NoError(t, q.QueryRowContext(ctx, whoServes).Scan(&name))
	return name
}

// outcome is the node that ran a statement started off the test's
// goroutine (its row's one column), or the statement's error.
type outcome struct {
	node string
	err  error
}

// scanAsync runs row on a goroutine of its own and sends what it served.
func scanAsync(row func() *sql.Row) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		var s outcome
		s.err = row().Scan(&s.node)
		ch <- s
	}()
	return ch
}

// testContext returns a context that ends with the test or after d.
func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
