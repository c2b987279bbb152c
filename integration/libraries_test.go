package integration

import (
	"github.com/dbrouter/dbrouter/internal/testwait"

	"github.com/dbrouter/dbrouter"

	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

// The libraries of the Go ecosystem that take a *sql.DB (sqlx, bun, ent,
// goose, River) or a connection pool (GORM, sqlc's DBTX), on a real primary
// and 2 replicas through DB.SQL() (GORM and sqlc through the *dbrouter.DB
// itself). Each test proves server-side which node ran what
// (current_setting('cluster_name'), pg_is_in_recovery(), a served_by column
// defaulting to the cluster_name of the node that inserted the row), and
// that no statement reached a replica and failed there, even one a retry
// would have hidden: the replicas' xact_rollback for the test database does
// not move across the test, and the router counts no misroute.

// libRouter is a router over the shared cluster for one library test. Every
// server connection it opens carries application_name app, every statement
// it routes is recorded, and when the test ends it is closed and checked for
// misroutes (see finish).
type libRouter struct {
	*dbrouter.DB
	c        *pgcluster.Cluster
	app      string
	log      stmtLog
	before   map[string]int64 // the replicas' xact_rollback when it opened
	finished bool
}

// libSetup is what a library's test starts from: a router on the shared
// cluster (see openLibRouter), the test's context, and a createTable table
// that every replica has.
func libSetup(t *testing.T) (*pgcluster.Cluster, *libRouter, context.Context, string) {
	t.Helper()
	c := sharedCluster(t)
	lr := openLibRouter(t, c)
	ctx := testContext(t, integrationTimeout)
	tbl := createTable(t, ctx, lr.DB, c)
	waitTable(t, ctx, c, tbl)
	return c, lr, ctx, tbl
}

// openLibRouter opens a libRouter on c, whose node0 is the primary and
// node1 and node2 its replicas, and checks it when the test ends: no
// misroute, by the router's count and by the replicas' own.
func openLibRouter(t *testing.T, c *pgcluster.Cluster, opts ...dbrouter.Option) *libRouter {
	t.Helper()
	ctx := testContext(t, integrationTimeout)
	lr := &libRouter{c: c, app: uniqueName(t, "lib")}
	lr.before = replicaRollbacks(t, ctx, c, "")
	var dsns, names []string
	for _, n := range c.Nodes() {
		dsns = append(dsns, n.DSN()+"&application_name="+lr.app)
		names = append(names, n.Name())
	}
	opts = append([]dbrouter.Option{dbrouter.WithProbeTimeout(10 * time.Second), dbrouter.WithStatementHook(lr.log.add)}, opts...)
	lr.DB = openDSNs(t, dsns, names, opts...)
	t.Cleanup(func() {
		if lr.finished {
			return
		}
		f := lr.finish(t)
		assert.Zero(t, f.misroutes, "the router counted misroutes")
		assert.Empty(t, f.failed, "statements run twice, or failed on a replica")
		assert.Equal(t, map[string]int64{"node1": 0, "node2": 0}, f.rollbacks,
			"statements failed on the replicas (xact_rollback moved): misroutes, or reads of what a replica lacked")
	})
	return lr
}

// finished is what finish found.
type finished struct {
	misroutes uint64           // the router's count
	failed    []string         // statements the hook saw run twice, or fail on a replica
	rollbacks map[string]int64 // by replica, how much xact_rollback of the test database moved, beyond the statements the library cancelled there
}

// finish closes the router and returns its misroute count, the statements
// its hook saw misrouted, retried or failing on a replica, and, by replica,
// how much xact_rollback of the test database moved since it opened. A
// statement refused by a replica, even one the router then ran again on the
// primary, rolls back the replica's transaction.
//
// A backend may keep its statistics unflushed while it idles (up to 10 s)
// but flushes them when it exits, so the replicas are read once every server
// connection of the router is gone (application_name app absent from
// pg_stat_activity). An exiting backend leaves pg_stat_activity a few
// instructions before it flushes; the read comes over a new connection,
// milliseconds later.
func (lr *libRouter) finish(t *testing.T) finished {
	t.Helper()
	lr.finished = true
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := finished{misroutes: totalMisroutes(lr.Status()), rollbacks: map[string]int64{}}
	cancelled := map[string]int64{} // by replica: statements the library cancelled there, each of which may roll back
	for _, s := range lr.log.snapshot() {
		if s.Err != nil && s.Node != "node0" && errors.Is(s.Err, context.Canceled) {
			cancelled[s.Node]++
		}
		switch {
		case s.Reason == dbrouter.ReasonMisroute || s.Reason == dbrouter.ReasonRetry:
			f.failed = append(f.failed, fmt.Sprintf("%s on %s: %.80q", s.Reason, s.Node, s.Query))
		case s.Err != nil && s.Node != "node0" && !errors.Is(s.Err, context.Canceled):
			// (A library that stops cancels the statements it has in
			// flight, River's workers among them: not a failure of a node.)
			f.failed = append(f.failed, fmt.Sprintf("failed on %s: %.80q: %v", s.Node, s.Query, s.Err))
		}
	}
	require.NoError(t, lr.Close())
	moved := map[string]int64{}
	for name, n := range replicaRollbacks(t, ctx, lr.c, lr.app) {
		moved[name] = n - lr.before[name]
		f.rollbacks[name] = max(0, moved[name]-cancelled[name])
	}
	t.Logf("%s: %d statements routed %v; misroutes: router %d, replicas' xact_rollback moved by %v, statements cancelled there by the library %v",
		t.Name(), len(lr.log.snapshot()), lr.log.byNode(0), f.misroutes, moved, cancelled)
	return f
}

// replicaRollbacks returns xact_rollback of the test database on each
// replica of c, once no client backend is left there but the one asking, or,
// when app is set, none of application_name app.
func replicaRollbacks(t *testing.T, ctx context.Context, c *pgcluster.Cluster, app string) map[string]int64 {
	t.Helper()
	others := "backend_type = 'client backend' AND datname = current_database() AND pid <> pg_backend_pid()"
	if app != "" {
		others = "application_name = '" + app + "'"
	}
	out := map[string]int64{}
	for _, r := range c.Replicas() {
		var left string
		testwait.For(t, 30*time.Second, r.Name()+": the backends gone that may hold unflushed statistics", func() (bool, error) {
			err := r.QueryRow(ctx, "SELECT coalesce(string_agg(application_name || ' ' || state || ': ' || left(query, 60), '; '), '') FROM pg_stat_activity WHERE "+others, &left)
			if err == nil && left != "" {
				err = fmt.Errorf("still there: %s", left)
			}
			return err == nil, err
		})
		var n int64
		require.NoError(t, r.QueryRow(ctx, "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()", &n))
		out[r.Name()] = n
	}
	return out
}

// stmtLog records the statements a router routed, from its statement hook.
type stmtLog struct {
	mu  sync.Mutex
	all []dbrouter.Statement
}

func (l *stmtLog) add(s dbrouter.Statement) {
	l.mu.Lock()
	l.all = append(l.all, s)
	l.mu.Unlock()
}

// mark returns how many statements were routed so far, for since and byNode.
func (l *stmtLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.all)
}

func (l *stmtLog) snapshot() []dbrouter.Statement {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all)
}

// since returns the statements routed after mark m.
func (l *stmtLog) since(m int) []dbrouter.Statement { return l.snapshot()[m:] }

// byNode counts the statements routed after mark m by the node that ran
// them.
func (l *stmtLog) byNode(m int) map[string]int {
	got := map[string]int{}
	for _, s := range l.since(m) {
		got[s.Node]++
	}
	return got
}

// notOn returns the statements after mark m that ran elsewhere than on node.
func (l *stmtLog) notOn(m int, node string) []string {
	var out []string
	for _, s := range l.since(m) {
		if s.Node != node {
			out = append(out, fmt.Sprintf("%s (%s): %.100q", s.Node, s.Reason, s.Query))
		}
	}
	return out
}

// waitRows waits until every replica of c holds n rows of tbl matching cond.
func waitRows(t *testing.T, ctx context.Context, c *pgcluster.Cluster, tbl, cond string, n int) {
	t.Helper()
	waitReplicas(t, ctx, c, fmt.Sprintf("%d rows of %s where %s", n, tbl, cond),
		"SELECT count(*) = $1 FROM "+tbl+" WHERE "+cond, n)
}

// waitTable waits until every replica of c has the table (or index) name.
func waitTable(t *testing.T, ctx context.Context, c *pgcluster.Cluster, name string) {
	t.Helper()
	waitReplicas(t, ctx, c, "relation "+name, "SELECT to_regclass($1) IS NOT NULL", name)
}

// TestIntegrationLibrariesMisrouteCheck proves the check every library test
// ends with: a read that the classifier cannot tell writes, refused by a
// replica and run again on the primary, moves that replica's xact_rollback
// by one and the router's misroute count by one.
func TestIntegrationLibrariesMisrouteCheck(t *testing.T) {
	c := sharedCluster(t)
	lr := openLibRouter(t, c)
	ctx := testContext(t, integrationTimeout)
	tbl := createTable(t, ctx, lr.DB, c)
	fn := createWritingFunction(t, ctx, lr.DB, c, tbl, "hidden")

	var name string
	require.NoError(t, lr.SQL().QueryRowContext(ctx, "SELECT "+fn+"()").Scan(&name))
	assert.Equal(t, "node0", name, "the retry hid the misroute from the caller")

	f := lr.finish(t)
	assert.Equal(t, uint64(1), f.misroutes)
	require.Len(t, f.failed, 2, "the hook saw it fail on a replica, then run again: %q", f.failed)
	assert.Contains(t, f.failed[0], "failed on node")
	assert.Contains(t, f.failed[1], "misroute on node0")
	assert.ElementsMatch(t, []int64{0, 1}, []int64{f.rollbacks["node1"], f.rollbacks["node2"]},
		"the replica that refused it rolled back once: %v", f.rollbacks)
}

// sqlxRow is a row of a createTable table, with the node that read it.
type sqlxRow struct {
	ID       int64  `db:"id"`
	V        string `db:"v"`
	ServedBy string `db:"served_by"`
	Reader   string `db:"reader"`
}

func TestIntegrationLibrariesSQLx(t *testing.T) {
	c, lr, ctx, tbl := libSetup(t)
	x := sqlx.NewDb(lr.SQL(), "pgx")

	t.Run("NamedExec on the primary", func(t *testing.T) {
		for i := range 4 {
			_, err := x.NamedExecContext(ctx, "INSERT INTO "+tbl+" (v) VALUES (:v)", map[string]any{"v": fmt.Sprintf("sqlx %d", i)})
			require.NoError(t, err)
		}
		rows, servers := storedBy(t, ctx, c, tbl, "v LIKE 'sqlx %'")
		assert.Equal(t, 4, rows)
		assert.Equal(t, "node0", servers)
	})
	waitRows(t, ctx, c, tbl, "v LIKE 'sqlx %'", 4)

	const read = "SELECT id, v, served_by, current_setting('cluster_name') AS reader FROM "
	t.Run("Get and Select on the replicas", func(t *testing.T) {
		got := tallyServers(10, func() string {
			var r sqlxRow
			require.NoError(t, x.GetContext(ctx, &r, read+tbl+" WHERE v = $1", "sqlx 0"))
			assert.Equal(t, "node0", r.ServedBy)
			return r.Reader
		})
		assert.Equal(t, map[string]int{"node1": 5, "node2": 5}, got)

		got = tallyServers(4, func() string {
			var rs []sqlxRow
			require.NoError(t, x.SelectContext(ctx, &rs, read+tbl+" WHERE v LIKE 'sqlx %' ORDER BY id"))
			require.Len(t, rs, 4)
			for _, r := range rs {
				assert.Equal(t, rs[0].Reader, r.Reader, "one query, one node")
			}
			return rs[0].Reader
		})
		assert.Equal(t, map[string]int{"node1": 2, "node2": 2}, got)

		st, err := x.PreparexContext(ctx, read+tbl+" WHERE v = $1")
		require.NoError(t, err)
		defer st.Close()
		got = tallyServers(4, func() string {
			var r sqlxRow
			require.NoError(t, st.GetContext(ctx, &r, "sqlx 1"))
			return r.Reader
		})
		assert.Equal(t, map[string]int{"node1": 2, "node2": 2}, got, "a prepared statement is routed every time it runs")
	})

	t.Run("Beginx on the primary", func(t *testing.T) {
		m := lr.log.mark()
		tx, err := x.BeginTxx(ctx, nil)
		require.NoError(t, err)
		defer tx.Rollback()
		var inRecovery bool
		require.NoError(t, tx.GetContext(ctx, &inRecovery, "SELECT pg_is_in_recovery()"))
		assert.False(t, inRecovery)
		_, err = tx.NamedExecContext(ctx, "INSERT INTO "+tbl+" (v) VALUES (:v)", sqlxRow{V: "sqlx tx"})
		require.NoError(t, err)
		var r sqlxRow
		require.NoError(t, tx.GetContext(ctx, &r, read+tbl+" WHERE v = $1", "sqlx tx"))
		assert.Equal(t, sqlxRow{ID: r.ID, V: "sqlx tx", ServedBy: "node0", Reader: "node0"}, r, "it reads its own uncommitted row")
		var rs []sqlxRow
		require.NoError(t, tx.SelectContext(ctx, &rs, read+tbl+" ORDER BY id"))
		assert.Len(t, rs, 5)
		require.NoError(t, tx.Commit())
		assert.Empty(t, lr.log.notOn(m, "node0"), "every statement of the transaction ran on the primary")

		rows, servers := storedBy(t, ctx, c, tbl, "v = 'sqlx tx'")
		assert.Equal(t, 1, rows)
		assert.Equal(t, "node0", servers)
	})
}

// bunItem is a row of a createTable table, for bun: served_by is left to
// its default when inserting; reader only scanned.
type bunItem struct {
	ID       int64  `bun:"id,pk,autoincrement"`
	V        string `bun:"v"`
	ServedBy string `bun:"served_by,nullzero"`
	Reader   string `bun:"reader,scanonly"`
}

func TestIntegrationLibrariesBun(t *testing.T) {
	c, lr, ctx, tbl := libSetup(t)
	bdb := bun.NewDB(lr.SQL(), pgdialect.New())
	model := tbl + " AS bun_item"

	var inserted []int64
	t.Run("insert on the primary", func(t *testing.T) {
		for i := range 3 {
			it := bunItem{V: fmt.Sprintf("bun %d", i)}
			_, err := bdb.NewInsert().Model(&it).ModelTableExpr(model).Returning("id, served_by").Exec(ctx)
			require.NoError(t, err)
			assert.Equal(t, "node0", it.ServedBy, "RETURNING served_by: the node that inserted it")
			assert.NotZero(t, it.ID)
			inserted = append(inserted, it.ID)
		}
		rows, servers := storedBy(t, ctx, c, tbl, "v LIKE 'bun %'")
		assert.Equal(t, 3, rows)
		assert.Equal(t, "node0", servers)
	})
	require.Len(t, inserted, 3)
	waitRows(t, ctx, c, tbl, "v LIKE 'bun %'", 3)

	t.Run("select on the replicas", func(t *testing.T) {
		got := tallyServers(10, func() string {
			var it bunItem
			require.NoError(t, bdb.NewSelect().Model(&it).ModelTableExpr(model).
				Column("bun_item.*").ColumnExpr("current_setting('cluster_name') AS reader").
				Where("bun_item.id = ?", inserted[0]).Scan(ctx))
			assert.Equal(t, bunItem{ID: inserted[0], V: "bun 0", ServedBy: "node0", Reader: it.Reader}, it)
			return it.Reader
		})
		assert.Equal(t, map[string]int{"node1": 5, "node2": 5}, got)

		var items []bunItem
		m := lr.log.mark()
		n, err := bdb.NewSelect().Model(&items).ModelTableExpr(model).Where("v LIKE 'bun %'").Order("id").ScanAndCount(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 3, n)
		assert.Len(t, items, 3)
		assert.Zero(t, lr.log.byNode(m)["node0"], "ScanAndCount: a count and a select, both reads")
	})

	t.Run("RunInTx on the primary", func(t *testing.T) {
		m := lr.log.mark()
		err := bdb.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			var name string
			if err := tx.NewSelect().ColumnExpr("current_setting('cluster_name')").Scan(ctx, &name); err != nil {
				return err
			}
			assert.Equal(t, "node0", name)
			it := bunItem{V: "bun tx"}
			if _, err := tx.NewInsert().Model(&it).ModelTableExpr(model).Returning("id, served_by").Exec(ctx); err != nil {
				return err
			}
			var got bunItem
			if err := tx.NewSelect().Model(&got).ModelTableExpr(model).Column("bun_item.*").
				ColumnExpr("current_setting('cluster_name') AS reader").Where("bun_item.id = ?", it.ID).Scan(ctx); err != nil {
				return err
			}
			assert.Equal(t, bunItem{ID: it.ID, V: "bun tx", ServedBy: "node0", Reader: "node0"}, got, "it reads its own uncommitted row")
			return nil
		})
		require.NoError(t, err)
		assert.Empty(t, lr.log.notOn(m, "node0"), "every statement of the transaction ran on the primary")
		rows, servers := storedBy(t, ctx, c, tbl, "v = 'bun tx'")
		assert.Equal(t, 1, rows)
		assert.Equal(t, "node0", servers)
	})

	t.Run("RunInTx read-only on a replica", func(t *testing.T) {
		got := tallyServers(4, func() string {
			var name string
			var inRecovery bool
			require.NoError(t, bdb.RunInTx(ctx, &sql.TxOptions{ReadOnly: true}, func(ctx context.Context, tx bun.Tx) error {
				return tx.NewSelect().ColumnExpr("current_setting('cluster_name'), pg_is_in_recovery()").Scan(ctx, &name, &inRecovery)
			}))
			assert.True(t, inRecovery)
			return name
		})
		assert.Equal(t, map[string]int{"node1": 2, "node2": 2}, got)
	})
}

func TestIntegrationLibrariesEnt(t *testing.T) {
	c, lr, ctx, tbl := libSetup(t)
	drv := entsql.OpenDB(dialect.Postgres, lr.SQL())

	queryString := func(t *testing.T, ctx context.Context, q dialect.ExecQuerier, query string, args ...any) string {
		t.Helper()
		var rows entsql.Rows
		require.NoError(t, q.Query(ctx, query, append([]any{}, args...), &rows))
		defer rows.Close()
		s, err := entsql.ScanString(rows)
		require.NoError(t, err)
		return s
	}

	t.Run("Query on the replicas", func(t *testing.T) {
		got := tallyServers(10, func() string { return queryString(t, ctx, drv, whoServes) })
		assert.Equal(t, map[string]int{"node1": 5, "node2": 5}, got)
	})

	t.Run("Exec on the primary", func(t *testing.T) {
		var res entsql.Result
		require.NoError(t, drv.Exec(ctx, "INSERT INTO "+tbl+" (v) VALUES ($1)", []any{"ent"}, &res))
		n, err := res.RowsAffected()
		require.NoError(t, err)
		assert.Equal(t, int64(1), n)
		rows, servers := storedBy(t, ctx, c, tbl, "v = 'ent'")
		assert.Equal(t, 1, rows)
		assert.Equal(t, "node0", servers)
	})

	t.Run("Tx on the primary", func(t *testing.T) {
		m := lr.log.mark()
		tx, err := drv.Tx(ctx)
		require.NoError(t, err)
		assert.Equal(t, "node0", queryString(t, ctx, tx, whoServes))
		require.NoError(t, tx.Exec(ctx, "INSERT INTO "+tbl+" (v) VALUES ($1)", []any{"ent tx"}, nil))
		assert.Equal(t, "node0", queryString(t, ctx, tx, "SELECT served_by FROM "+tbl+" WHERE v = $1", "ent tx"), "it reads its own uncommitted row")
		require.NoError(t, tx.Commit())
		assert.Empty(t, lr.log.notOn(m, "node0"), "every statement of the transaction ran on the primary")
		rows, servers := storedBy(t, ctx, c, tbl, "v = 'ent tx'")
		assert.Equal(t, 1, rows)
		assert.Equal(t, "node0", servers)
	})

	// entsql.WithVar runs SET on a connection of its own before the query
	// and RESET after: SET pins that connection to the primary, so the query
	// sees the variable.
	t.Run("WithVar on the primary", func(t *testing.T) {
		for i := range 3 {
			vctx := entsql.WithVar(ctx, "dbrouter.ent_var", fmt.Sprint("v", i))
			got := queryString(t, vctx, drv, "SELECT current_setting('cluster_name') || ' ' || current_setting('dbrouter.ent_var')")
			assert.Equal(t, fmt.Sprint("node0 v", i), got)
		}
		// The variable never shows elsewhere: its connections were not
		// given back to the pool.
		got := tallyServers(4, func() string {
			return queryString(t, dbrouter.UsePrimary(ctx), drv, "SELECT coalesce(current_setting('dbrouter.ent_var', true), '')")
		})
		assert.Equal(t, map[string]int{"": 4}, got)
	})
}

// gooseMigrations returns SQL migrations 1 to 3 of a table named tbl and
// Go migration 4, which records in the table the backend that runs it and
// whether that backend holds advisory lock lockID.
func gooseMigrations(tbl string, lockID int64) (fstest.MapFS, *goose.Migration) {
	fsys := fstest.MapFS{
		"00001_create.sql": {Data: []byte(fmt.Sprintf(`-- +goose Up
CREATE TABLE %[1]s (
	id int PRIMARY KEY,
	served_by text NOT NULL DEFAULT current_setting('cluster_name'));
INSERT INTO %[1]s (id) VALUES (1);

-- +goose Down
DROP TABLE %[1]s;
`, tbl))},
		"00002_column.sql": {Data: []byte(fmt.Sprintf(`-- +goose Up
ALTER TABLE %[1]s ADD COLUMN note text, ADD COLUMN pid int, ADD COLUMN locked bool;
INSERT INTO %[1]s (id, note) VALUES (2, 'two');

-- +goose Down
DELETE FROM %[1]s WHERE id = 2;
ALTER TABLE %[1]s DROP COLUMN note, DROP COLUMN pid, DROP COLUMN locked;
`, tbl))},
		"00003_index.sql": {Data: []byte(fmt.Sprintf(`-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY %[1]s_note ON %[1]s (note);

-- +goose Down
DROP INDEX CONCURRENTLY %[1]s_note;
`, tbl))},
	}
	record := func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, fmt.Sprintf(`INSERT INTO %s (id, pid, locked) SELECT 4, pg_backend_pid(),
			EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND objid = %d AND granted)`, tbl, lockID))
		return err
	}
	undo := func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "DELETE FROM "+tbl+" WHERE id = 4")
		return err
	}
	return fsys, goose.NewGoMigration(4, &goose.GoFunc{RunTx: record}, &goose.GoFunc{RunTx: undo})
}

// TestIntegrationLibrariesGoose runs migrations up one by one, then down,
// through goose's Provider on SQL(), with and without goose's session
// locker. With it, every migration runs on goose's *sql.Conn, pinned to the
// primary's server session by the advisory lock. But goose asks HasPending
// before it takes the lock, on a connection of its own that reads the
// version table from a replica, and without the locker its connection reads
// it there until it writes: a replica that has not yet replayed the previous
// migration answers 42P01 (the version table is missing) or a stale version.
// So goose runs under UsePrimary, or under a session (its reads go to a
// replica only once it has replayed goose's last write).
func TestIntegrationLibrariesGoose(t *testing.T) {
	c := sharedCluster(t)
	for _, tc := range []struct {
		name    string
		locker  bool
		session bool // under a session rather than UsePrimary
	}{
		{"session locker, UsePrimary", true, false},
		{"session locker, session", true, true},
		{"no locker, UsePrimary", false, false},
		{"no locker, session", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) { testGoose(t, c, tc.locker, tc.session) })
	}
}

func testGoose(t *testing.T, c *pgcluster.Cluster, withLocker, session bool) {
	lr := openLibRouter(t, c)
	ctx := testContext(t, integrationTimeout)
	gctx := dbrouter.UsePrimary(ctx) // goose's
	if session {
		gctx = dbrouter.WithSession(ctx, dbrouter.NewSession())
	}
	tbl, versions := uniqueName(t, "g"), uniqueName(t, "goose")
	lockID := 1_000_000 + uniqueSeq.Add(1)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		assert.NoError(t, c.Primary().Exec(ctx, "DROP TABLE IF EXISTS "+tbl+", "+versions))
	})
	fsys, goMigration := gooseMigrations(tbl, lockID)
	opts := []goose.ProviderOption{goose.WithTableName(versions), goose.WithGoMigrations(goMigration), goose.WithDisableGlobalRegistry(true)}
	if withLocker {
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID), lock.WithLockTimeout(1, 30))
		require.NoError(t, err)
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(goose.DialectPostgres, lr.SQL(), fsys, opts...)
	require.NoError(t, err)

	// onPrimary checks that the statements since mark m ran on the primary,
	// but, under a session, reads of the version table outside the lock on
	// a replica that has replayed goose's last write.
	onPrimary := func(t *testing.T, m int, what string) {
		t.Helper()
		var elsewhere []string
		for _, s := range lr.log.since(m) {
			switch {
			case s.Node == "node0":
			case session && !s.Write && (strings.Contains(s.Query, versions) || strings.Contains(s.Query, "FROM pg_tables")):
				assert.Contains(t, []string{"node1", "node2"}, s.Node)
			default:
				elsewhere = append(elsewhere, fmt.Sprintf("%s (%s): %.100q", s.Node, s.Reason, s.Query))
			}
		}
		assert.Empty(t, elsewhere, "every statement of %s ran on the primary", what)
	}
	// versionOnPrimary reads the version table on the primary itself.
	versionOnPrimary := func() (v int64) {
		require.NoError(t, c.Primary().QueryRow(ctx, "SELECT coalesce(max(version_id), -1) FROM "+versions, &v))
		return v
	}

	m := lr.log.mark()
	for want := int64(1); want <= 4; want++ {
		res, err := p.UpByOne(gctx)
		require.NoError(t, err)
		assert.Equal(t, want, res.Source.Version)
		assert.Equal(t, "up", res.Direction)
		assert.Equal(t, want, versionOnPrimary())
		got, err := p.GetDBVersion(dbrouter.UsePrimary(ctx))
		require.NoError(t, err)
		assert.Equal(t, want, got, "the version table read on the primary")
	}
	_, err = p.UpByOne(dbrouter.UsePrimary(ctx))
	require.ErrorIs(t, err, goose.ErrNoNextVersion)
	status, err := p.Status(gctx)
	require.NoError(t, err)
	require.Len(t, status, 4)
	for _, s := range status {
		assert.Equal(t, goose.StateApplied, s.State, "version %d", s.Source.Version)
	}
	onPrimary(t, m, "the up migrations")

	// What the migrations did, on the primary: rows inserted there, the Go
	// migration's transaction on the server session holding goose's lock.
	var servers string
	require.NoError(t, c.Primary().QueryRow(ctx, "SELECT string_agg(DISTINCT served_by, ',') FROM "+tbl, &servers))
	assert.Equal(t, "node0", servers)
	var locked bool
	require.NoError(t, c.Primary().QueryRow(ctx, "SELECT locked FROM "+tbl+" WHERE id = 4", &locked))
	assert.Equal(t, withLocker, locked, "the Go migration ran on the server session that holds goose's advisory lock")

	// The replicas replay all of it. Without the locker, goose asked
	// without UsePrimary reads its version there (with it, it takes the
	// lock on the primary to read it).
	waitReplicas(t, ctx, c, "the migrated schema",
		"SELECT to_regclass($1) IS NOT NULL AND (SELECT count(*) FROM information_schema.columns WHERE table_name = $2 AND column_name = 'note') = 1",
		tbl+"_note", tbl)
	waitReplicas(t, ctx, c, "version 4", "SELECT max(version_id) = 4 FROM "+versions)
	m = lr.log.mark()
	for range 2 {
		got, err := p.GetDBVersion(ctx)
		require.NoError(t, err)
		assert.Equal(t, int64(4), got)
	}
	if withLocker {
		assert.Empty(t, lr.log.notOn(m, "node0"), "GetDBVersion takes the lock")
	} else {
		assert.Equal(t, map[string]int{"node1": 1, "node2": 1}, lr.log.byNode(m), "GetDBVersion without the locker: a read")
	}

	// Down, one by one, on the primary.
	m = lr.log.mark()
	for want := int64(3); want >= 0; want-- {
		res, err := p.Down(gctx)
		require.NoError(t, err)
		assert.Equal(t, want+1, res.Source.Version)
		assert.Equal(t, "down", res.Direction)
		assert.Equal(t, want, versionOnPrimary())
	}
	onPrimary(t, m, "the down migrations")
	var gone bool
	require.NoError(t, c.Primary().QueryRow(ctx, "SELECT to_regclass('"+tbl+"') IS NULL", &gone))
	assert.True(t, gone, "down to version 0 dropped the table")
	waitReplicas(t, ctx, c, "the table dropped", "SELECT to_regclass($1) IS NULL", tbl)

	// Up, all at once, on the primary.
	m = lr.log.mark()
	results, err := p.Up(gctx)
	require.NoError(t, err)
	assert.Len(t, results, 4)
	assert.Equal(t, int64(4), versionOnPrimary())
	onPrimary(t, m, "Up")

	// goose's lock went with its connections, which were not given back to
	// the pool.
	var held int
	require.NoError(t, c.Primary().QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %d", lockID), &held))
	assert.Zero(t, held)
}

// riverArgs is a River job's arguments.
type riverArgs struct {
	Note string `json:"note"`
}

func (riverArgs) Kind() string { return "dbrouter_integration" }

// riverWorker works riverArgs jobs: each inserts a row into tbl through
// SQL(), whose served_by says which node took the write.
type riverWorker struct {
	river.WorkerDefaults[riverArgs]
	db  *sql.DB
	tbl string
}

func (w *riverWorker) Work(ctx context.Context, job *river.Job[riverArgs]) error {
	_, err := w.db.ExecContext(ctx, "INSERT INTO "+w.tbl+" (v) VALUES ($1)", job.Args.Note)
	return err
}

func TestIntegrationLibrariesRiver(t *testing.T) {
	c := sharedCluster(t)
	lr := openLibRouter(t, c)
	ctx := testContext(t, integrationTimeout)
	schema := uniqueName(t, "river")
	_, err := lr.ExecContext(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		assert.NoError(t, c.Primary().Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"))
	})
	waitReplicas(t, ctx, c, "schema "+schema, "SELECT to_regnamespace($1) IS NOT NULL", schema)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	driver := riverdatabasesql.New(lr.SQL())

	// rivermigrate reads river_migration before it migrates: under
	// UsePrimary it reads the primary's, not a replica's that may lag.
	m := lr.log.mark()
	migrator, err := rivermigrate.New(driver, &rivermigrate.Config{Schema: schema, Logger: quiet})
	require.NoError(t, err)
	res, err := migrator.Migrate(dbrouter.UsePrimary(ctx), rivermigrate.DirectionUp, nil)
	require.NoError(t, err)
	require.NotEmpty(t, res.Versions)
	var applied int
	require.NoError(t, c.Primary().QueryRow(ctx, "SELECT count(*) FROM "+schema+".river_migration", &applied))
	assert.Equal(t, len(res.Versions), applied, "every version recorded on the primary")
	assert.Empty(t, lr.log.notOn(m, "node0"), "every statement of the migrations ran on the primary")
	res, err = migrator.Migrate(dbrouter.UsePrimary(ctx), rivermigrate.DirectionUp, nil)
	require.NoError(t, err)
	assert.Empty(t, res.Versions, "migrated already")
	t.Logf("River: %d migrations applied; statements %v", applied, lr.log.byNode(m))

	client, err := river.NewClient(driver, &river.Config{Schema: schema, Logger: quiet})
	require.NoError(t, err)

	m = lr.log.mark()
	tx, err := lr.SQL().BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	inserted, err := client.InsertTx(ctx, tx, riverArgs{Note: "in a tx"}, nil)
	require.NoError(t, err)
	var name string
	require.NoError(t, tx.QueryRowContext(ctx, whoServes).Scan(&name))
	assert.Equal(t, "node0", name)
	var seen int
	require.NoError(t, c.Primary().QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM %s.river_job WHERE id = %d", schema, inserted.Job.ID), &seen))
	assert.Zero(t, seen, "not committed yet")
	require.NoError(t, tx.Commit())
	assert.Empty(t, lr.log.notOn(m, "node0"), "every statement of the transaction ran on the primary")

	var kind, state string
	require.NoError(t, c.Primary().QueryRow(ctx, fmt.Sprintf("SELECT kind, state FROM %s.river_job WHERE id = %d", schema, inserted.Job.ID), &kind, &state))
	assert.Equal(t, "dbrouter_integration", kind)
	assert.Equal(t, "available", state)

	// Insert without a transaction: River begins one, on the primary.
	m = lr.log.mark()
	again, err := client.Insert(ctx, riverArgs{Note: "alone"}, nil)
	require.NoError(t, err)
	assert.Empty(t, lr.log.notOn(m, "node0"))
	require.NoError(t, c.Primary().QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM %s.river_job WHERE id = %d", schema, again.Job.ID), &seen))
	assert.Equal(t, 1, seen)

	// Once replicated, JobGet reads the job from a replica.
	waitReplicas(t, ctx, c, "the jobs", fmt.Sprintf("SELECT count(*) = 2 FROM %s.river_job", schema))
	m = lr.log.mark()
	job, err := client.JobGet(ctx, inserted.Job.ID)
	require.NoError(t, err)
	assert.Equal(t, "dbrouter_integration", job.Kind)
	assert.JSONEq(t, `{"note":"in a tx"}`, string(job.EncodedArgs))
	byNode := lr.log.byNode(m)
	assert.Len(t, byNode, 1)
	assert.Zero(t, byNode["node0"], "JobGet is a read")

	// A client working jobs, polling (database/sql has no LISTEN): leader
	// election, the producer's fetches, completions and maintenance all go
	// through SQL(), and none may reach a replica and fail there (checked
	// when the test ends).
	t.Run("workers", func(t *testing.T) {
		tbl := createTable(t, ctx, lr.DB, c)
		workers := river.NewWorkers()
		river.AddWorker(workers, &riverWorker{db: lr.SQL(), tbl: tbl})
		worker, err := river.NewClient(driver, &river.Config{
			Schema: schema, Logger: quiet, TestOnly: true, PollOnly: true,
			FetchPollInterval: 20 * time.Millisecond, FetchCooldown: 5 * time.Millisecond,
			Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 2}},
			Workers: workers,
		})
		require.NoError(t, err)
		completed, cancel := worker.Subscribe(river.EventKindJobCompleted)
		defer cancel()
		require.NoError(t, worker.Start(ctx))
		defer func() { assert.NoError(t, worker.Stop(context.WithoutCancel(ctx))) }()

		// The two jobs inserted above, and one more.
		_, err = client.Insert(ctx, riverArgs{Note: "third"}, nil)
		require.NoError(t, err)
		done := map[string]bool{}
		for len(done) < 3 {
			select {
			case e := <-completed:
				var args riverArgs
				require.NoError(t, json.Unmarshal(e.Job.EncodedArgs, &args))
				done[args.Note] = true
			case <-ctx.Done():
				t.Fatalf("jobs completed: %v", done)
			}
		}
		rows, servers := storedBy(t, ctx, c, tbl, "true")
		assert.Equal(t, 3, rows)
		assert.Equal(t, "node0", servers)
		var completedOnPrimary int
		require.NoError(t, c.Primary().QueryRow(ctx, "SELECT count(*) FROM "+schema+".river_job WHERE state = 'completed'", &completedOnPrimary))
		assert.Equal(t, 3, completedOnPrimary)
	})
}

// gormItem is a row of a createTable table, for GORM: served_by and reader
// are only read.
type gormItem struct {
	ID       int64
	V        string
	ServedBy string `gorm:"->"`
	Reader   string `gorm:"->"`
}

func TestIntegrationLibrariesGORM(t *testing.T) {
	c, lr, ctx, tbl := libSetup(t)

	gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: lr.DB}), &gorm.Config{Logger: logger.Discard})
	require.NoError(t, err)

	t.Run("DB() is SQL()", func(t *testing.T) {
		sqlDB, err := gdb.DB()
		require.NoError(t, err)
		assert.Same(t, lr.SQL(), sqlDB)
		sqlDB.SetMaxOpenConns(3)
		assert.Equal(t, 3, sqlDB.Stats().MaxOpenConnections)
		assert.Contains(t, []string{"node1", "node2"}, servedBy(t, ctx, sqlDB))
	})

	var ids []int64
	t.Run("Create on the primary", func(t *testing.T) {
		for i := range 3 {
			it := gormItem{V: fmt.Sprintf("gorm %d", i)}
			require.NoError(t, gdb.WithContext(ctx).Table(tbl).Create(&it).Error)
			assert.NotZero(t, it.ID)
			ids = append(ids, it.ID)
		}
		rows, servers := storedBy(t, ctx, c, tbl, "v LIKE 'gorm %'")
		assert.Equal(t, 3, rows)
		assert.Equal(t, "node0", servers)
	})
	require.Len(t, ids, 3)
	waitRows(t, ctx, c, tbl, "v LIKE 'gorm %'", 3)

	read := func() *gorm.DB {
		return gdb.WithContext(ctx).Table(tbl).Select("*, current_setting('cluster_name') AS reader")
	}
	t.Run("First and Find on the replicas", func(t *testing.T) {
		got := tallyServers(10, func() string {
			var it gormItem
			require.NoError(t, read().First(&it, ids[1]).Error)
			assert.Equal(t, gormItem{ID: ids[1], V: "gorm 1", ServedBy: "node0", Reader: it.Reader}, it)
			return it.Reader
		})
		assert.Equal(t, map[string]int{"node1": 5, "node2": 5}, got)

		got = tallyServers(4, func() string {
			var items []gormItem
			require.NoError(t, read().Where("v LIKE ?", "gorm %").Order("id").Find(&items).Error)
			require.Len(t, items, 3)
			return items[0].Reader
		})
		assert.Equal(t, map[string]int{"node1": 2, "node2": 2}, got)
	})

	t.Run("Transaction on the primary", func(t *testing.T) {
		m := lr.log.mark()
		require.NoError(t, gdb.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			it := gormItem{V: "gorm tx"}
			if err := tx.Table(tbl).Create(&it).Error; err != nil {
				return err
			}
			var got gormItem
			if err := tx.Table(tbl).Select("*, current_setting('cluster_name') AS reader").First(&got, it.ID).Error; err != nil {
				return err
			}
			assert.Equal(t, gormItem{ID: it.ID, V: "gorm tx", ServedBy: "node0", Reader: "node0"}, got, "it reads its own uncommitted row")
			return nil
		}))
		assert.Empty(t, lr.log.notOn(m, "node0"), "every statement of the transaction ran on the primary")
	})

	// PrepareStmt: GORM prepares each statement once on the router (a
	// *sql.Stmt of SQL(), routed every time it runs) and, in a transaction,
	// on the transaction's connection.
	t.Run("PrepareStmt", func(t *testing.T) {
		// GORM's statement cache expires entries from a goroutine it never
		// stops, unless the TTL is its "no eviction" one.
		const gormNoEviction = 10 * 365 * 24 * time.Hour
		pdb, err := gorm.Open(postgres.New(postgres.Config{Conn: lr.DB}),
			&gorm.Config{Logger: logger.Discard, PrepareStmt: true, PrepareStmtTTL: gormNoEviction})
		require.NoError(t, err)
		it := gormItem{V: "gorm prepared"}
		require.NoError(t, pdb.WithContext(ctx).Table(tbl).Create(&it).Error)
		rows, servers := storedBy(t, ctx, c, tbl, "v = 'gorm prepared'")
		assert.Equal(t, 1, rows)
		assert.Equal(t, "node0", servers)
		got := tallyServers(6, func() string {
			var r gormItem
			require.NoError(t, pdb.WithContext(ctx).Table(tbl).Select("*, current_setting('cluster_name') AS reader").First(&r, ids[0]).Error)
			return r.Reader
		})
		assert.Equal(t, map[string]int{"node1": 3, "node2": 3}, got)
		require.NoError(t, pdb.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			var r gormItem
			if err := tx.Table(tbl).Select("*, current_setting('cluster_name') AS reader").First(&r, it.ID).Error; err != nil {
				return err
			}
			assert.Equal(t, "node0", r.Reader)
			return tx.Table(tbl).Where("id = ?", it.ID).Update("v", "gorm prepared, updated").Error
		}))
		rows, _ = storedBy(t, ctx, c, tbl, "v = 'gorm prepared, updated'")
		assert.Equal(t, 1, rows)
	})

	// Connection runs its function on one *sql.Conn of SQL(): SET pins it
	// to the primary's server session.
	t.Run("Connection with SET search_path", func(t *testing.T) {
		schema := uniqueName(t, "gs")
		_, err := lr.ExecContext(ctx, fmt.Sprintf("CREATE SCHEMA %[1]s; CREATE TABLE %[1]s.only_here (v text); INSERT INTO %[1]s.only_here VALUES ('found')", schema))
		require.NoError(t, err)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			assert.NoError(t, c.Primary().Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"))
		})
		require.NoError(t, gdb.WithContext(ctx).Connection(func(tx *gorm.DB) error {
			if err := tx.Exec("SET search_path TO " + schema + ", public").Error; err != nil {
				return err
			}
			var got struct{ V, Node string }
			if err := tx.Raw("SELECT v, current_setting('cluster_name') AS node FROM only_here").Scan(&got).Error; err != nil {
				return err
			}
			assert.Equal(t, "found", got.V)
			assert.Equal(t, "node0", got.Node)
			return nil
		}))
	})

	// AutoMigrate reads the catalog before it writes: under UsePrimary it
	// reads the primary's, and a second run finds nothing to do.
	t.Run("AutoMigrate under UsePrimary", func(t *testing.T) {
		type gormThing struct {
			ID   int64
			Name string
		}
		things := uniqueName(t, "things")
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			assert.NoError(t, c.Primary().Exec(ctx, "DROP TABLE IF EXISTS "+things))
		})
		m := lr.log.mark()
		for range 2 {
			require.NoError(t, gdb.WithContext(dbrouter.UsePrimary(ctx)).Table(things).AutoMigrate(&gormThing{}))
		}
		assert.Empty(t, lr.log.notOn(m, "node0"))
		var exists bool
		require.NoError(t, c.Primary().QueryRow(ctx, "SELECT to_regclass('"+things+"') IS NOT NULL", &exists))
		assert.True(t, exists)
	})
}

// sqlcQueries is what sqlc generates for database/sql (a DBTX, New,
// WithTx, one method per query, each query named in a leading comment),
// for two queries on a createTable table.
type sqlcQueries struct {
	db               DBTX
	insertItem, getV string
}

func newSQLCQueries(db DBTX, tbl string) *sqlcQueries {
	return &sqlcQueries{
		db:         db,
		insertItem: "-- name: InsertItem :one\nINSERT INTO " + tbl + " (v) VALUES ($1) RETURNING id, served_by",
		getV:       "-- name: GetItem :one\nSELECT v, served_by, current_setting('cluster_name') FROM " + tbl + " WHERE id = $1",
	}
}

func (q *sqlcQueries) WithTx(tx *sql.Tx) *sqlcQueries {
	c := *q
	c.db = tx
	return &c
}

func (q *sqlcQueries) InsertItem(ctx context.Context, v string) (id int64, servedBy string, err error) {
	err = q.db.QueryRowContext(ctx, q.insertItem, v).Scan(&id, &servedBy)
	return id, servedBy, err
}

func (q *sqlcQueries) GetItem(ctx context.Context, id int64) (v, servedBy, reader string, err error) {
	err = q.db.QueryRowContext(ctx, q.getV, id).Scan(&v, &servedBy, &reader)
	return v, servedBy, reader, err
}

func TestIntegrationLibrariesSQLC(t *testing.T) {
	c, lr, ctx, tbl := libSetup(t)

	for _, tc := range []struct {
		name string
		db   DBTX
	}{
		{"*dbrouter.DB", lr.DB},
		{"SQL()", lr.SQL()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			queries := newSQLCQueries(tc.db, tbl)
			id, servedBy, err := queries.InsertItem(ctx, "sqlc "+tc.name)
			require.NoError(t, err)
			assert.Equal(t, "node0", servedBy)
			waitRows(t, ctx, c, tbl, fmt.Sprintf("id = %d", id), 1)
			got := tallyServers(4, func() string {
				v, servedBy, reader, err := queries.GetItem(ctx, id)
				require.NoError(t, err)
				assert.Equal(t, "sqlc "+tc.name, v)
				assert.Equal(t, "node0", servedBy)
				return reader
			})
			assert.Equal(t, map[string]int{"node1": 2, "node2": 2}, got)

			tx, err := lr.BeginTx(ctx, nil)
			require.NoError(t, err)
			defer tx.Rollback()
			qtx := queries.WithTx(tx)
			id, _, err = qtx.InsertItem(ctx, "sqlc tx")
			require.NoError(t, err)
			_, servedBy, reader, err := qtx.GetItem(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, []string{"node0", "node0"}, []string{servedBy, reader})
			require.NoError(t, tx.Commit())
		})
	}
}

// TestIntegrationSQLConn: a *sql.Conn of SQL() reads its own writes, and
// session state (search_path, an advisory lock) keeps it on one server
// session of the primary, which is never given to anyone else.
func TestIntegrationSQLConn(t *testing.T) {
	c, lr, ctx, tbl := libSetup(t)
	face := lr.SQL()

	t.Run("insert then select never misses its row", func(t *testing.T) {
		firstReads := map[string]int{}
		for i := range 100 {
			conn, err := face.Conn(ctx)
			require.NoError(t, err)
			firstReads[servedBy(t, ctx, conn)]++ // nothing written yet: a replica
			v := fmt.Sprintf("conn %d", i)
			_, err = conn.ExecContext(ctx, "INSERT INTO "+tbl+" (v) VALUES ($1)", v)
			require.NoError(t, err)
			var n int
			var reader string
			require.NoError(t, conn.QueryRowContext(ctx, "SELECT count(*), current_setting('cluster_name') FROM "+tbl+" WHERE v = $1", v).Scan(&n, &reader))
			require.Equal(t, 1, n, "iteration %d: the connection missed its own row", i)
			require.Equal(t, "node0", reader)
			require.NoError(t, conn.Close())
		}
		assert.Equal(t, map[string]int{"node1": 50, "node2": 50}, firstReads, "a connection from the pool reads from replicas until it writes")
	})

	// A read-only transaction on a connection that wrote runs on the
	// primary, and the connection goes on reading its writes there after it.
	t.Run("a read-only transaction keeps its writes", func(t *testing.T) {
		for i := range 10 {
			conn, err := face.Conn(ctx)
			require.NoError(t, err)
			v := fmt.Sprintf("ro tx %d", i)
			_, err = conn.ExecContext(ctx, "INSERT INTO "+tbl+" (v) VALUES ($1)", v)
			require.NoError(t, err)
			tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
			require.NoError(t, err)
			assert.Equal(t, "node0", servedBy(t, ctx, tx), "the transaction reads the connection's writes")
			require.NoError(t, tx.Commit())
			var n int
			var reader string
			require.NoError(t, conn.QueryRowContext(ctx, "SELECT count(*), current_setting('cluster_name') FROM "+tbl+" WHERE v = $1", v).Scan(&n, &reader))
			assert.Equal(t, "node0", reader, "iteration %d: after a read-only transaction, the connection reads from a replica", i)
			assert.Equal(t, 1, n, "iteration %d: the connection missed its own row", i)
			require.NoError(t, conn.Close())
		}
	})

	// BEGIN and ROLLBACK sent as statements on a *sql.Conn: with a *sql.DB
	// of the primary, what runs between them is one transaction, unseen
	// from outside until it ends, and rolled back. BEGIN leaves the server
	// session in a transaction: it is session state.
	t.Run("BEGIN and ROLLBACK as statements", func(t *testing.T) {
		raw, err := c.Primary().Open()
		require.NoError(t, err)
		defer raw.Close()
		for _, tc := range []struct {
			name string
			db   *sql.DB
		}{{"the primary's *sql.DB", raw}, {"SQL()", face}} {
			t.Run(tc.name, func(t *testing.T) {
				v := uniqueName(t, "manual")
				conn, err := tc.db.Conn(ctx)
				require.NoError(t, err)
				defer conn.Close()
				_, err = conn.ExecContext(ctx, "BEGIN")
				require.NoError(t, err)
				_, err = conn.ExecContext(ctx, "INSERT INTO "+tbl+" (v) VALUES ($1)", v)
				require.NoError(t, err)
				var inside int
				require.NoError(t, conn.QueryRowContext(ctx, "SELECT count(*) FROM "+tbl+" WHERE v = $1", v).Scan(&inside))
				assert.Equal(t, 1, inside, "the transaction sees its row")
				outside, _ := storedBy(t, ctx, c, tbl, "v = '"+v+"'")
				assert.Zero(t, outside, "the row was committed before COMMIT: BEGIN did not hold")
				_, err = conn.ExecContext(ctx, "ROLLBACK")
				require.NoError(t, err)
				left, _ := storedBy(t, ctx, c, tbl, "v = '"+v+"'")
				assert.Zero(t, left, "ROLLBACK left the row")
			})
		}
	})

	// lastval() and currval() after an insert on a *sql.Conn: with a
	// *sql.DB of the primary, they return the connection's own id, whatever
	// other callers insert meanwhile. nextval() leaves state in the server
	// session, implicitly (a serial column's default).
	t.Run("lastval and currval after an insert", func(t *testing.T) {
		raw, err := c.Primary().Open()
		require.NoError(t, err)
		defer raw.Close()
		for _, tc := range []struct {
			name string
			db   *sql.DB
		}{{"the primary's *sql.DB", raw}, {"SQL()", face}} {
			t.Run(tc.name, func(t *testing.T) {
				conn, err := tc.db.Conn(ctx)
				require.NoError(t, err)
				defer conn.Close()
				var mine, other, last, cur int64
				require.NoError(t, conn.QueryRowContext(ctx, "INSERT INTO "+tbl+" (v) VALUES ('mine') RETURNING id").Scan(&mine))
				require.NoError(t, tc.db.QueryRowContext(ctx, "INSERT INTO "+tbl+" (v) VALUES ('another caller''s') RETURNING id").Scan(&other))
				require.NoError(t, conn.QueryRowContext(ctx, "SELECT lastval()").Scan(&last))
				assert.Equal(t, mine, last, "lastval(): the id of the connection's insert, not another caller's (%d)", other)
				require.NoError(t, conn.QueryRowContext(ctx, "SELECT currval(pg_get_serial_sequence($1, 'id'))", tbl).Scan(&cur))
				assert.Equal(t, mine, cur, "currval(): the id of the connection's insert, not another caller's (%d)", other)
			})
		}
	})

	// pidOn returns the backend serving q.
	pidOn := func(t *testing.T, q interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}) (pid int) {
		t.Helper()
		require.NoError(t, q.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid))
		return pid
	}
	// waitGone waits until backend pid has left the primary: its connection
	// was closed, not pooled.
	waitGone := func(t *testing.T, pid int) {
		t.Helper()
		testwait.For(t, 30*time.Second, fmt.Sprintf("backend %d to end", pid), func() (bool, error) {
			var n int
			err := c.Primary().QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid), &n)
			return err == nil && n == 0, err
		})
	}

	t.Run("SET search_path", func(t *testing.T) {
		schema := uniqueName(t, "s")
		_, err := lr.ExecContext(ctx, fmt.Sprintf("CREATE SCHEMA %[1]s; CREATE TABLE %[1]s.only_here (v text); INSERT INTO %[1]s.only_here VALUES ('found')", schema))
		require.NoError(t, err)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			assert.NoError(t, c.Primary().Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"))
		})
		conn, err := face.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close()
		_, err = conn.ExecContext(ctx, "SET search_path = "+schema+", public")
		require.NoError(t, err)
		pid := pidOn(t, conn)
		for range 5 {
			var v, path, node string
			require.NoError(t, conn.QueryRowContext(ctx, "SELECT v, current_setting('search_path'), current_setting('cluster_name') FROM only_here").Scan(&v, &path, &node))
			assert.Equal(t, []string{"found", schema + ", public", "node0"}, []string{v, path, node})
			assert.Equal(t, pid, pidOn(t, conn))
		}
		rows, err := conn.QueryContext(ctx, "SELECT v FROM only_here")
		require.NoError(t, err)
		assert.Equal(t, "found", onlyString(t, rows))
		require.NoError(t, conn.Close())
		waitGone(t, pid)
		// No other connection sees it, on the primary either.
		for range 4 {
			var path string
			require.NoError(t, face.QueryRowContext(dbrouter.UsePrimary(ctx), "SELECT current_setting('search_path')").Scan(&path))
			assert.NotContains(t, path, schema)
		}
	})

	t.Run("pg_advisory_lock", func(t *testing.T) {
		lockID := 2_000_000 + uniqueSeq.Add(1)
		conn, err := face.Conn(ctx)
		require.NoError(t, err)
		defer conn.Close()
		var pid int
		require.NoError(t, conn.QueryRowContext(ctx, "SELECT pg_backend_pid() FROM pg_advisory_lock($1) AS l", lockID).Scan(&pid))
		var holder int
		require.NoError(t, c.Primary().QueryRow(ctx, fmt.Sprintf("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %d AND granted", lockID), &holder))
		assert.Equal(t, pid, holder)

		// Reads, writes, a read-only and a read-write transaction: all on
		// the server session that holds the lock.
		assert.Equal(t, pid, pidOn(t, conn))
		assert.Equal(t, "node0", servedBy(t, ctx, conn))
		_, err = conn.ExecContext(ctx, "INSERT INTO "+tbl+" (v) VALUES ('locked')")
		require.NoError(t, err)
		for _, opts := range []*sql.TxOptions{nil, {ReadOnly: true}} {
			tx, err := conn.BeginTx(ctx, opts)
			require.NoError(t, err)
			assert.Equal(t, pid, pidOn(t, tx), "transaction %+v", opts)
			require.NoError(t, tx.Commit())
		}
		st, err := conn.PrepareContext(ctx, "SELECT pg_backend_pid()")
		require.NoError(t, err)
		for range 3 {
			var got int
			require.NoError(t, st.QueryRowContext(ctx).Scan(&got))
			assert.Equal(t, pid, got)
		}
		require.NoError(t, st.Close())

		// Closed with the lock held: the server session ends, and the lock
		// with it.
		require.NoError(t, conn.Close())
		waitGone(t, pid)
		var free bool
		require.NoError(t, c.Primary().QueryRow(ctx, fmt.Sprintf("SELECT pg_try_advisory_lock(%[1]d) AND pg_advisory_unlock(%[1]d)", lockID), &free))
		assert.True(t, free)
	})
}

// TestFailoverPinnedSession: a *sql.Conn of SQL() pinned to the primary's
// server session by session state: its writes count for the session of
// their context (read-your-writes, with node2 applying WAL 2 s late); it
// fails with ErrSessionMoved once that node is no longer the primary, and is
// never moved; a new connection works on the new primary.
func TestFailoverPinnedSession(t *testing.T) {
	c := newCluster(t, 2)
	ctx := testContext(t, 2*time.Minute)
	n0, n1, n2 := c.Primary(), c.Replicas()[0], c.Replicas()[1]
	db := openRouter(t, c)
	face := db.SQL()

	pinned, err := face.Conn(ctx)
	require.NoError(t, err)
	defer pinned.Close()
	_, err = pinned.ExecContext(ctx, "SET statement_timeout = '42s'")
	require.NoError(t, err)
	var timeout, node string
	require.NoError(t, pinned.QueryRowContext(ctx, "SELECT current_setting('statement_timeout'), current_setting('cluster_name')").Scan(&timeout, &node))
	assert.Equal(t, []string{"42s", "node0"}, []string{timeout, node})

	t.Run("its writes are its context's session's", func(t *testing.T) {
		_, err := db.ExecContext(ctx, "CREATE TABLE kv (k int PRIMARY KEY, v bigint NOT NULL); INSERT INTO kv VALUES (1, 0)")
		require.NoError(t, err)
		waitTable(t, ctx, c, "kv")
		require.NoError(t, n2.SetApplyDelay(ctx, 2*time.Second))
		testwait.For(t, time.Minute, "node2 delayed", func() (bool, error) {
			var d string
			err := n2.QueryRow(ctx, "SHOW recovery_min_apply_delay", &d)
			return err == nil && d == "2s", err
		})
		byNode, stale := map[string]int{}, 0
		for i := range 6 {
			sctx := dbrouter.WithSession(ctx, dbrouter.NewSession())
			want := int64(i + 1)
			if i%2 == 0 {
				_, err = pinned.ExecContext(sctx, "UPDATE kv SET v = $1 WHERE k = 1", want)
			} else {
				err = pinned.QueryRowContext(sctx, "UPDATE kv SET v = $1 WHERE k = 1 RETURNING v", want).Scan(new(int64))
			}
			require.NoError(t, err)
			var got int64
			require.NoError(t, db.QueryRowContext(sctx, "SELECT v, current_setting('cluster_name') FROM kv WHERE k = 1").Scan(&got, &node))
			byNode[node]++
			if got != want {
				stale++
			}
		}
		assert.Zero(t, stale, "session reads after writes on the pinned connection, served by %v", byNode)
		require.NoError(t, n2.SetApplyDelay(ctx, 0))
	})

	// A connection that only wrote is not pinned: it follows the primary.
	follower, err := face.Conn(ctx)
	require.NoError(t, err)
	defer follower.Close()
	_, err = follower.ExecContext(ctx, "CREATE TABLE after_failover (v text)")
	require.NoError(t, err)

	waitCaughtUp(t, ctx, c)
	require.NoError(t, n0.Crash(ctx))
	promote(t, ctx, n1)
	testwait.Until(t, time.Minute, "node1 the primary", func() bool { return db.Status().Primary == n1.Name() })

	for _, run := range []func() error{
		func() error { return pinned.QueryRowContext(ctx, "SELECT 1").Scan(new(int)) },
		func() error {
			_, err := pinned.ExecContext(ctx, "INSERT INTO after_failover VALUES ('moved?')")
			return err
		},
		func() error { _, err := pinned.BeginTx(ctx, nil); return err },
	} {
		err := run()
		require.Error(t, err)
		assert.ErrorIs(t, err, dbrouter.ErrSessionMoved)
	}
	assert.NoError(t, pinned.Close())

	_, err = follower.ExecContext(ctx, "INSERT INTO after_failover VALUES ('followed')")
	require.NoError(t, err, "a connection without session state follows the new primary")
	assert.Equal(t, "node1", servedBy(t, ctx, follower))
	require.NoError(t, follower.Close())

	fresh, err := face.Conn(ctx)
	require.NoError(t, err)
	defer fresh.Close()
	_, err = fresh.ExecContext(ctx, "SET statement_timeout = '43s'")
	require.NoError(t, err)
	var inRecovery bool
	require.NoError(t, fresh.QueryRowContext(ctx, "SELECT current_setting('statement_timeout'), current_setting('cluster_name'), pg_is_in_recovery()").Scan(&timeout, &node, &inRecovery))
	assert.Equal(t, []string{"43s", "node1"}, []string{timeout, node})
	assert.False(t, inRecovery)
	var rows int
	require.NoError(t, n1.QueryRow(ctx, "SELECT count(*) FROM after_failover WHERE v = 'followed'", &rows))
	assert.Equal(t, 1, rows)
	require.NoError(t, fresh.Close())
	assert.Zero(t, totalMisroutes(db.Status()))
}
