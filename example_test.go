package dbrouter_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/fakedriver"
)

// fakeDriver registers a primary and two replicas on the fake driver, whose
// nodes answer every query with their name, and returns the driver name; its
// DSNs are the node names. With PostgreSQL you would use "pgx" and real DSNs.
func fakeDriver() string {
	name, err := fakedriver.Register(fakedriver.New("primary"), fakedriver.New("replica1"), fakedriver.New("replica2"))
	if err != nil {
		panic(err)
	}
	return name
}

// open opens a DB over the fake nodes with ping-only probes (the fake
// driver is not PostgreSQL).
func open(opts ...dbrouter.Option) (*dbrouter.DB, error) {
	return dbrouter.Open(fakeDriver(), "primary", []string{"replica1", "replica2"},
		append([]dbrouter.Option{dbrouter.WithDialect(dbrouter.Generic())}, opts...)...)
}

func whoServes(ctx context.Context, db interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, query string) string {
	var node string
	if err := db.QueryRowContext(ctx, query).Scan(&node); err != nil {
		return "error: " + err.Error()
	}
	return node
}

func ExampleOpen() {
	db, err := open()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	ctx := context.Background()

	reads := map[string]int{}
	for range 10 {
		reads[whoServes(ctx, db, "SELECT name FROM users WHERE id = 1")]++
	}
	fmt.Println("reads:", reads)
	fmt.Println("write query:", whoServes(ctx, db, "INSERT INTO users (name) VALUES ('ann') RETURNING id"))
	fmt.Println("locking read:", whoServes(ctx, db, "SELECT * FROM users WHERE id = 1 FOR UPDATE"))
	fmt.Println("forced:", whoServes(dbrouter.UsePrimary(ctx), db, "SELECT 1"))
	// Output:
	// reads: map[replica1:5 replica2:5]
	// write query: primary
	// locking read: primary
	// forced: primary
}

func ExampleNew_badInput() {
	_, err := dbrouter.New(nil, nil)
	fmt.Println(err)
	primary := sql.OpenDB(fakedriver.New("primary"))
	defer primary.Close()
	_, err = dbrouter.New(primary, nil, dbrouter.WithProbeInterval(0), dbrouter.WithFailureThreshold(0))
	fmt.Println(err)
	// Output:
	// dbrouter: New: nil primary
	// dbrouter: WithProbeInterval(0s): must be > 0
	// dbrouter: WithFailureThreshold(0): must be >= 1
}

func ExampleWithRouter() {
	// Django-style routing: billing reads from the primary, analytics on
	// one replica. A write still never goes to a replica.
	db, err := open(
		dbrouter.WithNames("main", "r1", "analytics"),
		dbrouter.WithRouter(func(ctx context.Context, query string, write bool) dbrouter.Target {
			switch {
			case strings.Contains(query, "billing"):
				return dbrouter.Primary
			case strings.HasPrefix(query, "/* report */"):
				return dbrouter.NodeNamed("analytics")
			}
			return dbrouter.Default
		}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	ctx := context.Background()
	fmt.Println(whoServes(ctx, db, "SELECT total FROM billing"))
	fmt.Println(whoServes(ctx, db, "/* report */ SELECT count(*) FROM events"))
	fmt.Println(whoServes(ctx, db, "/* report */ INSERT INTO events DEFAULT VALUES RETURNING id"))
	// Output:
	// primary
	// replica2
	// primary
}

func ExampleDB_BeginTx() {
	db, err := open(dbrouter.WithBalancer(dbrouter.LeastInFlight()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	ctx := context.Background()
	for _, opts := range []*sql.TxOptions{nil, {ReadOnly: true}, {ReadOnly: true, Isolation: sql.LevelSerializable}} {
		tx, err := db.BeginTx(ctx, opts)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(strings.TrimRight(whoServes(ctx, tx, "SELECT 1"), "12"))
		tx.Rollback()
	}
	// Output:
	// primary
	// replica
	// primary
}

func ExampleSession_Token() {
	// A web service writes in one request and carries the session's
	// position to the next in a cookie; that request's reads then avoid
	// replicas that have not replayed the write.
	s := dbrouter.NewSession()
	token := s.Token() // after writes through dbrouter.WithSession(ctx, s)
	next, err := dbrouter.ResumeSession(token)
	fmt.Println(next != nil, err)
	_, err = dbrouter.ResumeSession("forged")
	fmt.Println(err)
	// Output:
	// true <nil>
	// dbrouter: invalid session token: "forged"
}

func ExampleDB_Status() {
	// Names default to host:port/dbname from each DSN; the fake driver's
	// DSNs have none, so they are node0, node1, ….
	db, err := open(dbrouter.WithProbeInterval(time.Minute))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	s := db.Status()
	fmt.Println("primary:", s.Primary)
	for _, n := range s.Nodes {
		fmt.Println(n.Name, n.Role, n.State, n.Readable)
	}
	// Output:
	// primary: node0
	// node0 primary up false
	// node1 replica up true
	// node2 replica up true
}
