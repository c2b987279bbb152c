package dbrouter

import (
	"context"
	"database/sql"
	"testing"
)

// The router's benchmarks run beside the raw *sql.DB doing the same work on
// the same fake driver: the ratio of the two is the router's overhead.
// Compare with benchstat, or read the pairs: BenchmarkX/raw vs
// BenchmarkX/router.

const benchRead = "SELECT id, name, email FROM users WHERE id = $1 AND deleted_at IS NULL"

type benchTarget struct {
	name string
	db   DBTX
	beg  func(context.Context, *sql.TxOptions) (*sql.Tx, error)
}

// benchTargets returns the raw handle of one replica and a router over a
// primary and two replicas. The raw handle does what the router's chosen
// node does.
func benchTargets(b testing.TB) []benchTarget {
	f := newFakeNodes(b, 2)
	db := f.router(b, WithProbeInterval(1<<40))
	for _, h := range f.dbs {
		h.SetMaxIdleConns(64)
	}
	return []benchTarget{
		{"raw", f.dbs[1], f.dbs[1].BeginTx},
		{"router", db, db.BeginTx},
	}
}

func BenchmarkQuery(b *testing.B) {
	ctx := context.Background()
	for _, tg := range benchTargets(b) {
		b.Run(tg.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rows, err := tg.db.QueryContext(ctx, benchRead, 1)
				if err != nil {
					b.Fatal(err)
				}
				rows.Close()
			}
		})
	}
}

func BenchmarkQueryRow(b *testing.B) {
	ctx := context.Background()
	for _, tg := range benchTargets(b) {
		b.Run(tg.name, func(b *testing.B) {
			b.ReportAllocs()
			var s string
			for b.Loop() {
				if err := tg.db.QueryRowContext(ctx, benchRead, 1).Scan(&s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkExec(b *testing.B) {
	ctx := context.Background()
	for _, tg := range benchTargets(b) {
		b.Run(tg.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tg.db.ExecContext(ctx, "UPDATE users SET seen = now() WHERE id = $1", 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkBeginTx(b *testing.B) {
	ctx := context.Background()
	for _, tg := range benchTargets(b) {
		b.Run(tg.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tx, err := tg.beg(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkQueryRowParallel(b *testing.B) {
	for _, tg := range benchTargets(b) {
		b.Run(tg.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				var s string
				for pb.Next() {
					if err := tg.db.QueryRowContext(ctx, benchRead, 1).Scan(&s); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func BenchmarkQueryParallel(b *testing.B) {
	for _, tg := range benchTargets(b) {
		b.Run(tg.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					rows, err := tg.db.QueryContext(ctx, benchRead, 1)
					if err != nil {
						b.Fatal(err)
					}
					rows.Close()
				}
			})
		})
	}
}

func BenchmarkExecParallel(b *testing.B) {
	for _, tg := range benchTargets(b) {
		b.Run(tg.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if _, err := tg.db.ExecContext(ctx, "UPDATE users SET seen = now() WHERE id = $1", 1); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func BenchmarkBeginTxParallel(b *testing.B) {
	for _, tg := range benchTargets(b) {
		b.Run(tg.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					tx, err := tg.beg(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					if err := tx.Commit(); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// TestRouterAddsNoAllocations holds the router to the raw *sql.DB's
// allocation count on every hot path.
func TestRouterAddsNoAllocations(t *testing.T) {
	ctx := context.Background()
	tgs := benchTargets(t)
	raw, rt := tgs[0], tgs[1]
	cases := map[string]func(tg benchTarget){
		"QueryRow": func(tg benchTarget) {
			var s string
			_ = tg.db.QueryRowContext(ctx, benchRead, 1).Scan(&s)
		},
		"Query": func(tg benchTarget) {
			rows, _ := tg.db.QueryContext(ctx, benchRead, 1)
			rows.Close()
		},
		"Exec": func(tg benchTarget) { _, _ = tg.db.ExecContext(ctx, "UPDATE users SET a = 1") },
		"BeginTx": func(tg benchTarget) {
			tx, _ := tg.beg(ctx, nil)
			_ = tx.Commit()
		},
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			want := testing.AllocsPerRun(200, func() { f(raw) })
			got := testing.AllocsPerRun(200, func() { f(rt) })
			if got > want {
				t.Errorf("router: %.1f allocs per call, raw *sql.DB: %.1f", got, want)
			}
		})
	}
}
