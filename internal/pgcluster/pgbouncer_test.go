package pgcluster

import (
	"context"
	"errors"
	"strings"
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
