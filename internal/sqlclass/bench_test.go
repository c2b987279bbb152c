package sqlclass

import (
	"fmt"
	"strings"
	"testing"
)

// Realistic queries of about 50, 200, 800 and 2,000 bytes.
const (
	benchQuery50 = `SELECT id, email FROM users WHERE id = $1 LIMIT 1`

	benchQuery200 = `/* app:web,action:show */ SELECT "posts"."id", "posts"."title", "posts"."body", "posts"."slug" ` +
		`FROM "posts" INNER JOIN "users" ON "users"."id" = "posts"."author_id" ` +
		`WHERE "users"."email" = $1 LIMIT $2`
)

var (
	benchQuery800  = ormQuery(800)
	benchQuery2000 = ormQuery(2000)
)

// ormQuery builds an ORM-style read of about size bytes: a CTE, a wide
// quoted column list, literals, a comment, a cast and an IN list of
// parameters.
func ormQuery(size int) string {
	const head = "-- name: ListOrders :many\n" +
		`WITH recent AS (SELECT "customer_id", max("created_at") AS "last" FROM "orders" ` +
		`WHERE "status" <> 'cancelled' GROUP BY "customer_id") SELECT "orders"."id"`
	const tail = ` FROM "orders" JOIN recent ON recent."customer_id" = "orders"."customer_id" ` +
		`WHERE "orders"."created_at" >= now() - interval '30 days' AND "orders"."note" NOT LIKE E'%\\_test%' ` +
		`AND "orders"."tenant_id" = ANY($1::bigint[]) ORDER BY "orders"."created_at" DESC LIMIT $2 OFFSET $3`
	var b strings.Builder
	b.WriteString(head)
	for i := 0; b.Len()+len(tail) < size; i++ {
		fmt.Fprintf(&b, `, "orders"."col_%d"`, i)
	}
	b.WriteString(tail)
	return b.String()
}

func BenchmarkIsReadOnly(b *testing.B)     { benchClassifier(b, IsReadOnly) }
func BenchmarkClassifyCached(b *testing.B) { benchClassifier(b, Classify) }

func benchClassifier(b *testing.B, isReadOnly func(string) bool) {
	for _, bm := range []struct {
		name  string
		query string
	}{
		{"50B", benchQuery50},
		{"200B", benchQuery200},
		{"800B", benchQuery800},
		{"2000B", benchQuery2000},
	} {
		if !isReadOnly(bm.query) {
			b.Fatalf("%s: benchmark query is not read-only: %q", bm.name, bm.query)
		}
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bm.query)))
			for b.Loop() {
				isReadOnly(bm.query)
			}
		})
	}
}

func BenchmarkIsReadOnlyParallel(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchQuery200)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			IsReadOnly(benchQuery200)
		}
	})
}
