package integration

import (
	"database/sql"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/internal/paired"
)

// TestPostgresOverheadReport prints what the router and its SQL() face cost
// per call on a real primary + 2 replicas (pgx), beside one raw *sql.DB
// doing the same work on one node: paired interleaved rounds, the median of
// the per-round ratios. It asserts only that every call succeeds: CI runs it
// under -race, briefly, and its figures mean nothing there. Run it for real
// with
//
//	DBROUTER_OVERHEAD_ROUNDS=21 go test -run TestPostgresOverheadReport -v ./integration
func TestPostgresOverheadReport(t *testing.T) {
	rounds, round := 3, 20*time.Millisecond
	if s := os.Getenv("DBROUTER_OVERHEAD_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, "DBROUTER_OVERHEAD_ROUNDS")
		rounds, round = n, 200*time.Millisecond
	}
	c := sharedCluster(t)
	ctx := testContext(t, 5*time.Minute)
	db := openRouter(t, c)
	face := db.SQL()
	_, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS overhead_kv (k int PRIMARY KEY, v bigint)")
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "INSERT INTO overhead_kv VALUES (1, 0) ON CONFLICT DO NOTHING")
	require.NoError(t, err)
	// Writes append: updating one row over and over slows every later round
	// (dead tuples), which would favour whichever side ran first.
	_, err = db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS overhead_log (id bigserial PRIMARY KEY, v bigint)")
	require.NoError(t, err)
	waitReplicated(t, ctx, c, "overhead_kv")
	open := func(dsn string) *sql.DB {
		h, err := sql.Open("pgx", dsn)
		require.NoError(t, err)
		t.Cleanup(func() { h.Close() })
		return h
	}
	rawReplica, rawPrimary := open(c.Replicas()[0].DSN()), open(c.Primary().DSN())
	rawReplicas := []*sql.DB{rawReplica, open(c.Replicas()[1].DSN())}
	oneReplicaTwice := []*sql.DB{open(c.Replicas()[0].DSN()), open(c.Replicas()[0].DSN())}
	var turn, rawTurn, twiceTurn int

	const read, write = "SELECT v FROM overhead_kv WHERE k = $1", "INSERT INTO overhead_log (v) VALUES ($1)"
	// rawInTurn reads as the router's round-robin does, over both replicas:
	// beside it, what remains of a router's read is the router's own cost.
	rawInTurn := func() error {
		var v int64
		rawTurn++
		return rawReplicas[rawTurn%2].QueryRowContext(ctx, read, 1).Scan(&v)
	}
	// Each call is written out on the concrete types, as an application
	// calls them.
	calls := []struct {
		name        string
		raw, router func() error
	}{
		{"DB.QueryRowContext + Scan", func() error {
			var v int64
			return rawReplica.QueryRowContext(ctx, read, 1).Scan(&v)
		}, func() error {
			var v int64
			return db.QueryRowContext(ctx, read, 1).Scan(&v)
		}},
		// No router at all: one raw handle against two used in turn, as
		// the router's round-robin uses the replicas. What this costs is
		// not the router's (each server connection is used half as often),
		// and is part of the router's row above.
		{"raw, reads over both replicas in turn", func() error {
			var v int64
			return rawReplica.QueryRowContext(ctx, read, 1).Scan(&v)
		}, func() error {
			var v int64
			turn++
			return rawReplicas[turn%2].QueryRowContext(ctx, read, 1).Scan(&v)
		}},
		// Two handles on the same replica, used in turn, cost what the
		// two replicas do: the cost is a server connection woken every
		// other statement, not a second server.
		{"raw, two handles on one replica in turn against both replicas in turn", func() error {
			var v int64
			twiceTurn++
			return oneReplicaTwice[twiceTurn%2].QueryRowContext(ctx, read, 1).Scan(&v)
		}, rawInTurn},
		{"DB.QueryRowContext + Scan, beside raw reads over both replicas in turn", rawInTurn, func() error {
			var v int64
			return db.QueryRowContext(ctx, read, 1).Scan(&v)
		}},
		{"DB.ExecContext of an INSERT", func() error {
			_, err := rawPrimary.ExecContext(ctx, write, 1)
			return err
		}, func() error {
			_, err := db.ExecContext(ctx, write, 1)
			return err
		}},
		{"SQL().QueryRowContext + Scan", func() error {
			var v int64
			return rawReplica.QueryRowContext(ctx, read, 1).Scan(&v)
		}, func() error {
			var v int64
			return face.QueryRowContext(ctx, read, 1).Scan(&v)
		}},
		{"SQL().QueryRowContext + Scan, beside raw reads over both replicas in turn", rawInTurn, func() error {
			var v int64
			return face.QueryRowContext(ctx, read, 1).Scan(&v)
		}},
		{"SQL().ExecContext of an INSERT", func() error {
			_, err := rawPrimary.ExecContext(ctx, write, 1)
			return err
		}, func() error {
			_, err := face.ExecContext(ctx, write, 1)
			return err
		}},
	}
	t.Logf("OVERHEAD real PostgreSQL, %d paired rounds of %v, median of the ratios", rounds, round)
	t.Logf("OVERHEAD | call | raw | router | ratio |")
	for _, call := range calls {
		res, err := paired.Measure(paired.Options{Rounds: rounds, Round: round}, call.raw, call.router)
		require.NoError(t, err, call.name)
		r, s, ratio := res.Median()
		t.Logf("OVERHEAD | `%s` | %.1f µs | %.1f µs | %.3f |", call.name, r/1e3, s/1e3, ratio)
	}
}
