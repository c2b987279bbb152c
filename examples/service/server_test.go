package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/testwait"
)

// TestAPI exercises every endpoint and every status it answers, over HTTP.
func TestAPI(t *testing.T) {
	c := sharedCluster(t)
	s := startService(t, c)
	ctx := testContext(t, 2*time.Minute)
	user := s.client(t, true)
	stranger := s.client(t, false)
	replicas := []string{"node1", "node2"}

	t.Run("POST /accounts", func(t *testing.T) {
		r := user.must(ctx, "POST", "/accounts", `{"owner":"ann","balance":100}`)
		assert.Equal(t, http.StatusCreated, r.status)
		assert.JSONEq(t, `{"id":1,"owner":"ann","balance":100}`, string(r.body))
		assert.Equal(t, "application/json", r.header.Get("Content-Type"))
		assert.Contains(t, r.header.Get("Set-Cookie"), sessionCookie+"=v1.", "the session token rides in a cookie")

		r = user.must(ctx, "POST", "/accounts", `{"owner":"  bob  "}`)
		assert.Equal(t, http.StatusCreated, r.status)
		assert.JSONEq(t, `{"id":2,"owner":"bob","balance":0}`, string(r.body), "trimmed; no balance is 0")
	})

	t.Run("POST /accounts with bad input", func(t *testing.T) {
		for _, body := range []string{
			``, `{`, `[]`, `"ann"`, `null`, `{}`, `{"owner":""}`, `{"owner":"   "}`, `{"owner":null}`,
			`{"owner":42}`, `{"owner":"ann","balance":-1}`, `{"owner":"ann","balance":1.5}`,
			`{"owner":"ann","balance":"100"}`, `{"owner":"ann","balance":1e30}`,
			`{"owner":"ann","balance":1000000000000000001}`, `{"owner":"ann","extra":1}`,
			`{"owner":"ann"} {"owner":"bob"}`, `{"owner":"ann"}]`, `{"owner":"a\u0000b"}`, `{"owner":"a\nb"}`,
			`{"owner":"` + strings.Repeat("x", maxOwnerLen+1) + `"}`,
		} {
			r := user.must(ctx, "POST", "/accounts", body)
			assert.Equal(t, http.StatusBadRequest, r.status, "body %.60q: %s", body, r.body)
			assertError(t, r)
		}
		r := user.must(ctx, "POST", "/accounts", `{"owner":"`+strings.Repeat("x", maxBody)+`"}`)
		assert.Equal(t, http.StatusRequestEntityTooLarge, r.status, "%s", r.body)
		assertError(t, r)
	})

	t.Run("GET /accounts/{id}", func(t *testing.T) {
		r := user.must(ctx, "GET", "/accounts/1", nil)
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		var a Account
		r.decode(t, &a)
		assert.Equal(t, Account{ID: 1, Owner: "ann", Balance: 100, ServedBy: a.ServedBy}, a)
		assert.Contains(t, []string{"node0", "node1", "node2"}, a.ServedBy)

		waitCaughtUp(t, ctx, c)
		testwait.Until(t, 30*time.Second, "a stranger reading account 1 from a replica", func() bool {
			r := stranger.must(ctx, "GET", "/accounts/1", nil)
			var a Account
			r.decode(t, &a)
			return r.status == http.StatusOK && a.Owner == "ann"
		})
		for range 4 { // round-robin over both replicas
			r := stranger.must(ctx, "GET", "/accounts/1", nil)
			require.Equal(t, http.StatusOK, r.status, "%s", r.body)
			var a Account
			r.decode(t, &a)
			assert.Contains(t, replicas, a.ServedBy, "a client with no recent write reads from a replica")
		}

		for path, want := range map[string]int{
			"/accounts/999999":                  http.StatusNotFound,
			"/accounts/0":                       http.StatusNotFound,
			"/accounts/-3":                      http.StatusNotFound,
			"/accounts/99999999999999999999999": http.StatusNotFound,
			"/accounts/abc":                     http.StatusBadRequest,
			"/accounts/1.5":                     http.StatusBadRequest,
			"/accounts/1e3":                     http.StatusBadRequest,
			"/accounts/%20":                     http.StatusBadRequest,
			"/accounts/0x1":                     http.StatusBadRequest,
		} {
			r := stranger.must(ctx, "GET", path, nil)
			assert.Equal(t, want, r.status, "%s: %s", path, r.body)
			assertError(t, r)
		}
	})

	t.Run("GET /accounts", func(t *testing.T) {
		for i := range 3 {
			user.createAccount(ctx, fmt.Sprintf("list%d", i), 1)
		}
		waitCaughtUp(t, ctx, c)
		var list struct {
			Accounts []Account `json:"accounts"`
			ServedBy string    `json:"served_by"`
		}
		testwait.Until(t, 30*time.Second, "a stranger listing 5 accounts", func() bool {
			r := stranger.must(ctx, "GET", "/accounts", nil)
			r.decode(t, &list)
			return r.status == http.StatusOK && len(list.Accounts) == 5
		})
		assert.Contains(t, replicas, list.ServedBy, "a client with no recent write lists from a replica")
		assert.Equal(t, Account{ID: 1, Owner: "ann", Balance: 100}, list.Accounts[0])

		r := stranger.must(ctx, "GET", "/accounts?after=2&limit=2", nil)
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		r.decode(t, &list)
		require.Len(t, list.Accounts, 2)
		assert.Equal(t, []int64{3, 4}, []int64{list.Accounts[0].ID, list.Accounts[1].ID})

		for _, q := range []string{"limit=0", "limit=1001", "limit=x", "limit=-1", "after=x", "after=1.5"} {
			r := stranger.must(ctx, "GET", "/accounts?"+q, nil)
			assert.Equal(t, http.StatusBadRequest, r.status, "%s: %s", q, r.body)
			assertError(t, r)
		}
	})

	t.Run("POST /transfers", func(t *testing.T) {
		r := user.must(ctx, "POST", "/transfers", `{"from":1,"to":2,"amount":10}`)
		assert.Equal(t, http.StatusCreated, r.status)
		assert.JSONEq(t, `{"id":1,"from":1,"to":2,"amount":10}`, string(r.body))
		for id, want := range map[int64]int64{1: 90, 2: 10} {
			var a Account
			r := user.must(ctx, "GET", fmt.Sprintf("/accounts/%d", id), nil)
			r.decode(t, &a)
			assert.Equal(t, want, a.Balance, "account %d after the transfer, read by its maker", id)
		}

		r = user.must(ctx, "POST", "/transfers", `{"from":2,"to":1,"amount":11}`)
		assert.Equal(t, http.StatusConflict, r.status, "insufficient funds: %s", r.body)
		assertError(t, r)
		for _, body := range []string{`{"from":1,"to":999,"amount":1}`, `{"from":999,"to":1,"amount":1}`, `{"from":0,"to":1,"amount":1}`} {
			r := user.must(ctx, "POST", "/transfers", body)
			assert.Equal(t, http.StatusNotFound, r.status, "%s: %s", body, r.body)
			assertError(t, r)
		}
		for _, body := range []string{
			``, `{`, `[]`, `{}`, `{"from":1,"to":2}`, `{"from":1,"to":2,"amount":0}`, `{"from":1,"to":2,"amount":-5}`,
			`{"from":1,"to":1,"amount":1}`, `{"to":2,"amount":1}`, `{"from":1,"amount":1}`, `{"from":1,"to":2,"amount":1.5}`,
			`{"from":"1","to":2,"amount":1}`, `{"from":1,"to":2,"amount":1e30}`, `{"from":1,"to":2,"amount":1000000000000000001}`,
			`{"from":1,"to":2,"amount":1,"memo":"x"}`, `{"from":1,"to":2,"amount":1}{}`,
		} {
			r := user.must(ctx, "POST", "/transfers", body)
			assert.Equal(t, http.StatusBadRequest, r.status, "%q: %s", body, r.body)
			assertError(t, r)
		}
		// Balances did not move.
		var a Account
		user.must(ctx, "GET", "/accounts/1", nil).decode(t, &a)
		assert.Equal(t, int64(90), a.Balance)
	})

	t.Run("a balance that would overflow", func(t *testing.T) {
		rich := user.createAccount(ctx, "rich", maxAmount)
		_, err := s.db.ExecContext(ctx, "UPDATE accounts SET balance = 9223372036854775800 WHERE id = $1", rich.ID)
		require.NoError(t, err)
		r := user.must(ctx, "POST", "/transfers", fmt.Sprintf(`{"from":1,"to":%d,"amount":10}`, rich.ID))
		assert.Equal(t, http.StatusConflict, r.status, "%s", r.body)
		assertError(t, r)
	})

	t.Run("methods and paths", func(t *testing.T) {
		for _, tc := range []struct {
			method, path string
			want         int
		}{
			{"DELETE", "/accounts", http.StatusMethodNotAllowed},
			{"PUT", "/accounts/1", http.StatusMethodNotAllowed},
			{"GET", "/transfers", http.StatusMethodNotAllowed},
			{"POST", "/healthz", http.StatusMethodNotAllowed},
			{"GET", "/nothing", http.StatusNotFound},
			{"GET", "/accounts/1/x", http.StatusNotFound},
			{"POST", "/dbrouter/", http.StatusMethodNotAllowed},
			{"GET", "/dbrouter/nothing", http.StatusNotFound},
			{"GET", "/", http.StatusOK},
		} {
			r := stranger.must(ctx, tc.method, tc.path, nil)
			assert.Equal(t, tc.want, r.status, "%s %s: %s", tc.method, tc.path, r.body)
		}
	})

	t.Run("GET /healthz", func(t *testing.T) {
		r := stranger.must(ctx, "GET", "/healthz", nil)
		assert.Equal(t, http.StatusOK, r.status)
		assert.JSONEq(t, `{"status":"ok","primary":"node0"}`, string(r.body))
		// 503 without a primary: TestFailoverDuringTransfers.
	})

	t.Run("GET /metrics", func(t *testing.T) {
		r := stranger.must(ctx, "GET", "/metrics", nil)
		require.Equal(t, http.StatusOK, r.status)
		body := string(r.body)
		for _, want := range []string{
			`dbrouter_node_up{node="node0"} 1`,
			`dbrouter_node_primary{node="node0"} 1`,
			`dbrouter_statement_duration_seconds_bucket{node="node0",route="write"`,
			`dbrouter_statement_duration_seconds_count{node="node1",route="read"}`,
			`dbrouter_statements_total{`,
			`go_goroutines `,
		} {
			assert.Contains(t, body, want)
		}
	})

	t.Run("status page", func(t *testing.T) {
		r := stranger.must(ctx, "GET", "/dbrouter/", nil)
		assert.Equal(t, http.StatusOK, r.status)
		assert.Contains(t, string(r.body), "<title>dbrouter status</title>")
		r = stranger.must(ctx, "GET", "/dbrouter/status.json", nil)
		require.Equal(t, http.StatusOK, r.status)
		var st struct {
			Primary string `json:"primary"`
			Nodes   []struct {
				Name string `json:"name"`
			} `json:"nodes"`
		}
		r.decode(t, &st)
		assert.Equal(t, "node0", st.Primary)
		assert.Len(t, st.Nodes, 3)
		assert.NotContains(t, string(r.body), "postgres://", "no DSN on the page")
	})

	t.Run("a garbled session cookie is ignored", func(t *testing.T) {
		for _, v := range []string{"garbage", "v1.zz.1", "v1.1.1.p.p", strings.Repeat("a", 100), "v1.ffffffffffffffff.7fffffffffffffff"} {
			req, err := http.NewRequestWithContext(ctx, "GET", s.url+"/accounts/1", nil)
			require.NoError(t, err)
			req.AddCookie(&http.Cookie{Name: sessionCookie, Value: v})
			resp, err := stranger.http.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode, "cookie %q", v)
		}
	})
}

// assertError checks that a reply is {"error": "..."}.
func assertError(t *testing.T, r response) {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if assert.NoError(t, json.Unmarshal(r.body, &e), "body %s", r.body) {
		assert.NotEmpty(t, e.Error, "body %s", r.body)
	}
}

// TestBadInputNever500 sends random bodies, paths and queries: whatever
// the input, the service answers below 500.
func TestBadInputNever500(t *testing.T) {
	c := sharedCluster(t)
	s := startService(t, c)
	ctx := testContext(t, 2*time.Minute)
	cl := s.client(t, true)
	cl.createAccount(ctx, "ann", 100)
	cl.createAccount(ctx, "bob", 100)

	rng := rand.New(rand.NewPCG(1, 2))
	values := []string{
		`0`, `1`, `2`, `-1`, `3`, `1.5`, `1e400`, `-0`, `9223372036854775807`, `-9223372036854775808`,
		`9223372036854775808`, `""`, `"x"`, `"\u0000"`, `"\ud800"`, `null`, `true`, `[]`, `{}`, `[1]`,
		`"` + strings.Repeat("é", 300) + `"`, `"Ann O'Brien; DROP TABLE accounts; --"`,
	}
	keys := []string{"owner", "balance", "from", "to", "amount", "id", "", "Owner", "FROM"}
	randomJSON := func() string {
		var b strings.Builder
		b.WriteString("{")
		for i := range rng.IntN(4) {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, "%q:%s", keys[rng.IntN(len(keys))], values[rng.IntN(len(values))])
		}
		b.WriteString("}")
		return b.String()
	}
	randomBytes := func() string {
		p := make([]byte, rng.IntN(40))
		for i := range p {
			p[i] = byte(rng.IntN(256))
		}
		return string(p)
	}
	var statuses = map[int]int{}
	for i := range 400 {
		var r response
		var err error
		switch i % 5 {
		case 0:
			r, err = cl.do(ctx, "POST", "/accounts", randomJSON())
		case 1:
			r, err = cl.do(ctx, "POST", "/transfers", randomJSON())
		case 2:
			path := []string{"/accounts", "/transfers"}[rng.IntN(2)]
			r, err = cl.do(ctx, "POST", path, randomBytes())
		case 3:
			id := []string{"1", "-1", "x", "%00", "%ff", "1%2F2", "١", "01", "+1", "%201", "1%20", strings.Repeat("9", 40)}[rng.IntN(12)]
			r, err = cl.do(ctx, "GET", "/accounts/"+id, nil)
		case 4:
			q := []string{"limit=%00", "after=-1", "limit=1&limit=2", "after=9223372036854775807", "limit=1000", "x=1", "after=" + strings.Repeat("1", 30)}[rng.IntN(7)]
			r, err = cl.do(ctx, "GET", "/accounts?"+q, nil)
		}
		require.NoError(t, err)
		statuses[r.status]++
		assert.Less(t, r.status, 500, "request %d: %s", i, r.body)
	}
	t.Logf("statuses for 400 random requests: %v", statuses)
}

// TestObserverTags checks the served_by bookkeeping on its own: tags are
// reused, never shared by two holders, and a statement sets only its own.
func TestObserverTags(t *testing.T) {
	var tg tagger
	a, b := tg.acquire(), tg.acquire()
	require.NotEqual(t, a.prefix, b.prefix)
	tg.observe(stmt(a.prefix+"SELECT 1", "node1"))
	tg.observe(stmt(b.prefix+"SELECT 1", "node2"))
	tg.observe(stmt("SELECT 1", "node0"))        // untagged
	tg.observe(stmt("/*req 99*/ SELECT 1", "x")) // no such tag
	tg.observe(stmt("/*req x*/ SELECT 1", "x"))
	tg.observe(stmt("/*req 1", "x"))
	assert.Equal(t, "node1", a.servedBy())
	assert.Equal(t, "node2", b.servedBy())
	tg.release(a)
	c := tg.acquire()
	assert.Same(t, a, c, "a released tag is reused")
	assert.Empty(t, c.servedBy(), "with no node recorded")
	tg.release(b)
	tg.release(c)
}

func TestObserverTagsConcurrent(t *testing.T) {
	var tg tagger
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	const workers = 16
	for w := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			me := fmt.Sprintf("node%d", w)
			for i := 0; i < 2000 && ctx.Err() == nil; i++ {
				tag := tg.acquire()
				tg.observe(stmt(tag.prefix+"SELECT 1", me))
				if got := tag.servedBy(); got != me {
					t.Errorf("worker %d read %q", w, got)
				}
				tg.release(tag)
			}
		}()
	}
	for range workers {
		<-done
	}
	assert.LessOrEqual(t, len(*tg.all.Load()), workers, "no more tags than holders at once")
}

// stmt is a statement as the hook would report it.
func stmt(query, node string) dbrouter.Statement {
	return dbrouter.Statement{Node: node, Query: query, Reason: dbrouter.ReasonRead, Start: time.Now()}
}
