package dbrouter

import (
	"context"
	"database/sql"
	"testing"

	"github.com/stretchr/testify/require"
)

// The router's benchmarks run beside the raw *sql.DB doing the same work on
// the same fake driver: the ratio of the two is the router's overhead.
// Compare with benchstat, or read the pairs: BenchmarkRouter/Op/raw vs
// BenchmarkRouter/Op/router.

const benchRead = "SELECT id, name, email FROM users WHERE id = $1 AND deleted_at IS NULL"

type benchTarget struct {
	name string
	db   DBTX
	beg  func(context.Context, *sql.TxOptions) (*sql.Tx, error)
}

// benchTargets returns the raw handle of a replica and a router over a
// primary and that replica: the raw handle does what the router's chosen
// node does, through a pool of the same size, so the difference is the
// router's own cost. (With two replicas, parallel reads would spread over two
// pools and flatter the router.)
func benchTargets(b testing.TB) []benchTarget {
	f := newFakeNodes(b, 1)
	db := f.router(b, WithProbeInterval(1<<40))
	for _, h := range f.dbs {
		h.SetMaxIdleConns(64)
	}
	return []benchTarget{
		{"raw", f.dbs[1], f.dbs[1].BeginTx},
		{"router", db, db.BeginTx},
	}
}

// benchOps are the hot paths, each one call through a benchTarget.
var benchOps = []struct {
	name string
	do   func(ctx context.Context, tg benchTarget) error
}{
	{"Query", func(ctx context.Context, tg benchTarget) error {
		rows, err := tg.db.QueryContext(ctx, benchRead, 1)
		if err != nil {
			return err
		}
		return rows.Close()
	}},
	{"QueryRow", func(ctx context.Context, tg benchTarget) error {
		var s string
		return tg.db.QueryRowContext(ctx, benchRead, 1).Scan(&s)
	}},
	{"Exec", func(ctx context.Context, tg benchTarget) error {
		_, err := tg.db.ExecContext(ctx, "UPDATE users SET seen = now() WHERE id = $1", 1)
		return err
	}},
	{"BeginTx", func(ctx context.Context, tg benchTarget) error {
		tx, err := tg.beg(ctx, nil)
		if err != nil {
			return err
		}
		return tx.Commit()
	}},
}

// BenchmarkRouter runs each hot path serially, raw beside router.
func BenchmarkRouter(b *testing.B) {
	ctx := context.Background()
	for _, op := range benchOps {
		for i := range 2 {
			b.Run(op.name+"/"+[]string{"raw", "router"}[i], func(b *testing.B) {
				tg := benchTargets(b)[i] // fresh pools: no state carried over from another run
				b.ReportAllocs()
				for b.Loop() {
					if err := op.do(ctx, tg); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkRouterParallel runs each hot path from GOMAXPROCS goroutines.
func BenchmarkRouterParallel(b *testing.B) {
	for _, op := range benchOps {
		for i := range 2 {
			b.Run(op.name+"/"+[]string{"raw", "router"}[i], func(b *testing.B) {
				tg := benchTargets(b)[i]
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					ctx := context.Background()
					for pb.Next() {
						if err := op.do(ctx, tg); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// TestRouterAddsNoAllocations holds the router to the raw *sql.DB's
// allocation count on every hot path.
func TestRouterAddsNoAllocations(t *testing.T) {
	ctx := context.Background()
	tgs := benchTargets(t)
	raw, rt := tgs[0], tgs[1]
	for _, op := range benchOps {
		t.Run(op.name, func(t *testing.T) {
			want := testing.AllocsPerRun(200, func() { require.NoError(t, op.do(ctx, raw)) })
			got := testing.AllocsPerRun(200, func() { require.NoError(t, op.do(ctx, rt)) })
			if got > want {
				t.Errorf("router: %.1f allocs per call, raw *sql.DB: %.1f", got, want)
			}
		})
	}
}
