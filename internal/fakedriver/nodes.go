package fakedriver

import (
	"database/sql"
	"strconv"
	"testing"
)

// Nodes opens a primary ("primary") and replicas ("replica1", …) on the
// fake driver, each its own *sql.DB, closed when tb ends: conns[0] and
// dbs[0] are the primary's. Each answers queries with its name, so a test
// reads back who served a call.
func Nodes(tb testing.TB, replicas int) (conns []*Connector, dbs []*sql.DB) {
	tb.Helper()
	for i := 0; i <= replicas; i++ {
		name := "primary"
		if i > 0 {
			name = "replica" + strconv.Itoa(i)
		}
		c := New(name)
		h := sql.OpenDB(c)
		tb.Cleanup(func() { h.Close() })
		conns = append(conns, c)
		dbs = append(dbs, h)
	}
	return conns, dbs
}
