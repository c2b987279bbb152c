package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/pgcluster"
	"github.com/dbrouter/dbrouter/internal/testwait"
)

// The service's tests run it over HTTP on a real primary + 2 streaming
// replicas (internal/pgcluster). Tests that leave the cluster as they found
// it share one; those that fail a node over start their own.

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" { // the service as a child process: see TestSignalShutsDown
		main()
		return
	}
	code := m.Run()
	closeShared()
	if code == 0 {
		if err := goleak.Find(leakOptions()...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// leakOptions ignores goroutines that are not the service's: idle HTTP
// client connections, and pgx's asyncClose, which after a cancelled query
// on a dead node gives up by its own deadline, whatever its caller does.
func leakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgconn.(*PgConn).asyncClose.func1"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	}
}

var shared struct {
	once sync.Once
	c    *pgcluster.Cluster
	err  error
}

// sharedCluster returns the cluster the tests that leave it as they found
// it share, starting it on first use; TestMain removes it.
func sharedCluster(t *testing.T) *pgcluster.Cluster {
	t.Helper()
	skipShort(t)
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		began := time.Now()
		shared.c, shared.err = pgcluster.Start(ctx, pgcluster.Options{Replicas: 2})
		if shared.err == nil {
			t.Logf("shared cluster (%s backend) up in %v", shared.c.Backend(), time.Since(began).Round(time.Millisecond))
		}
	})
	require.NoError(t, shared.err, "starting the shared cluster")
	return shared.c
}

func closeShared() {
	if shared.c != nil {
		if err := shared.c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "removing the shared cluster:", err)
		}
	}
}

// ownCluster starts a cluster for one test, removed when it ends.
func ownCluster(t *testing.T) *pgcluster.Cluster {
	t.Helper()
	skipShort(t)
	return pgcluster.StartT(t, pgcluster.Options{Replicas: 2})
}

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster: skipped under -short")
	}
}

// testContext returns a context that ends after d or with the test.
func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// service is the service under test, in-process, on 127.0.0.1.
type service struct {
	url  string
	db   *dbrouter.DB
	c    *pgcluster.Cluster
	logs *syncBuffer
}

// startService opens a router over c's nodes (named as pgcluster names
// them: node0, node1, …), creates the schema and serves the service's
// handler on 127.0.0.1 until the test ends. Tables are emptied first, so
// tests sharing a cluster start from no account.
func startService(t *testing.T, c *pgcluster.Cluster, opts ...dbrouter.Option) *service {
	t.Helper()
	ctx := testContext(t, time.Minute)
	obs, err := newObserver()
	require.NoError(t, err)
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	var names []string
	for _, n := range c.Nodes() {
		names = append(names, n.Name())
	}
	primary, replicas := c.DSNs()
	opts = append([]dbrouter.Option{
		dbrouter.WithStatementHook(obs.observe), dbrouter.WithLogger(log), dbrouter.WithNames(names[0], names[1:]...),
	}, opts...)
	db, err := dbrouter.Open("pgx", primary, replicas, opts...)
	require.NoError(t, err)
	db.SetMaxOpenConns(20)
	t.Cleanup(func() { db.Close() })
	require.NoError(t, createSchema(ctx, db))
	_, err = db.ExecContext(ctx, "TRUNCATE transfers, accounts RESTART IDENTITY")
	require.NoError(t, err)
	h, err := newServer(db, obs, log)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service log:\n%s", logs.String())
		}
	})
	return &service{url: srv.URL, db: db, c: c, logs: logs}
}

// client is one HTTP client of the service. With a cookie jar it is a
// user whose session rides in the service's cookie; without, every request
// comes from someone new.
type client struct {
	t    *testing.T
	base string
	http *http.Client
}

func (s *service) client(t *testing.T, withCookies bool) *client {
	c := &client{t: t, base: s.url, http: &http.Client{
		Timeout:   20 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 256},
	}}
	if withCookies {
		jar, err := cookiejar.New(nil)
		require.NoError(t, err)
		c.http.Jar = jar
	}
	t.Cleanup(c.http.CloseIdleConnections)
	return c
}

// response is a reply of the service.
type response struct {
	status int
	body   []byte
	header http.Header
}

// decode unmarshals the body into v.
func (r response) decode(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.body, v), "body: %s", r.body)
}

// do sends a request; body, when not nil and not a string, is sent as
// JSON. Transport errors are returned, not fatal, so that it may be called
// from any goroutine.
func (c *client) do(ctx context.Context, method, path string, body any) (response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return response{}, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, body: b, header: resp.Header}, err
}

// must is do from the test's own goroutine: a transport error fails the test.
func (c *client) must(ctx context.Context, method, path string, body any) response {
	c.t.Helper()
	r, err := c.do(ctx, method, path, body)
	require.NoError(c.t, err, "%s %s", method, path)
	return r
}

// createAccount creates an account and returns it.
func (c *client) createAccount(ctx context.Context, owner string, balance int64) Account {
	c.t.Helper()
	r := c.must(ctx, "POST", "/accounts", map[string]any{"owner": owner, "balance": balance})
	require.Equal(c.t, http.StatusCreated, r.status, "POST /accounts: %s", r.body)
	var a Account
	r.decode(c.t, &a)
	return a
}

// syncBuffer is a bytes.Buffer safe for concurrent use: the service's log.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitCaughtUp waits until every replica of c has replayed the primary's
// WAL as of now.
func waitCaughtUp(t *testing.T, ctx context.Context, c *pgcluster.Cluster) {
	t.Helper()
	var lsn string
	require.NoError(t, c.Primary().QueryRow(ctx, "SELECT pg_current_wal_lsn()::text", &lsn))
	for _, r := range c.Replicas() {
		testwait.For(t, time.Minute, r.Name()+" replayed "+lsn, func() (bool, error) {
			var ok bool
			err := r.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= '"+lsn+"'::pg_lsn", &ok)
			return ok, err
		})
	}
}

// childEnv, set, makes the test binary run the service's main instead of
// the tests: TestSignalShutsDown runs it as a child process.
const childEnv = "DBROUTER_SERVICE_AS_CHILD"
