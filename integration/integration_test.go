package integration

import (
	"github.com/dbrouter/dbrouter/internal/testwait"

	"github.com/dbrouter/dbrouter"

	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

// Integration tests of the routing rules on the shared cluster (node0
// primary, node1 and node2 streaming replicas). Each proves server-side,
// through current_setting('cluster_name'), which node ran a statement, and
// uses tables and functions of its own: the cluster is shared, also across
// -count runs.

const (
	integrationTimeout = 2 * time.Minute  // each test's context
	replicationWait    = 30 * time.Second // for a write to show up on the replicas
)

// openIntegrationRouter opens a router over c as openRouter does, with a
// probe timeout generous enough that a busy machine does not mark a healthy
// node down in the middle of a test that counts where reads went.
func openIntegrationRouter(t *testing.T, c *pgcluster.Cluster, opts ...dbrouter.Option) *dbrouter.DB {
	t.Helper()
	return openRouter(t, c, append([]dbrouter.Option{dbrouter.WithProbeTimeout(10 * time.Second)}, opts...)...)
}

var uniqueSeq atomic.Int64

// uniqueName returns an SQL identifier made from prefix and the test's name,
// unique within this process (and so on the shared cluster).
func uniqueName(t testing.TB, prefix string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimPrefix(t.Name(), "TestIntegration")) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	base := b.String()
	if len(base) > 40 {
		base = base[:40]
	}
	return fmt.Sprintf("%s_%s_%d", prefix, base, uniqueSeq.Add(1))
}

// createWritingFunction creates, through db, a function that inserts a
// row (v) into tbl and returns the server's cluster_name, which the
// classifier cannot see writing; every replica has it when it returns, and
// it is dropped when the test ends. On a replica that has not replayed it
// yet a call fails with 42883 (undefined function), which is not a
// misroute.
func createWritingFunction(t *testing.T, ctx context.Context, db *dbrouter.DB, c *pgcluster.Cluster, tbl, v string) string {
	t.Helper()
	fn := uniqueName(t, "f")
	_, err := db.ExecContext(ctx, fmt.Sprintf(`CREATE FUNCTION %s() RETURNS text LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO %s (v) VALUES ('%s');
			RETURN current_setting('cluster_name');
		END $$`, fn, tbl, v))
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		assert.NoError(t, c.Primary().Exec(ctx, "DROP FUNCTION IF EXISTS "+fn))
	})
	waitReplicas(t, ctx, c, "function "+fn, "SELECT to_regproc($1) IS NOT NULL", fn)
	return fn
}

// createTable creates a table on the primary through the router (DDL is a
// write: were it sent to a replica, it would fail) whose served_by column
// defaults to the name of the node that inserts the row, and drops it when
// the test ends.
func createTable(t *testing.T, ctx context.Context, db *dbrouter.DB, c *pgcluster.Cluster) string {
	t.Helper()
	name := uniqueName(t, "t")
	_, err := db.ExecContext(ctx, fmt.Sprintf(`CREATE TABLE %s (
		id bigserial PRIMARY KEY,
		v text,
		served_by text NOT NULL DEFAULT current_setting('cluster_name'))`, name))
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		assert.NoError(t, c.Primary().Exec(ctx, "DROP TABLE IF EXISTS "+name+" CASCADE"))
	})
	return name
}

// waitReplicas polls every replica of c, bypassing the router, until query
// (one boolean) is true on each: DDL done on the primary has been replayed.
func waitReplicas(t testing.TB, ctx context.Context, c *pgcluster.Cluster, what, query string, args ...any) {
	t.Helper()
	for _, n := range c.Replicas() {
		h, err := n.Open()
		require.NoError(t, err)
		testwait.For(t, replicationWait, n.Name()+": "+what, func() (bool, error) {
			var ok bool
			err := h.QueryRowContext(ctx, query, args...).Scan(&ok)
			return err == nil && ok, err
		})
		require.NoError(t, h.Close())
	}
}

// sqlStateOf returns the SQLSTATE of err (pgx's *pgconn.PgError, wrapped in a
// *NodeError or not), or "".
func sqlStateOf(err error) string {
	var s interface{ SQLState() string }
	if errors.As(err, &s) {
		return s.SQLState()
	}
	return ""
}

type rowsQuerier interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}

// queryServedBy runs whoServes through q's QueryContext (rather than
// QueryRowContext, as servedBy does) and returns the node's name.
func queryServedBy(t testing.TB, ctx context.Context, q rowsQuerier) string {
	t.Helper()
	rows, err := q.QueryContext(ctx, whoServes)
	require.NoError(t, err)
	return onlyString(t, rows)
}

// onlyString reads the only row of rows, one text column, and closes rows.
func onlyString(t testing.TB, rows *sql.Rows) string {
	t.Helper()
	defer rows.Close()
	require.True(t, rows.Next(), "no row: %v", rows.Err())
	var s string
	require.NoError(t, rows.Scan(&s))
	require.False(t, rows.Next(), "more than one row")
	require.NoError(t, rows.Err())
	return s
}

// tallyServers calls served n times and counts the node names it returns.
func tallyServers(n int, served func() string) map[string]int {
	got := map[string]int{}
	for range n {
		got[served()]++
	}
	return got
}

// preparedRow and routedRow adapt a *sql.Stmt and a *Stmt to servedBy.
type (
	preparedRow struct{ st *sql.Stmt }
	routedRow   struct{ st *dbrouter.Stmt }
)

func (p preparedRow) QueryRowContext(ctx context.Context, _ string, args ...any) *sql.Row {
	return p.st.QueryRowContext(ctx, args...)
}

func (r routedRow) QueryRowContext(ctx context.Context, _ string, args ...any) *sql.Row {
	return r.st.QueryRowContext(ctx, args...)
}

// statusByName returns the nodes of s by name.
func statusByName(s dbrouter.Status) map[string]dbrouter.NodeStatus {
	m := map[string]dbrouter.NodeStatus{}
	for _, n := range s.Nodes {
		m[n.Name] = n
	}
	return m
}

// totalMisroutes sums the Misroutes of every node of s.
func totalMisroutes(s dbrouter.Status) (sum uint64) {
	for _, n := range s.Nodes {
		sum += n.Misroutes
	}
	return sum
}

func TestIntegrationReadsRoundRobinOverReplicas(t *testing.T) {
	c := sharedCluster(t)
	db := openIntegrationRouter(t, c)
	ctx := testContext(t, integrationTimeout)

	// The counter starts at a random replica, so check the split (and that
	// two reads in a row never hit the same replica), not who comes first.
	for _, tc := range []struct {
		name   string
		served func() string
	}{
		{"QueryRow", func() string { return servedBy(t, ctx, db) }},
		{"Query", func() string { return queryServedBy(t, ctx, db) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var prev string
			got := tallyServers(20, func() string {
				name := tc.served()
				assert.NotEqual(t, prev, name, "two reads in a row on the same replica")
				prev = name
				return name
			})
			assert.Equal(t, map[string]int{"node1": 10, "node2": 10}, got)
		})
	}

	st := statusByName(db.Status())
	assert.Equal(t, uint64(20), st["node1"].Reads)
	assert.Equal(t, uint64(20), st["node2"].Reads)
	assert.Zero(t, st["node0"].Reads+st["node0"].Writes, "the primary served a read")
}

func TestIntegrationWritesGoToPrimary(t *testing.T) {
	c := sharedCluster(t)
	db := openIntegrationRouter(t, c)
	ctx := testContext(t, integrationTimeout)
	tbl := createTable(t, ctx, db, c)

	t.Run("Exec", func(t *testing.T) {
		for range 5 {
			_, err := db.ExecContext(ctx, "INSERT INTO "+tbl+" (v) VALUES ('exec')")
			require.NoError(t, err)
		}
		// The column default ran on the server that inserted the rows; read
		// them back from the primary itself, bypassing the router.
		rows, servers := storedBy(t, ctx, c, tbl, "v = 'exec'")
		assert.Equal(t, 5, rows)
		assert.Equal(t, "node0", servers)
	})

	t.Run("QueryRow INSERT RETURNING", func(t *testing.T) {
		var name string
		require.NoError(t, db.QueryRowContext(ctx,
			"INSERT INTO "+tbl+" (v) VALUES ('returning') RETURNING current_setting('cluster_name')").Scan(&name))
		assert.Equal(t, "node0", name)
	})

	t.Run("Query SELECT FOR UPDATE", func(t *testing.T) {
		rows, err := db.QueryContext(ctx,
			"SELECT current_setting('cluster_name') FROM "+tbl+" WHERE v = 'returning' FOR UPDATE")
		require.NoError(t, err)
		assert.Equal(t, "node0", onlyString(t, rows))
	})

	// A replica would have refused each of those with 25006 and the router
	// would have run it again on the primary: prove that none went there
	// first.
	s := db.Status()
	assert.Zero(t, totalMisroutes(s), "a write was first sent to a replica")
	st := statusByName(s)
	assert.Equal(t, uint64(1+5+2), st["node0"].Writes, "CREATE + 5 Exec + INSERT RETURNING + FOR UPDATE")
	for _, r := range []string{"node1", "node2"} {
		assert.Zero(t, st[r].Writes+st[r].Reads+st[r].Errors, "%s served a statement", r)
	}
}

func TestIntegrationTransactions(t *testing.T) {
	c := sharedCluster(t)
	db := openIntegrationRouter(t, c)
	ctx := testContext(t, integrationTimeout)
	tbl := createTable(t, ctx, db, c)
	waitReplicas(t, ctx, c, "table "+tbl, "SELECT to_regclass($1) IS NOT NULL", tbl)

	t.Run("read-write on the primary", func(t *testing.T) {
		tx, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		defer tx.Rollback()
		assert.Equal(t, "node0", servedBy(t, ctx, tx))
		_, err = tx.ExecContext(ctx, "INSERT INTO "+tbl+" (v) VALUES ('tx')")
		require.NoError(t, err)
		var servedByInTx string
		require.NoError(t, tx.QueryRowContext(ctx, "SELECT served_by FROM "+tbl+" WHERE v = 'tx'").Scan(&servedByInTx))
		assert.Equal(t, "node0", servedByInTx, "the transaction sees its own uncommitted row, written on node0")
		assert.Equal(t, "node0", queryServedBy(t, ctx, tx))
		require.NoError(t, tx.Commit())
	})

	t.Run("read-only on a replica", func(t *testing.T) {
		seen := map[string]int{}
		for range 4 {
			tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
			require.NoError(t, err)
			name := servedBy(t, ctx, tx)
			assert.Contains(t, []string{"node1", "node2"}, name)
			seen[name]++
			var inRecovery bool
			require.NoError(t, tx.QueryRowContext(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery))
			assert.True(t, inRecovery)

			_, err = tx.ExecContext(ctx, "INSERT INTO "+tbl+" (v) VALUES ('read-only tx')")
			require.Error(t, err)
			assert.Equal(t, "25006", sqlStateOf(err), "write in a read-only transaction: %v", err)
			require.NoError(t, tx.Rollback())
		}
		assert.Equal(t, map[string]int{"node1": 2, "node2": 2}, seen, "read-only transactions are balanced too")
	})

	t.Run("read-only serializable on the primary", func(t *testing.T) {
		tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelSerializable})
		require.NoError(t, err)
		defer tx.Rollback()
		assert.Equal(t, "node0", servedBy(t, ctx, tx))
		var iso string
		require.NoError(t, tx.QueryRowContext(ctx, "SHOW transaction_isolation").Scan(&iso))
		assert.Equal(t, "serializable", iso)
		require.NoError(t, tx.Commit())
	})

	t.Run("read-only with WithReadOnlyTxOnReplica(false)", func(t *testing.T) {
		db := openIntegrationRouter(t, c, dbrouter.WithReadOnlyTxOnReplica(false))
		tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		require.NoError(t, err)
		defer tx.Rollback()
		assert.Equal(t, "node0", servedBy(t, ctx, tx))
		require.NoError(t, tx.Commit())
	})

	var rows int
	require.NoError(t, c.Primary().QueryRow(ctx, "SELECT count(*) FROM "+tbl+" WHERE v = 'tx'", &rows))
	assert.Equal(t, 1, rows, "the committed read-write transaction's row is on the primary")
}

func TestIntegrationUsePrimaryAndConn(t *testing.T) {
	c := sharedCluster(t)
	db := openIntegrationRouter(t, c)
	ctx := testContext(t, integrationTimeout)

	t.Run("UsePrimary", func(t *testing.T) {
		pctx := dbrouter.UsePrimary(ctx)
		for range 6 {
			assert.Equal(t, "node0", servedBy(t, pctx, db))
			assert.Equal(t, "node0", queryServedBy(t, pctx, db))
		}
		// Without it, the same context's reads go to replicas again.
		assert.Contains(t, []string{"node1", "node2"}, servedBy(t, ctx, db))
	})

	t.Run("Conn", func(t *testing.T) {
		conn, err := db.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close()
		for range 3 {
			assert.Equal(t, "node0", servedBy(t, ctx, conn))
		}
		// Session state stays on the one connection.
		_, err = conn.ExecContext(ctx, "SET application_name = 'dbrouter-conn-test'")
		require.NoError(t, err)
		var app string
		require.NoError(t, conn.QueryRowContext(ctx, "SELECT current_setting('application_name')").Scan(&app))
		assert.Equal(t, "dbrouter-conn-test", app)
	})
}

func TestIntegrationPrepare(t *testing.T) {
	c := sharedCluster(t)
	db := openIntegrationRouter(t, c)
	ctx := testContext(t, integrationTimeout)
	tbl := createTable(t, ctx, db, c)

	t.Run("PrepareContext reads spread over both replicas", func(t *testing.T) {
		st, err := db.PrepareContext(ctx, whoServes)
		require.NoError(t, err)
		defer st.Close()
		got := tallyServers(20, func() string { return servedBy(t, ctx, preparedRow{st}) })
		assert.Equal(t, map[string]int{"node1": 10, "node2": 10}, got, "a *sql.Stmt from Prepare is routed every time it runs")
	})

	t.Run("PrepareContext write on the primary", func(t *testing.T) {
		st, err := db.PrepareContext(ctx, "INSERT INTO "+tbl+" (v) VALUES ($1) RETURNING current_setting('cluster_name')")
		require.NoError(t, err)
		defer st.Close()
		var name string
		require.NoError(t, st.QueryRowContext(ctx, "prepared").Scan(&name))
		assert.Equal(t, "node0", name)
	})

	t.Run("PrepareRouted reads spread over both replicas", func(t *testing.T) {
		st, err := db.PrepareRouted(ctx, whoServes)
		require.NoError(t, err)
		defer st.Close()
		got := tallyServers(20, func() string { return servedBy(t, ctx, routedRow{st}) })
		assert.Equal(t, map[string]int{"node1": 10, "node2": 10}, got)
		got = tallyServers(10, func() string {
			rows, err := st.QueryContext(ctx)
			require.NoError(t, err)
			return onlyString(t, rows)
		})
		assert.Equal(t, map[string]int{"node1": 5, "node2": 5}, got)
	})

	t.Run("PrepareRouted write on the primary", func(t *testing.T) {
		st, err := db.PrepareRouted(ctx, "INSERT INTO "+tbl+" (v) VALUES ($1) RETURNING current_setting('cluster_name')")
		require.NoError(t, err)
		defer st.Close()
		for range 4 {
			var name string
			require.NoError(t, st.QueryRowContext(ctx, "routed").Scan(&name))
			assert.Equal(t, "node0", name)
		}
		ex, err := db.PrepareRouted(ctx, "INSERT INTO "+tbl+" (v) VALUES ($1)")
		require.NoError(t, err)
		defer ex.Close()
		_, err = ex.ExecContext(ctx, "routed exec")
		require.NoError(t, err)

		rows, servers := storedBy(t, ctx, c, tbl, "v LIKE 'routed%'")
		assert.Equal(t, 5, rows)
		assert.Equal(t, "node0", servers)
	})

	assert.Zero(t, totalMisroutes(db.Status()), "a statement was first sent to a replica")
}

func TestIntegrationCustomRouter(t *testing.T) {
	c := sharedCluster(t)
	var (
		mu   sync.Mutex
		seen = map[bool]int{} // analytics statements the router saw, by write
	)
	analytics := func(_ context.Context, query string, write bool) dbrouter.Target {
		if !strings.HasPrefix(query, "/* analytics */") {
			return dbrouter.Default
		}
		mu.Lock()
		seen[write]++
		mu.Unlock()
		return dbrouter.NodeNamed("node2")
	}
	db := openIntegrationRouter(t, c, dbrouter.WithRouter(analytics))
	ctx := testContext(t, integrationTimeout)
	tbl := createTable(t, ctx, db, c)

	// Honoured for reads: every analytics read on node2.
	got := tallyServers(10, func() string {
		var name string
		require.NoError(t, db.QueryRowContext(ctx, "/* analytics */ "+whoServes).Scan(&name))
		return name
	})
	assert.Equal(t, map[string]int{"node2": 10}, got)
	rows, err := db.QueryContext(ctx, "/* analytics */ "+whoServes)
	require.NoError(t, err)
	assert.Equal(t, "node2", onlyString(t, rows))

	// Other reads keep the built-in balancing.
	got = tallyServers(10, func() string { return servedBy(t, ctx, db) })
	assert.Equal(t, map[string]int{"node1": 5, "node2": 5}, got)

	// Ignored for writes: a replica never gets one.
	var name string
	require.NoError(t, db.QueryRowContext(ctx,
		"/* analytics */ INSERT INTO "+tbl+" (v) VALUES ('analytics') RETURNING current_setting('cluster_name')").Scan(&name))
	assert.Equal(t, "node0", name)
	_, err = db.ExecContext(ctx, "/* analytics */ INSERT INTO "+tbl+" (v) VALUES ('analytics')")
	require.NoError(t, err)
	var servers string
	require.NoError(t, c.Primary().QueryRow(ctx,
		"SELECT string_agg(DISTINCT served_by, ',') FROM "+tbl+" WHERE v = 'analytics'", &servers))
	assert.Equal(t, "node0", servers)

	mu.Lock()
	assert.Equal(t, map[bool]int{false: 11, true: 2}, seen, "the router was asked about every analytics statement")
	mu.Unlock()
	st := statusByName(db.Status())
	assert.Zero(t, st["node2"].Writes+st["node2"].Errors+st["node2"].Misroutes)
}

// TestIntegrationMisroutedReadRunsOnPrimary: a volatile function that writes
// looks like a read to the classifier; the replica refuses it with SQLSTATE
// 25006 and the router runs it again on the primary, counting a misroute.
func TestIntegrationMisroutedReadRunsOnPrimary(t *testing.T) {
	c := sharedCluster(t)
	db := openIntegrationRouter(t, c)
	ctx := testContext(t, integrationTimeout)
	tbl := createTable(t, ctx, db, c)
	fn := createWritingFunction(t, ctx, db, c, tbl, "misrouted")
	call := "SELECT " + fn + "()"

	replicaMisroutes := func() map[string]uint64 {
		st := statusByName(db.Status())
		return map[string]uint64{"node1": st["node1"].Misroutes, "node2": st["node2"].Misroutes}
	}

	// First call: one replica refuses it, the primary runs it.
	var name string
	require.NoError(t, db.QueryRowContext(ctx, call).Scan(&name))
	assert.Equal(t, "node0", name)
	first := replicaMisroutes()
	assert.ElementsMatch(t, []uint64{0, 1}, []uint64{first["node1"], first["node2"]}, "one misroute, on the replica asked first: %v", first)

	// Second call: round-robin asks the other replica.
	require.NoError(t, db.QueryRowContext(ctx, call).Scan(&name))
	assert.Equal(t, "node0", name)
	assert.Equal(t, map[string]uint64{"node1": 1, "node2": 1}, replicaMisroutes())

	// Query goes through the same safety net.
	for range 2 {
		rows, err := db.QueryContext(ctx, call)
		require.NoError(t, err)
		assert.Equal(t, "node0", onlyString(t, rows))
	}
	assert.Equal(t, map[string]uint64{"node1": 2, "node2": 2}, replicaMisroutes())

	s := db.Status()
	assert.Equal(t, uint64(4), totalMisroutes(s), "one misroute per call")
	st := statusByName(s)
	assert.Equal(t, uint64(2), st["node1"].Errors)
	assert.Equal(t, uint64(2), st["node2"].Errors)
	assert.Equal(t, uint64(4), st["node0"].Reads, "each call ran again on the primary")
	assert.Zero(t, st["node0"].Errors)
	assert.Equal(t, "node0", s.Primary, "a replica's 25006 does not make the router doubt the primary")

	rows, servers := storedBy(t, ctx, c, tbl, "v = 'misrouted'")
	assert.Equal(t, 4, rows, "each call inserted exactly one row, on the primary")
	assert.Equal(t, "node0", servers)
}

func TestIntegrationWriteThenReadFromReplicas(t *testing.T) {
	c := sharedCluster(t)
	db := openIntegrationRouter(t, c)
	ctx := testContext(t, integrationTimeout)
	tbl := createTable(t, ctx, db, c)

	value := uniqueName(t, "v")
	_, err := db.ExecContext(ctx, "INSERT INTO "+tbl+" (v) VALUES ($1)", value)
	require.NoError(t, err)

	// Poll through the router until each replica has served the row back.
	// Until then the table or the row may be missing on the replica asked.
	saw := map[string]string{} // replica -> served_by of the row it returned
	testwait.For(t, replicationWait, "both replicas to return the row", func() (bool, error) {
		var reader, writer string
		err := db.QueryRowContext(ctx,
			"SELECT current_setting('cluster_name'), served_by FROM "+tbl+" WHERE v = $1", value).Scan(&reader, &writer)
		if err != nil {
			return false, err
		}
		saw[reader] = writer
		return len(saw) == 2, nil
	})
	assert.Equal(t, map[string]string{"node1": "node0", "node2": "node0"}, saw,
		"the row written on node0 was read back from each replica")
	assert.Zero(t, statusByName(db.Status())["node0"].Reads, "no read fell back to the primary")
}

// TestIntegrationSessionReadsItsWrites: under a session, a read right after a
// write always sees it, wherever it is served.
func TestIntegrationSessionReadsItsWrites(t *testing.T) {
	c := sharedCluster(t)
	db := openIntegrationRouter(t, c)
	ctx := testContext(t, integrationTimeout)
	tbl := createTable(t, ctx, db, c)
	waitReplicas(t, ctx, c, "table "+tbl, "SELECT to_regclass($1) IS NOT NULL", tbl)

	s := dbrouter.NewSession()
	sctx := dbrouter.WithSession(ctx, s)
	for i := range 20 {
		v := fmt.Sprintf("session %d", i)
		_, err := db.ExecContext(sctx, "INSERT INTO "+tbl+" (v) VALUES ($1)", v)
		require.NoError(t, err)
		var n int
		require.NoError(t, db.QueryRowContext(sctx, "SELECT count(*) FROM "+tbl+" WHERE v = $1", v).Scan(&n))
		require.Equal(t, 1, n, "read %d did not see its own write", i)
	}

	// Once a replica has replayed the session's last write and a probe saw
	// it, the session's reads go to replicas again.
	testwait.For(t, replicationWait, "a session read served by a replica", func() (bool, error) {
		var name string
		err := db.QueryRowContext(dbrouter.WithSession(ctx, s), whoServes).Scan(&name)
		return err == nil && name != "node0", err
	})

	// The session crosses a process boundary as a token.
	resumed, err := dbrouter.ResumeSession(s.Token())
	require.NoError(t, err)
	var n int
	require.NoError(t, db.QueryRowContext(dbrouter.WithSession(ctx, resumed), "SELECT count(*) FROM "+tbl).Scan(&n))
	assert.Equal(t, 20, n)
}

func TestIntegrationStatus(t *testing.T) {
	c := sharedCluster(t)
	db := openIntegrationRouter(t, c)

	s := db.Status()
	assert.Equal(t, "node0", s.Primary)
	require.Len(t, s.Nodes, 3)
	p := s.Nodes[0]
	assert.Equal(t, "node0", p.Name)
	assert.Equal(t, dbrouter.RolePrimary, p.ConfiguredRole)
	assert.Equal(t, dbrouter.RolePrimary, p.Role)
	assert.Equal(t, dbrouter.StateUp, p.State)
	assert.False(t, p.Readable, "the primary is not among the read replicas")
	assert.Equal(t, uint32(1), p.Timeline)
	assert.NotZero(t, p.LSN)
	assert.NoError(t, p.LastError)
	for i, name := range []string{"node1", "node2"} {
		r := s.Nodes[i+1]
		assert.Equal(t, name, r.Name)
		assert.Equal(t, dbrouter.RoleReplica, r.ConfiguredRole)
		assert.Equal(t, dbrouter.RoleReplica, r.Role, name)
		assert.Equal(t, dbrouter.StateUp, r.State, name)
		assert.True(t, r.Readable, name)
		assert.Equal(t, uint32(1), r.Timeline, name)
		assert.NotZero(t, r.LSN, name)
		assert.True(t, r.Streaming, name)
		assert.False(t, r.LagExcluded || r.StaleTimeline, name)
		assert.NoError(t, r.LastError, name)
	}
}

// TestIntegrationNamesHidePasswords: with DSNs that carry a password (the
// cluster trusts 127.0.0.1, so it is not checked), nodes are named
// host:port/dbname in Status and in errors.
func TestIntegrationNamesHidePasswords(t *testing.T) {
	c := sharedCluster(t)
	ctx := testContext(t, integrationTimeout)
	const secret = "s3cr3t-pw"
	withPassword := func(n *pgcluster.Node) string {
		return strings.Replace(n.DSN(), "postgres://postgres@", "postgres://postgres:"+secret+"@", 1)
	}
	var replicas []string
	for _, n := range c.Replicas() {
		replicas = append(replicas, withPassword(n))
	}
	db, err := dbrouter.Open("pgx", withPassword(c.Primary()), replicas, dbrouter.WithProbeTimeout(10*time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, db.Close()) })

	s := db.Status()
	require.Len(t, s.Nodes, 3)
	for i, n := range c.Nodes() {
		assert.Equal(t, n.Addr()+"/postgres", s.Nodes[i].Name)
		assert.NotContains(t, s.Nodes[i].Name, secret)
	}
	assert.Equal(t, c.Primary().Addr()+"/postgres", s.Primary)
	assert.NotContains(t, fmt.Sprintf("%+v", s), secret)

	// It works, and an error names the node without the password.
	assert.Contains(t, []string{"node1", "node2"}, servedBy(t, ctx, db))
	_, err = db.QueryContext(ctx, "SELECT * FROM no_such_table_anywhere")
	require.Error(t, err)
	var ne *dbrouter.NodeError
	require.ErrorAs(t, err, &ne)
	assert.Contains(t, []string{c.Nodes()[1].Addr() + "/postgres", c.Nodes()[2].Addr() + "/postgres"}, ne.Node)
	assert.Equal(t, "42P01", sqlStateOf(err), "undefined_table, through the *NodeError")
	assert.NotContains(t, err.Error(), secret)
}

// TestIntegrationErrorsUnwrapToPgError: a node's error names the node and
// still unwraps to pgx's own error type.
func TestIntegrationErrorsUnwrapToPgError(t *testing.T) {
	c := sharedCluster(t)
	ctx := testContext(t, time.Minute)
	db := openRouter(t, c)

	_, err := db.QueryContext(ctx, "SELECT * FROM no_such_table_here")
	var ne *dbrouter.NodeError
	require.ErrorAs(t, err, &ne)
	assert.Contains(t, []string{"node1", "node2"}, ne.Node)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	assert.Equal(t, "42P01", pgErr.Code)

	_, err = db.ExecContext(ctx, "UPDATE no_such_table_here SET a = 1")
	require.ErrorAs(t, err, &ne)
	assert.Equal(t, "node0", ne.Node)
	assert.Equal(t, "exec", ne.Op)
	require.ErrorAs(t, err, &pgErr)
	assert.Equal(t, "42P01", pgErr.Code)
}

// storedBy reads, on the primary itself (bypassing the router), how many rows
// of tbl match cond and which servers inserted them (the served_by default).
func storedBy(t *testing.T, ctx context.Context, c *pgcluster.Cluster, tbl, cond string) (rows int, servers string) {
	t.Helper()
	require.NoError(t, c.Primary().QueryRow(ctx,
		"SELECT count(*), coalesce(string_agg(DISTINCT served_by, ','), '') FROM "+tbl+" WHERE "+cond, &rows, &servers))
	return rows, servers
}
