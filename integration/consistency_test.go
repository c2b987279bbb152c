package integration

import (
	"github.com/dbrouter/dbrouter/internal/testwait"

	"github.com/dbrouter/dbrouter"

	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

// Read-your-writes on a real primary + 2 replicas, one of them delayed with
// recovery_min_apply_delay: a read served by it right after a write is stale
// unless the router knows better. Every trial writes a new value and reads it
// back; the read also says which node served it.

const applyDelay = 2 * time.Second

// delayedCluster starts a cluster whose node1 applies WAL applyDelay late.
func delayedCluster(t *testing.T) *pgcluster.Cluster {
	t.Helper()
	c := newCluster(t, 2)
	ctx := testContext(t, time.Minute)
	require.NoError(t, c.Primary().Exec(ctx, "CREATE TABLE kv (k int PRIMARY KEY, v bigint NOT NULL)"))
	require.NoError(t, c.Primary().Exec(ctx, "INSERT INTO kv VALUES (1, 0)"))
	for _, r := range c.Replicas() {
		testwait.Until(t, time.Minute, "kv on "+r.Name(), func() bool {
			var n int
			return r.QueryRow(ctx, "SELECT count(*) FROM kv", &n) == nil && n == 1
		})
	}
	require.NoError(t, c.Nodes()[1].SetApplyDelay(ctx, applyDelay))
	return c
}

type trialResult struct {
	stale    int
	byNode   map[string]int
	replicas int // reads served by a replica
}

func (r trialResult) String() string {
	return fmt.Sprintf("stale %d, served %v", r.stale, r.byNode)
}

// trials writes value i and reads it back n times, under ctxFor(i).
func trials(t *testing.T, db, reader *dbrouter.DB, n int, ctxFor func(i int) context.Context, first int64) trialResult {
	t.Helper()
	r := trialResult{byNode: map[string]int{}}
	for i := range n {
		ctx := ctxFor(i)
		want := first + int64(i)
		_, err := db.ExecContext(ctx, "UPDATE kv SET v = $1 WHERE k = 1", want)
		require.NoError(t, err)
		var got int64
		var node string
		require.NoError(t, reader.QueryRowContext(ctx, "SELECT v, current_setting('cluster_name') FROM kv WHERE k = 1").Scan(&got, &node))
		if got != want {
			r.stale++
		}
		r.byNode[node]++
		if node != "node0" {
			r.replicas++
		}
	}
	return r
}

func TestIntegrationReadYourWrites(t *testing.T) {
	c := delayedCluster(t)
	base := context.Background()

	t.Run("without a session reads can be stale", func(t *testing.T) {
		db := openRouter(t, c)
		r := trials(t, db, db, 20, func(int) context.Context { return base }, 1_000)
		t.Logf("CONSISTENCY no session: %d trials: %s", 20, r)
		assert.Positive(t, r.stale, "the delayed replica must show stale data, or this setup proves nothing")
	})

	for _, mode := range []struct {
		name    string
		maxWait time.Duration
	}{
		{"causal, positions from probes", 0},
		{"causal, waiting up to 100ms", 100 * time.Millisecond},
	} {
		t.Run(mode.name, func(t *testing.T) {
			db := openRouter(t, c, dbrouter.WithSessionMode(dbrouter.SessionCausal(mode.maxWait)))
			s := dbrouter.NewSession()
			ctx := dbrouter.WithSession(base, s)
			const n = 1000
			began := time.Now()
			r := trials(t, db, db, n, func(int) context.Context { return ctx }, 10_000)
			t.Logf("CONSISTENCY %s: %d trials in %v: %s; share of reads on replicas %.1f%%",
				mode.name, n, time.Since(began).Round(time.Millisecond), r, 100*float64(r.replicas)/n)
			assert.Zero(t, r.stale, "a session reads its own writes")
			assert.Zero(t, r.byNode["node1"], "the delayed replica never serves the session right after its write")
			if mode.maxWait > 0 {
				assert.Positive(t, r.replicas, "reads go to a replica once one has caught up")
			}
		})
	}

	t.Run("time window", func(t *testing.T) {
		const window = 3 * time.Second
		db := openRouter(t, c, dbrouter.WithSessionMode(dbrouter.SessionTime(window)))
		s := dbrouter.NewSession()
		ctx := dbrouter.WithSession(base, s)
		r := trials(t, db, db, 200, func(int) context.Context { return ctx }, 20_000)
		t.Logf("CONSISTENCY time window %v: 200 trials: %s", window, r)
		assert.Zero(t, r.stale)
		assert.Equal(t, 200, r.byNode["node0"], "inside the window the session reads the primary")
		lastWrite := time.Now()
		testwait.Until(t, time.Minute, "the window to pass", func() bool { return time.Since(lastWrite) > window })
		assert.Contains(t, []string{"node1", "node2"}, servedBy(t, ctx, db), "after the window, a replica")
	})

	t.Run("tokens cross processes", func(t *testing.T) {
		writer := openRouter(t, c)
		reader := openRouter(t, c, dbrouter.WithSessionMode(dbrouter.SessionCausal(100*time.Millisecond)))
		stale, onReplica := 0, 0
		const n = 200
		for i := range n {
			s := dbrouter.NewSession()
			want := int64(30_000 + i)
			_, err := writer.ExecContext(dbrouter.WithSession(base, s), "UPDATE kv SET v = $1 WHERE k = 1", want)
			require.NoError(t, err)
			resumed, err := dbrouter.ResumeSession(s.Token()) // e.g. through a cookie
			require.NoError(t, err)
			var got int64
			var node string
			require.NoError(t, reader.QueryRowContext(dbrouter.WithSession(base, resumed), "SELECT v, current_setting('cluster_name') FROM kv WHERE k = 1").Scan(&got, &node))
			if got != want {
				stale++
			}
			if node != "node0" {
				onReplica++
			}
		}
		t.Logf("CONSISTENCY token across DBs: %d trials: stale %d, on replicas %d", n, stale, onReplica)
		assert.Zero(t, stale)
	})
}

func TestIntegrationMaxLag(t *testing.T) {
	c := delayedCluster(t)
	ctx := testContext(t, 3*time.Minute)
	const limit = time.Second
	db := openRouter(t, c, dbrouter.WithMaxLag(0, limit), dbrouter.WithProbeInterval(200*time.Millisecond))
	// A steady trickle of writes, so the delayed replica falls behind.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			_, _ = db.ExecContext(ctx, "UPDATE kv SET v = $1 WHERE k = 1", i)
		}
	}()
	defer func() { close(stop); <-done }()

	testwait.Until(t, time.Minute, "node1 excluded for lag", func() bool { return nodeStatus(t, db, "node1").LagExcluded })
	excluded := nodeStatus(t, db, "node1")
	for range 20 {
		assert.Equal(t, "node2", servedBy(t, ctx, db), "the lagging replica serves no reads")
	}
	require.NoError(t, c.Nodes()[1].SetApplyDelay(ctx, 0))
	testwait.Until(t, time.Minute, "node1 readmitted", func() bool { return !nodeStatus(t, db, "node1").LagExcluded })
	readmitted := nodeStatus(t, db, "node1")
	testwait.Until(t, time.Minute, "a read on node1", func() bool { return servedBy(t, ctx, db) == "node1" })
	t.Logf("CONSISTENCY max lag %v: node1 excluded at lag %v / %d bytes; readmitted at lag %v / %d bytes",
		limit, excluded.LagTime.Round(time.Millisecond), excluded.LagBytes, readmitted.LagTime.Round(time.Millisecond), readmitted.LagBytes)
	assert.Greater(t, excluded.LagTime, limit)
}

// BenchmarkSession measures what a causal session costs on a real primary +
// 2 replicas, each case beside the same calls without a session:
//   - Exec: a write alone (its WAL position is only asked for later);
//   - WriteRead: a write and then a read of the session, which asks the
//     primary for its WAL position once (one more round trip) and then
//     reads from a replica that has it, else from the primary;
//   - Read: a read whose session's last write every replica has replayed.
func BenchmarkSession(b *testing.B) {
	c := sharedCluster(b)
	db := openRouter(b, c, dbrouter.WithSessionMode(dbrouter.SessionCausal(20*time.Millisecond)))
	ctx := context.Background()
	_, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS bench_session_log (id bigserial PRIMARY KEY, v bigint)")
	require.NoError(b, err)
	write := func(ctx context.Context) error {
		_, err := db.ExecContext(ctx, "INSERT INTO bench_session_log (v) VALUES ($1)", 1)
		return err
	}
	read := func(ctx context.Context) error {
		var v string
		return db.QueryRowContext(ctx, "SELECT current_setting('cluster_name')").Scan(&v)
	}
	caughtUp, err := dbrouter.ResumeSession("v1.1.0") // a write every replica has replayed
	require.NoError(b, err)
	for _, bm := range []struct {
		name string
		do   func(context.Context) error
		ctx  func() context.Context
	}{
		{"Exec/plain", write, func() context.Context { return ctx }},
		{"Exec/session", write, func() context.Context { return dbrouter.WithSession(ctx, dbrouter.NewSession()) }},
		{"WriteRead/plain", func(ctx context.Context) error {
			if err := write(ctx); err != nil {
				return err
			}
			return read(ctx)
		}, func() context.Context { return ctx }},
		{"WriteRead/session", func(ctx context.Context) error {
			if err := write(ctx); err != nil {
				return err
			}
			return read(ctx)
		}, func() context.Context { return dbrouter.WithSession(ctx, dbrouter.NewSession()) }},
		{"Read/plain", read, func() context.Context { return ctx }},
		{"Read/session", read, func() context.Context { return dbrouter.WithSession(ctx, caughtUp) }},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			sctx := bm.ctx()
			for b.Loop() {
				if err := bm.do(sctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
