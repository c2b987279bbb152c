package statuspage

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/fakedriver"
	"github.com/dbrouter/dbrouter/internal/testwait"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeNodes is a primary and replicas on the fake driver.
type fakeNodes struct {
	conns []*fakedriver.Connector // [0] primary
	dbs   []*sql.DB
}

func newFakeNodes(t testing.TB, replicas int) *fakeNodes {
	t.Helper()
	conns, dbs := fakedriver.Nodes(t, replicas)
	return &fakeNodes{conns: conns, dbs: dbs}
}

// router returns a DB over f with ping-only probes (the fake driver is not
// PostgreSQL) plus opts, closed when the test ends.
func (f *fakeNodes) router(t testing.TB, opts ...dbrouter.Option) *dbrouter.DB {
	t.Helper()
	db, err := dbrouter.New(f.dbs[0], f.dbs[1:], append([]dbrouter.Option{dbrouter.WithDialect(dbrouter.Generic())}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

// fixed is a handler that serves s.
func fixed(s dbrouter.Status) http.Handler {
	return &handler{status: func() dbrouter.Status { return s }}
}

// get serves a GET of target through h.
func get(h http.Handler, target string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

// decode decodes a status.json response into generic maps, as a client
// that knows nothing of the Go types would.
func decode(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var m map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &m), rec.Body.String())
	return m
}

func keys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

var (
	topKeys   = []string{"events", "nodes", "primary"}
	nodeKeys  = []string{"errors", "lag_bytes", "lag_seconds", "last_error", "latency_ms", "lsn", "misroutes", "name", "readable", "reads", "retries", "role", "state", "timeline", "writes"}
	eventKeys = []string{"at", "detail", "kind", "node"}
)

// checkShape checks that m has exactly the documented keys, each of its
// type, and returns its nodes and events.
func checkShape(t *testing.T, m map[string]any) (nodes, events []map[string]any) {
	t.Helper()
	require.Equal(t, topKeys, keys(m))
	assert.IsType(t, "", m["primary"])
	require.IsType(t, []any{}, m["nodes"], "nodes is a list, never null")
	require.IsType(t, []any{}, m["events"], "events is a list, never null")
	for _, v := range m["nodes"].([]any) {
		require.IsType(t, map[string]any{}, v)
		n := v.(map[string]any)
		require.Equal(t, nodeKeys, keys(n))
		for _, k := range []string{"name", "role", "state", "lsn", "last_error"} {
			assert.IsType(t, "", n[k], k)
		}
		assert.IsType(t, true, n["readable"])
		for _, k := range []string{"timeline", "lag_bytes", "lag_seconds", "reads", "writes", "errors", "misroutes", "retries", "latency_ms"} {
			assert.IsType(t, 0.0, n[k], k)
		}
		nodes = append(nodes, n)
	}
	for _, v := range m["events"].([]any) {
		require.IsType(t, map[string]any{}, v)
		e := v.(map[string]any)
		require.Equal(t, eventKeys, keys(e))
		for _, k := range eventKeys {
			assert.IsType(t, "", e[k], k)
		}
		events = append(events, e)
	}
	return nodes, events
}

func TestFormatLSN(t *testing.T) {
	for _, tc := range []struct {
		lsn  uint64
		want string
	}{
		{0, "0/0"},
		{0x16B3748, "0/16B3748"},
		{0xFFFFFFFF, "0/FFFFFFFF"},
		{1 << 32, "1/0"},
		{0x2_000000AB, "2/AB"},
		{0xA1B2C3D4_0E0F0A0B, "A1B2C3D4/E0F0A0B"},
		{^uint64(0), "FFFFFFFF/FFFFFFFF"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			assert.Equal(t, tc.want, formatLSN(tc.lsn))
		})
	}
}

func TestStatusJSONFromDB(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 2)
	db := f.router(t)
	for range 4 {
		var node string
		require.NoError(t, db.QueryRowContext(ctx, "SELECT 1").Scan(&node))
	}
	_, err := db.ExecContext(ctx, "DELETE FROM t")
	require.NoError(t, err)

	rec := get(Handler(db), "/status.json")
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	assert.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
	assert.Equal(t, strconv.Itoa(rec.Body.Len()), rec.Header().Get("Content-Length"))
	m := decode(t, rec)
	nodes, events := checkShape(t, m)
	assert.Equal(t, "primary", m["primary"])
	assert.Empty(t, events)
	require.Len(t, nodes, 3)
	var names []any
	var reads float64
	for _, n := range nodes {
		names = append(names, n["name"])
		reads += n["reads"].(float64)
		assert.Equal(t, "up", n["state"])
		assert.Equal(t, "0/0", n["lsn"], "Generic() probes learn no position")
		assert.Equal(t, "", n["last_error"])
	}
	assert.Equal(t, []any{"primary", "replica1", "replica2"}, names)
	assert.Equal(t, "primary", nodes[0]["role"])
	assert.Equal(t, false, nodes[0]["readable"], "the primary serves reads only as a fallback")
	assert.Equal(t, 1.0, nodes[0]["writes"])
	assert.Equal(t, 0.0, nodes[0]["reads"])
	for _, r := range nodes[1:] {
		assert.Equal(t, "replica", r["role"])
		assert.Equal(t, true, r["readable"])
		assert.Equal(t, 0.0, r["writes"])
	}
	assert.Equal(t, 4.0, reads)
}

func TestStatusJSONFollowsDB(t *testing.T) {
	f := newFakeNodes(t, 2)
	db := f.router(t, dbrouter.WithProbeInterval(10*time.Millisecond), dbrouter.WithFailureThreshold(1),
		dbrouter.WithMaxBackoff(20*time.Millisecond))
	h := Handler(db)
	f.conns[2].SetDown(true)

	var nodes, events []map[string]any
	testwait.Until(t, 5*time.Second, "replica2 down in status.json, with its event", func() bool {
		nodes, events = checkShape(t, decode(t, get(h, "/status.json")))
		return nodes[2]["state"] == "down" && len(events) > 0
	})
	assert.Equal(t, false, nodes[2]["readable"])
	assert.NotEmpty(t, nodes[2]["last_error"], "the probe's error is shown")
	assert.Equal(t, "up", nodes[1]["state"])
	e := events[len(events)-1]
	assert.Equal(t, "node_down", e["kind"])
	assert.Equal(t, "replica2", e["node"])
	_, err := time.Parse(time.RFC3339Nano, e["at"].(string))
	assert.NoError(t, err)
}

func TestStatusJSONValues(t *testing.T) {
	est := time.FixedZone("EST", -5*3600)
	s := dbrouter.Status{
		Primary: "db2:5432/app",
		Nodes: []dbrouter.NodeStatus{{
			Name: "db1:5432/app", Role: dbrouter.RolePrimary, State: dbrouter.StateFenced,
			LSN: 0x1_0000_0AB0, Timeline: 1, Latency: 1500 * time.Microsecond,
			LastError: errors.New("lost to a higher timeline"),
		}, {
			Name: "db2:5432/app", Role: dbrouter.RolePrimary, State: dbrouter.StateUp,
			LSN: 0x2_016B3748, Timeline: 2, Writes: 7, Errors: 1, Latency: 2 * time.Millisecond,
		}, {
			Name: "db3:5432/app", Role: dbrouter.RoleReplica, State: dbrouter.StateUp, Readable: true,
			LSN: 0x2_016B0000, Timeline: 2, LagBytes: 0x3748, LagTime: 1250 * time.Millisecond,
			Reads: 40, Errors: 2, Misroutes: 3, Retries: 4, Latency: 250 * time.Microsecond,
		}, {
			Name: "db4:5432/app", Role: dbrouter.RoleUnknown, State: dbrouter.StateUnknown,
		}},
		Events: []dbrouter.Event{
			{Time: time.Date(2026, 3, 1, 7, 0, 0, 0, est), Kind: dbrouter.EventNodeDown, Node: "db1:5432/app", Err: errors.New("refused")},
			{Time: time.Date(2026, 3, 1, 12, 0, 1, 234_567_891, time.UTC), Kind: dbrouter.EventPrimaryChanged, Node: "db2:5432/app", Detail: "db1:5432/app"},
			{Time: time.Date(2026, 3, 1, 12, 0, 2, 0, time.UTC), Kind: dbrouter.EventMissingGrant, Node: "db3:5432/app", Detail: "GRANT pg_monitor TO app"},
		},
	}
	nodes, events := checkShape(t, decode(t, get(fixed(s), "/status.json")))
	want := []map[string]any{{
		"name": "db1:5432/app", "role": "primary", "state": "fenced", "readable": false, "timeline": 1.0,
		"lsn": "1/AB0", "lag_bytes": 0.0, "lag_seconds": 0.0, "reads": 0.0, "writes": 0.0, "errors": 0.0,
		"misroutes": 0.0, "retries": 0.0, "latency_ms": 1.5, "last_error": "lost to a higher timeline",
	}, {
		"name": "db2:5432/app", "role": "primary", "state": "up", "readable": false, "timeline": 2.0,
		"lsn": "2/16B3748", "lag_bytes": 0.0, "lag_seconds": 0.0, "reads": 0.0, "writes": 7.0, "errors": 1.0,
		"misroutes": 0.0, "retries": 0.0, "latency_ms": 2.0, "last_error": "",
	}, {
		"name": "db3:5432/app", "role": "replica", "state": "up", "readable": true, "timeline": 2.0,
		"lsn": "2/16B0000", "lag_bytes": 14152.0, "lag_seconds": 1.25, "reads": 40.0, "writes": 0.0, "errors": 2.0,
		"misroutes": 3.0, "retries": 4.0, "latency_ms": 0.25, "last_error": "",
	}, {
		"name": "db4:5432/app", "role": "unknown", "state": "unknown", "readable": false, "timeline": 0.0,
		"lsn": "0/0", "lag_bytes": 0.0, "lag_seconds": 0.0, "reads": 0.0, "writes": 0.0, "errors": 0.0,
		"misroutes": 0.0, "retries": 0.0, "latency_ms": 0.0, "last_error": "",
	}}
	assert.Equal(t, want, nodes)
	assert.Equal(t, []map[string]any{
		{"at": "2026-03-01T12:00:00.000Z", "kind": "node_down", "node": "db1:5432/app", "detail": ""},
		{"at": "2026-03-01T12:00:01.234Z", "kind": "primary_changed", "node": "db2:5432/app", "detail": "db1:5432/app"},
		{"at": "2026-03-01T12:00:02.000Z", "kind": "missing_grant", "node": "db3:5432/app", "detail": "GRANT pg_monitor TO app"},
	}, events, "oldest first, in UTC with milliseconds, kinds in snake case")
}

func TestStatusJSONNoPrimary(t *testing.T) {
	m := decode(t, get(fixed(dbrouter.Status{}), "/status.json"))
	nodes, events := checkShape(t, m)
	assert.Equal(t, "", m["primary"])
	assert.Empty(t, nodes)
	assert.Empty(t, events)
}

func TestEscaping(t *testing.T) {
	const evil = `<script>alert("x")</script><img src=x onerror=alert(1)>&amp;`
	f := newFakeNodes(t, 1)
	db := f.router(t, dbrouter.WithNames(evil, "replica1"))
	s := db.Status()
	s.Events = append(s.Events, dbrouter.Event{Time: time.Now(), Kind: dbrouter.EventReplicaExcluded, Node: evil, Detail: evil})
	s.Nodes[1].LastError = errors.New(evil)

	for name, h := range map[string]http.Handler{"db": Handler(db), "events and errors": fixed(s)} {
		t.Run(name, func(t *testing.T) {
			rec := get(h, "/status.json")
			body := rec.Body.String()
			assert.NotContains(t, body, "<")
			assert.NotContains(t, body, ">")
			m := decode(t, rec)
			nodes, events := checkShape(t, m)
			assert.Equal(t, evil, m["primary"], "the text comes back whole")
			assert.Equal(t, evil, nodes[0]["name"])
			for _, e := range events {
				assert.Equal(t, evil, e["node"])
				assert.Equal(t, evil, e["detail"])
			}

			page := get(h, "/").Body.String()
			assert.NotContains(t, page, "alert", "no data is put into the page's markup")
		})
	}
	// The script builds the DOM from text alone.
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute(\"on", ".src ="} {
		assert.NotContains(t, pageJS, sink)
	}
	assert.Contains(t, pageJS, "textContent")
}

func TestPageSelfContained(t *testing.T) {
	f := newFakeNodes(t, 1)
	rec := get(Handler(f.router(t)), "/")
	require.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "text/html; charset=utf-8", rec.Header().Get("Content-Type"))
	assert.Equal(t, "nosniff", rec.Header().Get("X-Content-Type-Options"))
	body := rec.Body.String()
	assert.True(t, strings.HasPrefix(body, "<!DOCTYPE html>"))
	assert.NotRegexp(t, `(?i)https?:`, body, "no external references")
	assert.NotRegexp(t, `(?i)\ssrc\s*=|<link|@import|url\(`, body, "no assets loaded from anywhere")
	assert.Contains(t, body, `fetch("status.json"`, "the snapshot is fetched by a relative URL")
	assert.NotContains(t, body, `"/status.json"`)
	for _, hook := range []string{`id="updated"`, `data-refreshes="0"`, `id="nodes"`, `id="events"`, `id="primary"`} {
		assert.Contains(t, body, hook)
	}
	for _, hook := range []string{"dataset.role", "dataset.state", "dataset.refreshes", "dataset.at", `"primary"`, `"excluded"`} {
		assert.Contains(t, pageJS, hook)
	}
	for _, class := range []string{"tr.primary", "tr.fenced", "tr.down", "tr.excluded"} {
		assert.Contains(t, pageCSS, class)
	}

	// One inline style and one inline script, each allowed by its hash and
	// nothing else.
	style := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindAllStringSubmatch(body, -1)
	script := regexp.MustCompile(`(?s)<script>(.*?)</script>`).FindAllStringSubmatch(body, -1)
	require.Len(t, style, 1)
	require.Len(t, script, 1)
	assert.Equal(t, pageCSS, style[0][1])
	assert.Equal(t, pageJS, script[0][1])
	assert.Equal(t, 1, strings.Count(body, "<script"), "no other script element")
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	csp := rec.Header().Get("Content-Security-Policy")
	assert.Contains(t, csp, "default-src 'none'")
	assert.Contains(t, csp, "script-src "+hash(script[0][1])+";")
	assert.Contains(t, csp, "style-src "+hash(style[0][1])+";")
	assert.Contains(t, csp, "connect-src 'self'")
	assert.NotContains(t, csp, "unsafe")
}

func TestNotFoundAndMethods(t *testing.T) {
	f := newFakeNodes(t, 1)
	h := Handler(f.router(t))
	for _, target := range []string{"/x", "/index.html", "/status.json/", "/status.jsonx", "/status", "//", "/%00", "/dbrouter/status.json"} {
		t.Run("GET "+target, func(t *testing.T) {
			assert.Equal(t, http.StatusNotFound, get(h, target).Code)
		})
	}
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions, "BREW"} {
		for _, target := range []string{"/", "/status.json"} {
			t.Run(method+" "+target, func(t *testing.T) {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(method, target, strings.NewReader("{}")))
				assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)
				assert.Equal(t, "GET, HEAD", rec.Header().Get("Allow"))
			})
		}
	}
	for _, target := range []string{"/", "/status.json"} {
		t.Run("HEAD "+target, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, target, nil))
			assert.Equal(t, http.StatusOK, rec.Code)
			assert.Zero(t, rec.Body.Len())
			assert.NotEmpty(t, rec.Header().Get("Content-Length"))
			assert.NotEmpty(t, rec.Header().Get("Content-Type"))
		})
	}
	t.Run("nil DB", func(t *testing.T) {
		rec := get(Handler(nil), "/status.json")
		assert.Equal(t, http.StatusInternalServerError, rec.Code)
		assert.Equal(t, http.StatusNotFound, get(Handler(nil), "/x").Code)
	})
	t.Run("a request built by hand", func(t *testing.T) {
		// No RequestURI, odd URL: served, never a panic.
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, &http.Request{Method: http.MethodGet, URL: mustURL(t, ""), Header: http.Header{}})
		assert.Equal(t, http.StatusOK, rec.Code)
	})
}

func TestMountedUnderPrefix(t *testing.T) {
	f := newFakeNodes(t, 1)
	h := Handler(f.router(t))
	mux := http.NewServeMux()
	mux.Handle("/dbrouter/", http.StripPrefix("/dbrouter", h))
	mux.Handle("/ops/db/", http.StripPrefix("/ops/db/", h)) // a prefix with its slash
	mux.Handle("/exact", http.StripPrefix("/exact", h))     // the prefix alone routed too
	mux.Handle("/exact/", http.StripPrefix("/exact", h))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	fetch := func(t *testing.T, path string) *http.Response {
		t.Helper()
		resp, err := client.Get(srv.URL + path)
		require.NoError(t, err)
		_, err = io.Copy(io.Discard, resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		return resp
	}
	for _, prefix := range []string{"/dbrouter", "/ops/db", "/exact"} {
		t.Run(prefix, func(t *testing.T) {
			resp := fetch(t, prefix+"/")
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))

			resp = fetch(t, prefix+"/status.json")
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))

			assert.Equal(t, http.StatusNotFound, fetch(t, prefix+"/nothing").StatusCode)

			// The prefix alone is sent to the page's URL, where its relative
			// "status.json" resolves under the prefix.
			resp = fetch(t, prefix+"?x=1")
			require.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode, "as http.ServeMux redirects")
			to, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
			require.NoError(t, err)
			assert.Equal(t, prefix+"/", to.Path)
			assert.Equal(t, "x=1", to.RawQuery)
			assert.Equal(t, prefix+"/status.json", mustURL(t, to.String()).ResolveReference(mustURL(t, "status.json")).Path)
		})
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	require.NoError(t, err)
	return u
}
