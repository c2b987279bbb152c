package dbrouter

import (
	"context"
	"database/sql"
	"math"
	"runtime"
	"runtime/debug"
	"testing"
)

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
// allocation count on the hot paths that run a statement on a node's pool:
// Query, QueryRow and Exec (for transactions and the SQL() face, see
// TestSQLFaceAllocations). The calls are made on the concrete
// types, as an application makes them (through an interface, the compiler
// puts every variadic argument slice on the heap, on both sides, and would
// hide a router whose arguments escape). The router runs without background
// probes and with its event queue drained, and each side is measured three
// times, keeping the lowest: testing.AllocsPerRun counts every goroutine's
// allocations, and only the calls' own must count.
func TestRouterAddsNoAllocations(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 1)
	for _, h := range f.dbs {
		h.SetMaxIdleConns(64)
	}
	raw := f.dbs[1]
	db := f.router(t, withoutBackground())
	db.events.flush()
	const update = "UPDATE users SET seen = now() WHERE id = $1"
	ops := []struct {
		name        string
		raw, router func() error
	}{
		{"Query", func() error {
			rows, err := raw.QueryContext(ctx, benchRead, "ann")
			if err != nil {
				return err
			}
			return rows.Close()
		}, func() error {
			rows, err := db.QueryContext(ctx, benchRead, "ann")
			if err != nil {
				return err
			}
			return rows.Close()
		}},
		{"QueryRow", func() error {
			var s string
			return raw.QueryRowContext(ctx, benchRead, "ann").Scan(&s)
		}, func() error {
			var s string
			return db.QueryRowContext(ctx, benchRead, "ann").Scan(&s)
		}},
		{"Exec", func() error {
			_, err := raw.ExecContext(ctx, update, "ann")
			return err
		}, func() error {
			_, err := db.ExecContext(ctx, update, "ann")
			return err
		}},
	}
	// Earlier tests' garbage may have finalizers (files, connections) that
	// allocate when they run: collect it now, and no more while measuring.
	runtime.GC()
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			want, got := allocs(t, op.raw), allocs(t, op.router)
			if got > want {
				t.Errorf("router: %.1f allocs per call, raw *sql.DB: %.1f", got, want)
			}
		})
	}
}

// allocs measures op's allocations per call, as the lowest of three
// measurements: testing.AllocsPerRun counts every goroutine's allocations,
// and only the calls' own must count. Call it with the garbage collector
// off (see TestRouterAddsNoAllocations).
func allocs(t *testing.T, op func() error) float64 {
	least := math.Inf(1)
	for range 3 {
		least = min(least, testing.AllocsPerRun(200, func() {
			if err := op(); err != nil {
				t.Fatal(err)
			}
		}))
	}
	return least
}

// TestSQLFaceAllocations bounds what the SQL() face adds to a raw *sql.DB's
// allocations: a statement takes a connection of its node's pool, which
// costs database/sql's *sql.Conn and the closure of Conn.Raw (2); a
// transaction, which DB.BeginTx begins through the face, also its Tx (4 in
// all).
func TestSQLFaceAllocations(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 1)
	for _, h := range f.dbs {
		h.SetMaxIdleConns(64)
	}
	raw := f.dbs[1]
	db := f.router(t, withoutBackground())
	face := db.SQL()
	face.SetMaxIdleConns(64)
	db.events.flush()
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	const update = "UPDATE users SET seen = now() WHERE id = $1"
	for _, op := range []struct {
		name        string
		extra       float64
		raw, router func() error
	}{
		{"Query", 2, func() error {
			rows, err := raw.QueryContext(ctx, benchRead, "ann")
			if err != nil {
				return err
			}
			return rows.Close()
		}, func() error {
			rows, err := face.QueryContext(ctx, benchRead, "ann")
			if err != nil {
				return err
			}
			return rows.Close()
		}},
		{"QueryRow", 2, func() error {
			var s string
			return raw.QueryRowContext(ctx, benchRead, "ann").Scan(&s)
		}, func() error {
			var s string
			return face.QueryRowContext(ctx, benchRead, "ann").Scan(&s)
		}},
		{"Exec", 2, func() error {
			_, err := raw.ExecContext(ctx, update, "ann")
			return err
		}, func() error {
			_, err := face.ExecContext(ctx, update, "ann")
			return err
		}},
		// database/sql starts a goroutine per transaction (Tx.awaitDone):
		// whether starting it allocates depends on whether the last one has
		// ended yet, so each transaction lets it end first.
		{"DB.BeginTx", 4, func() error {
			tx, err := raw.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			err = tx.Commit()
			runtime.Gosched()
			return err
		}, func() error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			err = tx.Commit()
			runtime.Gosched()
			return err
		}},
	} {
		t.Run(op.name, func(t *testing.T) {
			want, got := allocs(t, op.raw), allocs(t, op.router)
			t.Logf("SQL() face %s: %.0f allocs per call, raw *sql.DB %.0f", op.name, got, want)
			if got > want+op.extra {
				t.Errorf("SQL() face: %.1f allocs per call, raw *sql.DB: %.1f, expected at most %.0f more", got, want, op.extra)
			}
		})
	}
}

// BenchmarkExecParts splits the router's cost on ExecContext (no-op driver,
// the pools of TestOverheadReport): a raw *sql.DB, the primary's own handle
// called directly (the cost of the router's pools without its code), and the
// router.
func BenchmarkExecParts(b *testing.B) {
	raw, db := overheadTargets(b)
	ctx := context.Background()
	const update = "UPDATE accounts SET balance = balance + $1 WHERE id = $2"
	for _, tg := range []struct {
		name string
		exec func() error
	}{
		{"raw", func() error { _, err := raw.ExecContext(ctx, update, 10, 1); return err }},
		{"primary-handle", func() error { _, err := db.table.Load().primary.db.ExecContext(ctx, update, 10, 1); return err }},
		{"router", func() error { _, err := db.ExecContext(ctx, update, 10, 1); return err }},
	} {
		b.Run(tg.name, func(b *testing.B) {
			for b.Loop() {
				if err := tg.exec(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
