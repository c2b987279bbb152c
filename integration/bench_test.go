package integration

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// BenchmarkPostgres is the same comparison on a real primary + 2 replicas
// (pgx): a one-row read and a one-row write, raw *sql.DB on one node beside
// the router.
func BenchmarkPostgres(b *testing.B) {
	c := sharedCluster(b)
	ctx := context.Background()
	db := openRouter(b, c)
	_, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS bench_pg (k int PRIMARY KEY, v bigint)")
	require.NoError(b, err)
	_, err = db.ExecContext(ctx, "INSERT INTO bench_pg VALUES (1, 0) ON CONFLICT DO NOTHING")
	require.NoError(b, err)
	// Writes append: updating one row over and over slows every later run
	// (dead tuples), which would favour whichever side runs first.
	_, err = db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS bench_pg_log (id bigserial PRIMARY KEY, v bigint)")
	require.NoError(b, err)
	rawReplica, err := c.Replicas()[0].Open()
	require.NoError(b, err)
	defer rawReplica.Close()
	rawPrimary, err := c.Primary().Open()
	require.NoError(b, err)
	defer rawPrimary.Close()
	read := func(q DBTX) error {
		var v int64
		return q.QueryRowContext(ctx, "SELECT v FROM bench_pg WHERE k = $1", 1).Scan(&v)
	}
	write := func(q DBTX) error {
		_, err := q.ExecContext(ctx, "INSERT INTO bench_pg_log (v) VALUES ($1)", 1)
		return err
	}
	for _, bm := range []struct {
		name string
		q    DBTX
		do   func(DBTX) error
	}{
		{"QueryRow/raw", rawReplica, read}, {"QueryRow/router", db, read},
		{"Exec/raw", rawPrimary, write}, {"Exec/router", db, write},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := bm.do(bm.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
