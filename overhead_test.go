package dbrouter

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/internal/noopdriver"
	"github.com/dbrouter/dbrouter/internal/paired"
)

// overheadQuery is a 300-byte read: a join, a subquery and a comment.
const overheadQuery = `/* accounts page */ SELECT a.id, a.owner, a.balance, c.name AS currency, (SELECT count(*) FROM transfers t
WHERE t.from_id = a.id AND t.created_at > now() - interval '30 days') AS recent FROM accounts a JOIN currencies c
ON c.id = a.currency_id WHERE a.owner = $1 AND a.closed_at IS NULL ORDER BY a.id LIMIT 50`

// TestOverheadReport prints the router's per-call cost beside one raw
// *sql.DB doing the same work, measured as a user would: a no-op driver (no
// I/O), the router over a primary and two replicas (each its own *sql.DB),
// paired interleaved rounds, the median of the per-round ratios. It asserts
// only that every call succeeds: timing is reported, never judged here (CI
// runs it under -race, whose figures mean nothing). Run it for real with
//
//	DBROUTER_OVERHEAD_ROUNDS=21 go test -run TestOverheadReport -v .
func TestOverheadReport(t *testing.T) {
	rounds, round := 5, 10*time.Millisecond
	if s := os.Getenv("DBROUTER_OVERHEAD_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, "DBROUTER_OVERHEAD_ROUNDS")
		rounds, round = n, 40*time.Millisecond
	}
	raw, db := overheadTargets(t)
	face := db.SQL()
	face.SetMaxIdleConns(64)
	_, hooked := overheadTargets(t, WithStatementHook(func(Statement) {}))
	ctx := context.Background()
	const update = "UPDATE accounts SET balance = balance + $1 WHERE id = $2"
	// Each call is written out for both sides, on the concrete types, as an
	// application calls them (through an interface the compiler could not
	// inline *sql.DB's QueryRowContext, and would flatter the router).
	calls := []struct {
		name        string
		goroutines  int
		raw, router func() error
	}{
		{"QueryRowContext(\"SELECT 1\") + Scan", 1, func() error {
			var v int
			return raw.QueryRowContext(ctx, "SELECT 1").Scan(&v)
		}, func() error {
			var v int
			return db.QueryRowContext(ctx, "SELECT 1").Scan(&v)
		}},
		{"QueryContext of a 300-byte SELECT + Close", 1, func() error {
			rows, err := raw.QueryContext(ctx, overheadQuery, "ann")
			if err != nil {
				return err
			}
			return rows.Close()
		}, func() error {
			rows, err := db.QueryContext(ctx, overheadQuery, "ann")
			if err != nil {
				return err
			}
			return rows.Close()
		}},
		{"ExecContext of an UPDATE", 1, func() error {
			_, err := raw.ExecContext(ctx, update, 10, 1)
			return err
		}, func() error {
			_, err := db.ExecContext(ctx, update, 10, 1)
			return err
		}},
		{"QueryRowContext from 2×GOMAXPROCS goroutines", 2 * runtime.GOMAXPROCS(0), func() error {
			var v int
			return raw.QueryRowContext(ctx, "SELECT 1").Scan(&v)
		}, func() error {
			var v int
			return db.QueryRowContext(ctx, "SELECT 1").Scan(&v)
		}},
		{"QueryRowContext(\"SELECT 1\") + Scan, a no-op WithStatementHook", 1, func() error {
			var v int
			return raw.QueryRowContext(ctx, "SELECT 1").Scan(&v)
		}, func() error {
			var v int
			return hooked.QueryRowContext(ctx, "SELECT 1").Scan(&v)
		}},
		{"SQL().QueryRowContext(\"SELECT 1\") + Scan", 1, func() error {
			var v int
			return raw.QueryRowContext(ctx, "SELECT 1").Scan(&v)
		}, func() error {
			var v int
			return face.QueryRowContext(ctx, "SELECT 1").Scan(&v)
		}},
		{"SQL().ExecContext of an UPDATE", 1, func() error {
			_, err := raw.ExecContext(ctx, update, 10, 1)
			return err
		}, func() error {
			_, err := face.ExecContext(ctx, update, 10, 1)
			return err
		}},
	}
	t.Logf("OVERHEAD %d paired rounds of %v, median of the ratios, GOMAXPROCS %d", rounds, round, runtime.GOMAXPROCS(0))
	t.Logf("OVERHEAD | call | raw | router | ratio |")
	for _, c := range calls {
		res, err := paired.Measure(paired.Options{Rounds: rounds, Round: round, Goroutines: c.goroutines}, c.raw, c.router)
		require.NoError(t, err, c.name)
		r, s, ratio := res.Median()
		t.Logf("OVERHEAD | `%s` | %s ns | %s ns | %.3f |", c.name, fmtNs(r), fmtNs(s), ratio)
	}
}

func fmtNs(ns float64) string { return fmt.Sprintf("%.0f", ns) }

// overheadTargets returns a raw *sql.DB and a router over a primary and two
// replicas, all on the no-op driver, each pool keeping 64 idle connections.
func overheadTargets(t testing.TB, opts ...Option) (*sql.DB, *DB) {
	open := func() *sql.DB {
		h := sql.OpenDB(noopdriver.Connector{})
		h.SetMaxIdleConns(64)
		t.Cleanup(func() { h.Close() })
		return h
	}
	raw := open()
	db, err := New(open(), []*sql.DB{open(), open()}, append([]Option{WithDialect(Generic())}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return raw, db
}
