package pgcluster

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// requireBouncer skips under -short (the tests start servers) and fails,
// never skips, when pgbouncer is missing.
func requireBouncer(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts PostgreSQL servers and PgBouncer; skipped with -short")
	}
	if _, err := findBouncer(); err != nil {
		t.Fatal(err)
	}
}

func TestBouncerOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts BouncerOptions
		want string // part of the error; "" for none
	}{
		{"zero", BouncerOptions{}, ""},
		{"all", BouncerOptions{PoolMode: PoolTransaction, PoolSize: 2, ReservePoolSize: 1, ReservePoolTimeout: time.Second,
			MaxClientConn: 10, QueryWaitTimeout: time.Second, ServerLoginRetry: time.Second, ServerCheckDelay: time.Second,
			Users:    []BouncerUser{{Name: "probe", PoolMode: PoolSession, MaxConnections: 1}},
			Settings: map[string]string{"server_lifetime": "60"}}, ""},
		{"pool_mode", BouncerOptions{PoolMode: "transactional"}, "PoolMode"},
		{"pool_size", BouncerOptions{PoolSize: -1}, "PoolSize"},
		{"duration", BouncerOptions{QueryWaitTimeout: -time.Second}, "QueryWaitTimeout"},
		{"user_name", BouncerOptions{Users: []BouncerUser{{Name: "a b"}}}, "letters"},
		{"user_postgres", BouncerOptions{Users: []BouncerUser{{Name: "postgres"}}}, "twice"},
		{"user_twice", BouncerOptions{Users: []BouncerUser{{Name: "p"}, {Name: "p"}}}, "twice"},
		{"user_pool_mode", BouncerOptions{Users: []BouncerUser{{Name: "p", PoolMode: "x"}}}, "PoolMode"},
		{"user_max", BouncerOptions{Users: []BouncerUser{{Name: "p", MaxConnections: -1}}}, "MaxConnections"},
		{"setting_owned", BouncerOptions{Settings: map[string]string{"listen_port": "1"}}, "harness's own"},
		{"setting_name", BouncerOptions{Settings: map[string]string{"a=b": "1"}}, "not a setting"},
		{"setting_newline", BouncerOptions{Settings: map[string]string{"x": "1\nlisten_port = 2"}}, "line break"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.opts.validate()
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestBouncerConfig(t *testing.T) {
	opts, err := BouncerOptions{
		PoolMode: PoolTransaction, PoolSize: 2, ReservePoolTimeout: 1500 * time.Millisecond,
		Users:    []BouncerUser{{Name: "probe", PoolMode: PoolSession, MaxConnections: 1}, {Name: "plain"}},
		Settings: map[string]string{"server_check_delay": "0", "default_pool_size": "3"},
	}.validate()
	require.NoError(t, err)
	b := &Bouncer{opts: opts, port: 6432, authPath: "/d/userlist.txt", logPath: "/d/pgbouncer.log", pidPath: "/d/pgbouncer.pid",
		node: &Node{name: "node0", host: "127.0.0.1", port: 5433}}
	conf := b.configLocked()
	for _, line := range []string{
		"[databases]\n* = host=127.0.0.1 port=5433\n",
		"\nprobe = pool_mode=session max_user_connections=1\n",
		"\nlisten_addr = 127.0.0.1\nlisten_port = 6432\nunix_socket_dir =\nauth_type = trust\nauth_file = /d/userlist.txt\n",
		"\nadmin_users = postgres\n",
		"\nlogfile = /d/pgbouncer.log\npidfile = /d/pgbouncer.pid\n",
		"\npool_mode = transaction\n",
		"\ndefault_pool_size = 3\n", // Settings win over fields
		"\nreserve_pool_timeout = 1.5\n",
		"\nserver_check_delay = 0\n",
	} {
		assert.Contains(t, conf, line)
	}
	assert.NotContains(t, conf, "plain =", "a user with no settings has no [users] line")
	assert.Equal(t, 1, strings.Count(conf, "default_pool_size"), conf)
}

// TestBouncerStartError: a configuration PgBouncer refuses makes
// StartBouncer fail with the log's words.
func TestBouncerStartError(t *testing.T) {
	requireBouncer(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	node := &Node{name: "nowhere", host: "127.0.0.1", port: 1} // PgBouncer connects to it only for clients
	_, err := StartBouncer(ctx, node, BouncerOptions{Settings: map[string]string{"no_such_setting": "1"}, Logf: t.Logf})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exited at start")
	assert.Contains(t, err.Error(), "no_such_setting")
}

// TestBouncerNodeNeverReached: a bouncer that has never reached its node
// (started, or restarted, while the node is down) has no server parameters
// to greet a client with, so a client's login itself waits, and fails after
// query_wait_timeout (or client_login_timeout, 60s by default, if shorter),
// with 08P01 at connect. The admin console answers meanwhile.
func TestBouncerNodeNeverReached(t *testing.T) {
	requireBouncer(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const wait = 2 * time.Second
	node := &Node{name: "nowhere", host: "127.0.0.1", port: 1}
	b := StartBouncerT(t, node, BouncerOptions{QueryWaitTimeout: wait, ServerLoginRetry: time.Second})
	_, ok, err := b.Pool(ctx, "postgres", "postgres")
	require.NoError(t, err, "the admin console answers with the node down")
	assert.False(t, ok, "a pool before any client")

	began := time.Now()
	cerr, _ := tryQuery(ctx, b.DSN()) // connect_timeout=5 in the DSN, longer than wait
	took := time.Since(began)
	requireCode(t, cerr, "08P01")
	assert.Contains(t, cerr.Error(), "query_wait_timeout")
	assert.GreaterOrEqual(t, took, wait-100*time.Millisecond)
	assert.Less(t, took, wait+3*time.Second)
	t.Logf("first client of a bouncer whose node is down: connect failed after %v: %v", took.Round(time.Millisecond), cerr)
}

// TestBouncer runs the harness, and pins down the PgBouncer 1.18 behaviour
// dbrouter's tests behind PgBouncer depend on, on one cluster (a primary
// and a replica). Each subtest starts bouncers of its own; node_crash runs
// last because it crashes the replica (and starts it again).
func TestBouncer(t *testing.T) {
	requireBouncer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	c := StartT(t, Options{Replicas: 1})
	n0, n1 := c.Primary(), c.Replicas()[0]
	// A second user for a pool of its own; the replica gets it by replication.
	require.NoError(t, n0.Exec(ctx, "CREATE ROLE probe LOGIN"))
	waitUntil(ctx, t, n1.Name(), "showing role probe", func(ctx context.Context) (bool, error) {
		var n int
		err := n1.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = 'probe'", &n)
		return n == 1, err
	})

	t.Run("harness", func(t *testing.T) { testBouncerHarness(ctx, t, c) })
	t.Run("close", func(t *testing.T) { testBouncerClose(ctx, t, n0) })
	t.Run("stop_start", func(t *testing.T) { testBouncerStopStart(ctx, t, n0) })
	t.Run("pause_resume", func(t *testing.T) { testBouncerPauseResume(ctx, t, n0) })
	t.Run("repoint", func(t *testing.T) { testBouncerRepoint(ctx, t, n0, n1) })
	t.Run("prepared_statements", func(t *testing.T) { testBouncerPreparedStatements(ctx, t, n0) })
	t.Run("saturated_pool", func(t *testing.T) { testBouncerSaturatedPool(ctx, t, n0) })
	t.Run("node_crash", func(t *testing.T) { testBouncerNodeCrash(ctx, t, n1) })
}

// testBouncerHarness: one bouncer per node, each reaching its own node, with
// its pools and stats on the admin console.
func testBouncerHarness(ctx context.Context, t *testing.T, c *Cluster) {
	bs := StartBouncersT(t, c, BouncerOptions{PoolMode: PoolTransaction})
	nodes := c.Nodes()
	require.Len(t, bs, len(nodes))
	for i, b := range bs {
		n := nodes[i]
		assert.Same(t, n, b.Node())
		assert.Equal(t, "127.0.0.1:"+strconv.Itoa(b.Port()), b.Addr())
		assert.NotEqual(t, n.Port(), b.Port())
		u, err := url.Parse(b.DSN())
		require.NoError(t, err)
		assert.Equal(t, "postgres", u.User.Username())
		assert.Equal(t, b.Addr(), u.Host)
		assert.Equal(t, "/postgres", u.Path)
		assert.Equal(t, "disable", u.Query().Get("sslmode"))
		assert.Contains(t, b.UserDSN("probe"), "postgres://probe@"+b.Addr()+"/postgres?")

		db, err := b.Open()
		require.NoError(t, err)
		defer db.Close()
		var name string
		var port int
		require.NoError(t, db.QueryRowContext(ctx, "SELECT current_setting('cluster_name'), inet_server_port()").Scan(&name, &port))
		assert.Equal(t, n.Name(), name, "%s reached the wrong node", b)
		if c.Backend() == BackendLocal { // a container listens on 5432 behind its published port
			assert.Equal(t, n.Port(), port, "the server side of %s's connection", b)
		}

		p, ok, err := b.Pool(ctx, "postgres", "postgres")
		require.NoError(t, err)
		require.True(t, ok, "no postgres/postgres pool on %s", b)
		assert.Equal(t, PoolTransaction, p.PoolMode)
		assert.Equal(t, 1, p.ServerIdle+p.ServerUsed, "server connections after one query: %+v", p)

		stats, err := b.ShowStats(ctx)
		require.NoError(t, err)
		var st BouncerStats
		for _, s := range stats {
			if s.Database == "postgres" {
				st = s
			}
		}
		assert.GreaterOrEqual(t, st.QueryCount, int64(1), "SHOW STATS: %+v", stats)
		assert.GreaterOrEqual(t, st.XactCount, int64(1), "SHOW STATS: %+v", stats)

		rows, err := b.Admin(ctx, "SHOW VERSION")
		require.NoError(t, err)
		require.Len(t, rows, 1)
		assert.Contains(t, rows[0]["version"], "PgBouncer")
		t.Logf("%s -> %s: %s", b, n.Name(), rows[0]["version"])
	}
}

// testBouncerClose: Close ends the process and removes the temp dir; the
// bouncer is then unusable.
func testBouncerClose(ctx context.Context, t *testing.T, n *Node) {
	b, err := StartBouncer(ctx, n, BouncerOptions{Logf: t.Logf})
	require.NoError(t, err)
	b.mu.Lock()
	pid := b.proc.cmd.Process.Pid
	b.mu.Unlock()
	require.True(t, alive(pid))
	assert.Contains(t, procCmdline(pid), b.confPath)
	_, err = os.Stat(b.dir)
	require.NoError(t, err)

	require.NoError(t, b.Close())
	require.NoError(t, b.Close(), "second Close")
	assert.False(t, alive(pid), "pgbouncer %d still runs after Close", pid)
	_, err = os.Stat(b.dir)
	assert.ErrorIs(t, err, os.ErrNotExist, "temp dir %s left after Close", b.dir)
	assert.ErrorIs(t, b.Start(ctx), ErrBouncerClosed)
	assert.ErrorIs(t, b.Stop(ctx), ErrBouncerClosed)
	assert.ErrorIs(t, b.Reload(ctx), ErrBouncerClosed)
}

// testBouncerStopStart: a stopped bouncer refuses connections; started
// again it listens on the same port, and a pool opened before the restart
// works again (after a failed query on each connection the restart broke).
func testBouncerStopStart(ctx context.Context, t *testing.T, n *Node) {
	b := StartBouncerT(t, n, BouncerOptions{PoolMode: PoolTransaction})
	db, err := b.Open()
	require.NoError(t, err)
	defer db.Close()
	var one int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT 1").Scan(&one))
	port := b.Port()

	require.NoError(t, b.Stop(ctx))
	require.NoError(t, b.Stop(ctx), "Stop of a stopped bouncer")
	_, err = pgconn.Connect(ctx, b.DSN())
	assert.ErrorIs(t, err, syscall.ECONNREFUSED, "connect to a stopped bouncer")

	require.NoError(t, b.Start(ctx))
	require.NoError(t, b.Start(ctx), "Start of a running bouncer")
	assert.Equal(t, port, b.Port())
	began := time.Now()
	var first error
	failed := 0
	waitUntil(ctx, t, b.String(), "answering the pool opened before the restart", func(ctx context.Context) (bool, error) {
		err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
		return err == nil, err
	})
	t.Logf("after a bouncer restart: the old pool answered after %d failed queries in %v (first error: %v)",
		failed, since(began), first)
}

// testBouncerPauseResume: PAUSE holds a query (the client waits in the
// pool), RESUME lets it run.
func testBouncerPauseResume(ctx context.Context, t *testing.T, n *Node) {
	b := StartBouncerT(t, n, BouncerOptions{PoolMode: PoolTransaction})
	db := openSimple(t, b) // PAUSE closes the server connections, and pgx's cached statements with them

	var one int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT 1").Scan(&one))

	require.NoError(t, b.Pause(ctx))
	done := make(chan error, 1)
	go func() {
		var one int
		done <- db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
	}()
	waitPool(ctx, t, b, "postgres", "holding a query while paused", func(p BouncerPool) bool { return p.ClientWaiting == 1 })
	select {
	case err := <-done:
		t.Fatalf("query ran while paused: %v", err)
	default:
	}
	require.NoError(t, b.Resume(ctx))
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("query held by PAUSE did not run within 10s of RESUME")
	}
}

// testBouncerRepoint: after Repoint (RELOAD with the "*" entry changed) the
// next query goes to the new node; idle server connections to the old one
// are dropped, not reused, so a statement pgx's default mode cached on the
// client is gone (26000).
func testBouncerRepoint(ctx context.Context, t *testing.T, from, to *Node) {
	b := StartBouncerT(t, from, BouncerOptions{PoolMode: PoolTransaction})
	db := openSimple(t, b)
	served := func() string {
		var name string
		require.NoError(t, db.QueryRowContext(ctx, "SELECT current_setting('cluster_name')").Scan(&name))
		return name
	}
	require.Equal(t, from.Name(), served())
	cached, err := b.Open() // pgx's default exec mode
	require.NoError(t, err)
	defer cached.Close()
	cached.SetMaxOpenConns(1)
	var v int
	require.NoError(t, cached.QueryRowContext(ctx, "SELECT $1::int", 1).Scan(&v))

	require.NoError(t, b.Repoint(ctx, to))
	assert.Same(t, to, b.Node())
	assert.Equal(t, to.Name(), served(), "first query after Repoint")
	err = cached.QueryRowContext(ctx, "SELECT $1::int", 2).Scan(&v)
	requireCode(t, err, "26000")
	t.Logf("statement cached by pgx before Repoint: %v", err)
	require.NoError(t, b.Reload(ctx))
	assert.Equal(t, to.Name(), served(), "after a Reload with nothing changed")

	require.NoError(t, b.Repoint(ctx, from))
	assert.Equal(t, from.Name(), served(), "first query after Repoint back")
}

// execModeDSN returns dsn with pgx's default_query_exec_mode set; "" leaves pgx's default (cache_statement).
func execModeDSN(dsn, mode string) string {
	if mode == "" {
		return dsn
	}
	return dsn + "&default_query_exec_mode=" + mode
}

// loadResult counts what a concurrent load saw.
type loadResult struct {
	ok, wrong  int              // right answers; answers of another of the statements
	codes      map[string]int   // failed queries by SQLSTATE ("" when the error had none)
	first      map[string]error // the first error of each SQLSTATE
	firstWrong string           // the first wrong answer
}

func (r loadResult) String() string {
	s := fmt.Sprintf("ok=%d wrong=%d errors=%v", r.ok, r.wrong, r.codes)
	if r.firstWrong != "" {
		s += " (" + r.firstWrong + ")"
	}
	return s
}

// runLoad runs 8 goroutines, 25 queries each, over 8 connections of db: four
// different statements "SELECT $1::int + K" (K = 0, 1000, 2000, 3000), each
// answer checked. With stmt set, the statements are *sql.Stmt prepared
// first (pgx's stdlib prepares them as named statements in every mode).
func runLoad(ctx context.Context, t *testing.T, db *sql.DB, stmt bool) loadResult {
	t.Helper()
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	queries := make([]string, 4)
	stmts := make([]*sql.Stmt, 4)
	for k := range queries {
		queries[k] = fmt.Sprintf("SELECT $1::int + %d", k*1000)
		if stmt {
			var err error
			stmts[k], err = db.PrepareContext(ctx, queries[k])
			require.NoError(t, err)
			defer stmts[k].Close()
		}
	}
	r := loadResult{codes: map[string]int{}, first: map[string]error{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				k := (g + i) % 4
				var got int
				var err error
				if stmt {
					err = stmts[k].QueryRowContext(ctx, i).Scan(&got)
				} else {
					err = db.QueryRowContext(ctx, queries[k], i).Scan(&got)
				}
				mu.Lock()
				switch {
				case err != nil:
					code := pgCode(err)
					r.codes[code]++
					if r.first[code] == nil {
						r.first[code] = err
					}
				case got != i+k*1000:
					r.wrong++
					if r.firstWrong == "" {
						r.firstWrong = fmt.Sprintf("%q with $1 = %d answered %d", queries[k], i, got)
					}
				default:
					r.ok++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return r
}

// testBouncerPreparedStatements pins down fact (1): in transaction pooling
// (PgBouncer 1.18 has no max_prepared_statements) pgx's default exec mode
// breaks, its statement cache holding named statements on server
// connections other clients share; simple_protocol, exec and cache_describe
// work; describe_exec answers with other clients' statements.
func testBouncerPreparedStatements(ctx context.Context, t *testing.T, n *Node) {
	opts := BouncerOptions{PoolMode: PoolTransaction}

	t.Run("already_exists", func(t *testing.T) {
		// One server connection: the second client prepares the name the first one left there.
		o := opts
		o.PoolSize = 1
		b := StartBouncerT(t, n, o)
		db, err := b.Open()
		require.NoError(t, err)
		defer db.Close()
		a, c := conn(ctx, t, db), conn(ctx, t, db)
		var v int
		require.NoError(t, a.QueryRowContext(ctx, "SELECT $1::int", 1).Scan(&v))
		err = c.QueryRowContext(ctx, "SELECT $1::int", 2).Scan(&v)
		requireCode(t, err, "42P05")
		assert.Contains(t, err.Error(), `prepared statement "stmtcache_`)
		assert.Contains(t, err.Error(), "already exists")
		t.Logf("second client, same SQL, one server connection: %v", err)
	})

	t.Run("does_not_exist", func(t *testing.T) {
		// Two server connections: the client prepared on one, runs on the other.
		o := opts
		o.PoolSize = 2
		b := StartBouncerT(t, n, o)
		db, err := b.Open()
		require.NoError(t, err)
		defer db.Close()
		a, holder1, holder2 := conn(ctx, t, db), conn(ctx, t, db), conn(ctx, t, db)
		tx1, err := holder1.BeginTx(ctx, nil) // takes server connection S1
		require.NoError(t, err)
		var v int
		require.NoError(t, a.QueryRowContext(ctx, "SELECT $1::int", 1).Scan(&v)) // prepared on S2
		tx2, err := holder2.BeginTx(ctx, nil)                                    // takes S2, the idle one
		require.NoError(t, err)
		require.NoError(t, tx1.Rollback()) // S1 idle again
		err = a.QueryRowContext(ctx, "SELECT $1::int", 2).Scan(&v)
		requireCode(t, err, "26000")
		assert.Contains(t, err.Error(), `prepared statement "stmtcache_`)
		assert.Contains(t, err.Error(), "does not exist")
		require.NoError(t, tx2.Rollback())
		t.Logf("cached statement run on the other server connection: %v", err)
	})

	// Under load, two server connections for eight clients (in transaction
	// pooling; eight in session pooling, for contrast). A fresh bouncer
	// for each mode: named statements outlive their client on the server
	// connections (no DISCARD ALL in transaction mode) and would poison the
	// next mode.
	for _, tc := range []struct {
		mode    string
		stmt    bool   // use *sql.Stmt (db.Prepare)
		session bool   // session pooling, a server connection for each of the 8 clients
		works   bool   // every query answers, each with its own statement
		codes   string // SQLSTATEs the failing modes show ("" also: a wrong answer with no error)
	}{
		{mode: "", session: true, works: true},
		{mode: "", stmt: true, session: true, works: true},
		{mode: "", codes: "42P05 26000"},
		{mode: "cache_statement", codes: "42P05 26000"},
		{mode: "describe_exec", codes: "26000"},
		{mode: "cache_describe", works: true},
		{mode: "exec", works: true},
		{mode: "simple_protocol", works: true},
		{mode: "simple_protocol", stmt: true, codes: "42P05 26000"},
	} {
		name := "load_" + tc.mode
		if tc.mode == "" {
			name = "load_default"
		}
		if tc.stmt {
			name += "_sql_stmt"
		}
		if tc.session {
			name += "_session_pool"
		}
		t.Run(name, func(t *testing.T) {
			o := opts
			o.PoolSize = 2
			if tc.session {
				o.PoolMode, o.PoolSize = PoolSession, 8
			}
			b := StartBouncerT(t, n, o)
			db, err := sql.Open("pgx", execModeDSN(b.DSN(), tc.mode))
			require.NoError(t, err)
			defer db.Close()
			if tc.works {
				for range 2 {
					r := runLoad(ctx, t, db, tc.stmt)
					t.Logf("%s: %v", name, r)
					assert.Equal(t, 200, r.ok, "%s: %v (first errors: %v)", name, r, r.first)
				}
				return
			}
			// A race between clients: run rounds until it shows (it does in the first, as a rule).
			var r loadResult
			rounds := 0
			waitUntil(ctx, t, name, "failing under load", func(context.Context) (bool, error) {
				rounds++
				r = runLoad(ctx, t, db, tc.stmt)
				return r.ok < 200, nil
			})
			t.Logf("%s: round %d: %v; first errors: %v", name, rounds, r, r.first)
			for code := range r.codes {
				assert.Contains(t, strings.Fields(tc.codes), code, "%s: unexpected failure: %v", name, r.first[code])
			}
		})
	}
}

// testBouncerSaturatedPool pins down fact (3): a query waits while the pool
// is full and fails after query_wait_timeout (08P01); a reserve pool serves
// it after reserve_pool_timeout; another user has a pool of its own.
func testBouncerSaturatedPool(ctx context.Context, t *testing.T, n *Node) {
	// hold opens a connection through the bouncer as user and holds a
	// server connection with an open transaction until the test ends.
	hold := func(t *testing.T, b *Bouncer, user string) *sql.Tx {
		db, err := sql.Open("pgx", b.UserDSN(user))
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		tx, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = tx.Rollback() })
		return tx
	}
	// query runs SELECT 1 as user over a connection of its own, in the
	// background; the channel gets its error and how long it took.
	type result struct {
		err  error
		took time.Duration
	}
	query := func(t *testing.T, b *Bouncer, user string) <-chan result {
		db, err := sql.Open("pgx", b.UserDSN(user))
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		ch := make(chan result, 1)
		go func() {
			began := time.Now()
			var one int
			err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
			ch <- result{err, time.Since(began)}
		}()
		return ch
	}
	await := func(t *testing.T, ch <-chan result, within time.Duration) result {
		t.Helper()
		select {
		case r := <-ch:
			return r
		case <-time.After(within):
			t.Fatalf("query still waiting after %v", within)
			return result{}
		}
	}

	t.Run("query_wait_timeout", func(t *testing.T) {
		const wait = 2 * time.Second
		b := StartBouncerT(t, n, BouncerOptions{PoolMode: PoolTransaction, PoolSize: 2, QueryWaitTimeout: wait})
		hold(t, b, "postgres")
		hold(t, b, "postgres")
		waitPool(ctx, t, b, "postgres", "full", func(p BouncerPool) bool { return p.ServerActive == 2 })
		ch := query(t, b, "postgres")
		waitPool(ctx, t, b, "postgres", "queueing the third client", func(p BouncerPool) bool { return p.ClientWaiting == 1 })
		r := await(t, ch, wait+10*time.Second)
		requireCode(t, r.err, "08P01")
		assert.Contains(t, r.err.Error(), "query_wait_timeout")
		assert.GreaterOrEqual(t, r.took, wait-100*time.Millisecond, "failed before query_wait_timeout")
		assert.Less(t, r.took, wait+3*time.Second, "failed long after query_wait_timeout")
		t.Logf("full pool, query_wait_timeout %v: the query failed after %v: %v", wait, r.took.Round(time.Millisecond), r.err)
	})

	t.Run("reserve_pool", func(t *testing.T) {
		const reserveAfter = 500 * time.Millisecond
		b := StartBouncerT(t, n, BouncerOptions{PoolMode: PoolTransaction, PoolSize: 2,
			ReservePoolSize: 1, ReservePoolTimeout: reserveAfter, QueryWaitTimeout: 30 * time.Second})
		hold(t, b, "postgres")
		hold(t, b, "postgres")
		waitPool(ctx, t, b, "postgres", "full", func(p BouncerPool) bool { return p.ServerActive == 2 })
		r := await(t, query(t, b, "postgres"), 10*time.Second)
		require.NoError(t, r.err)
		assert.GreaterOrEqual(t, r.took, reserveAfter-100*time.Millisecond, "served before reserve_pool_timeout")
		assert.Less(t, r.took, reserveAfter+3*time.Second)
		t.Logf("full pool, reserve_pool_size 1 after %v: the query was served after %v", reserveAfter, r.took.Round(time.Millisecond))

		// The reserve is one connection: held, the next client waits past the reserve timeout.
		hold(t, b, "postgres")
		waitPool(ctx, t, b, "postgres", "using the reserve", func(p BouncerPool) bool { return p.ServerActive == 3 })
		ch := query(t, b, "postgres")
		waitPool(ctx, t, b, "postgres", "queueing the fourth client", func(p BouncerPool) bool { return p.ClientWaiting == 1 })
		waitPool(ctx, t, b, "postgres", "keeping it queued past the reserve timeout", func(p BouncerPool) bool {
			return p.ClientWaiting == 1 && p.MaxWait >= 3*reserveAfter
		})
		select {
		case r := <-ch:
			t.Fatalf("fourth client served with the reserve in use: %v", r.err)
		default:
		}
	})

	t.Run("own_user_pool", func(t *testing.T) {
		b := StartBouncerT(t, n, BouncerOptions{PoolMode: PoolTransaction, PoolSize: 2, QueryWaitTimeout: 30 * time.Second,
			Users: []BouncerUser{{Name: "probe"}}})
		hold(t, b, "postgres")
		hold(t, b, "postgres")
		waitPool(ctx, t, b, "postgres", "full", func(p BouncerPool) bool { return p.ServerActive == 2 })
		waiting := query(t, b, "postgres")
		waitPool(ctx, t, b, "postgres", "queueing a third client", func(p BouncerPool) bool { return p.ClientWaiting == 1 })
		r := await(t, query(t, b, "probe"), 10*time.Second)
		require.NoError(t, r.err)
		assert.Less(t, r.took, time.Second, "the probe user waited behind the full postgres pool")
		t.Logf("full postgres pool: a query as probe (its own pool) took %v", r.took.Round(time.Millisecond))
		p, ok, err := b.Pool(ctx, "postgres", "probe")
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, 0, p.ClientWaiting)
		select {
		case r := <-waiting:
			t.Fatalf("the queued postgres client was served: %v", r.err)
		default:
		}
	})
}

// testBouncerNodeCrash pins down fact (2), with server_login_retry 1s: when
// the node behind a bouncer crashes, a transaction in flight fails; the
// first client to ask for a server after the crash is queued; every later
// client gets 08P01 "server login has been failing" at once, while the
// bouncer still accepts connections; the queued client fails after
// query_wait_timeout, or is served if the node comes back first; after the
// node restarts on its port the bouncer connects again within about
// server_login_retry.
func testBouncerNodeCrash(ctx context.Context, t *testing.T, n *Node) {
	const retry = time.Second
	connect := func(t *testing.T, b *Bouncer) *pgconn.PgConn {
		t.Helper()
		conn, err := pgconn.Connect(ctx, b.DSN())
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		_, err = conn.Exec(ctx, "SELECT 1").ReadAll()
		require.NoError(t, err)
		return conn
	}
	type result struct {
		err  error
		took time.Duration
	}
	queryAsync := func(conn *pgconn.PgConn) <-chan result {
		ch := make(chan result, 1)
		go func() {
			began := time.Now()
			_, err := conn.Exec(ctx, "SELECT 1").ReadAll()
			ch <- result{err, time.Since(began)}
		}()
		return ch
	}
	restart := func(t *testing.T, b *Bouncer) {
		t.Helper()
		began := time.Now()
		require.NoError(t, n.Start(ctx))
		started := time.Now()
		failed := 0
		waitUntil(ctx, t, b.String(), "serving a new client after the node restarted", func(context.Context) (bool, error) {
			cerr, qerr := tryQuery(ctx, b.DSN())
			err := errors.Join(cerr, qerr)
			if err != nil {
				failed++
			}
			return err == nil, err
		})
		took := time.Since(started)
		t.Logf("node restarted in %v; the bouncer served a new client %v later (%d clients refused meanwhile)",
			started.Sub(began).Round(time.Millisecond), took.Round(time.Millisecond), failed)
		assert.Less(t, took, retry+3*time.Second, "bouncer slow to reconnect to the restarted node")
	}

	t.Run("outage_longer_than_query_wait_timeout", func(t *testing.T) {
		const wait = 2 * time.Second
		b := StartBouncerT(t, n, BouncerOptions{PoolMode: PoolTransaction, ServerLoginRetry: retry, QueryWaitTimeout: wait})
		inTx := connect(t, b)
		_, err := inTx.Exec(ctx, "BEGIN; SELECT 1").ReadAll()
		require.NoError(t, err)
		idle := connect(t, b)

		crashed := time.Now()
		require.NoError(t, n.Crash(ctx))
		t.Logf("crash of %s took %v", n.Name(), since(crashed))

		_, err = inTx.Exec(ctx, "SELECT 1").ReadAll()
		require.Error(t, err, "a transaction on the crashed node went on")
		t.Logf("transaction in flight: %v (SQLSTATE %q)", err, pgCode(err))

		queued := queryAsync(idle)
		waitPool(ctx, t, b, "postgres", "queueing the first client after the crash", func(p BouncerPool) bool { return p.ClientWaiting == 1 })

		began := time.Now()
		cerr, qerr := tryQuery(ctx, b.DSN())
		took := time.Since(began)
		require.NoError(t, cerr, "the bouncer refused a new connection while its node is down")
		requireCode(t, qerr, "08P01")
		assert.Contains(t, qerr.Error(), "server login has been failing, try again later (server_login_retry)")
		assert.Less(t, took, time.Second, "the fast failure was not fast")
		t.Logf("new client %v after the crash: connected, then its query failed in %v: %v",
			since(crashed), took.Round(time.Millisecond), qerr)

		r := <-queued
		requireCode(t, r.err, "08P01")
		assert.Contains(t, r.err.Error(), "query_wait_timeout")
		assert.GreaterOrEqual(t, r.took, wait-100*time.Millisecond)
		assert.Less(t, r.took, wait+3*time.Second)
		t.Logf("queued client failed after %v (query_wait_timeout %v): %v", r.took.Round(time.Millisecond), wait, r.err)

		restart(t, b)
	})

	t.Run("outage_shorter_than_query_wait_timeout", func(t *testing.T) {
		b := StartBouncerT(t, n, BouncerOptions{PoolMode: PoolTransaction, ServerLoginRetry: retry, QueryWaitTimeout: 30 * time.Second})
		idle := connect(t, b)
		crashed := time.Now()
		require.NoError(t, n.Crash(ctx))
		queued := queryAsync(idle)
		waitPool(ctx, t, b, "postgres", "queueing the first client after the crash", func(p BouncerPool) bool { return p.ClientWaiting == 1 })
		restart(t, b)
		select {
		case r := <-queued:
			require.NoError(t, r.err, "the queued client")
			t.Logf("queued client served %v after the crash, without an error", r.took.Round(time.Millisecond))
		case <-time.After(10 * time.Second):
			t.Fatalf("queued client still waiting %v after the crash", since(crashed))
		}
	})
}

// openSimple opens a *sql.DB through the bouncer in pgx's simple_protocol
// exec mode, which transaction pooling and server reconnections leave
// working, and closes it when the test ends.
func openSimple(t *testing.T, b *Bouncer) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", execModeDSN(b.DSN(), "simple_protocol"))
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

// tryQuery connects a new client to dsn and runs SELECT 1; it says where it failed.
func tryQuery(ctx context.Context, dsn string) (connectErr, queryErr error) {
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return err, nil
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "SELECT 1").ReadAll()
	return nil, err
}

// conn takes one connection of db for the test.
func conn(ctx context.Context, t *testing.T, db *sql.DB) *sql.Conn {
	t.Helper()
	c, err := db.Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// pgCode returns the SQLSTATE err carries, "" when none.
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// requireCode fails the test unless err carries SQLSTATE code.
func requireCode(t *testing.T, err error, code string) {
	t.Helper()
	require.Error(t, err, "want SQLSTATE %s", code)
	var pe *pgconn.PgError
	require.True(t, errors.As(err, &pe), "want SQLSTATE %s, got %T: %v", code, err, err)
	require.Equal(t, code, pe.Code, "%v", err)
}

// waitUntil polls cond (see poll) and fails the test when ctx ends first;
// who and what complete "WHO not WHAT".
func waitUntil(ctx context.Context, t *testing.T, who, what string, cond func(context.Context) (bool, error)) {
	t.Helper()
	require.NoError(t, poll(ctx, who, what, cond))
}

// waitPool waits until the bouncer's pool of (postgres, user) satisfies cond.
func waitPool(ctx context.Context, t *testing.T, b *Bouncer, user, what string, cond func(BouncerPool) bool) {
	t.Helper()
	waitUntil(ctx, t, b.String()+" pool of "+user, what, func(ctx context.Context) (bool, error) {
		p, ok, err := b.Pool(ctx, "postgres", user)
		if err != nil || !ok {
			return false, err
		}
		return cond(p), fmt.Errorf("pool now %+v", p) // reported only if the wait times out
	})
}
