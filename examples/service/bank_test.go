package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

// TestConcurrentTransfers sends 200 transfers at once between a few
// accounts, in both directions: none fails with a 5xx (no deadlock: rows
// are locked in id order), and no money appears or vanishes.
func TestConcurrentTransfers(t *testing.T) {
	c := sharedCluster(t)
	s := startService(t, c)
	ctx := testContext(t, 2*time.Minute)
	setup := s.client(t, true)
	const accounts, opening, transfers = 5, 1000, 200
	for i := range accounts {
		setup.createAccount(ctx, fmt.Sprintf("acct%d", i), opening)
	}

	cl := s.client(t, false)
	start := make(chan struct{})
	type result struct {
		status int
		body   string
		err    error
	}
	results := make([]result, transfers)
	var wg sync.WaitGroup
	for i := range transfers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(7, uint64(i)))
			from := 1 + rng.Int64N(accounts)
			to := 1 + (from+rng.Int64N(accounts-1))%accounts // any other account
			<-start
			r, err := cl.do(ctx, "POST", "/transfers", map[string]int64{"from": from, "to": to, "amount": 1 + rng.Int64N(300)})
			results[i] = result{r.status, string(r.body), err}
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)

	statuses := map[int]int{}
	for i, r := range results {
		require.NoError(t, r.err, "transfer %d", i)
		statuses[r.status]++
		assert.Contains(t, []int{http.StatusCreated, http.StatusConflict}, r.status, "transfer %d: %s", i, r.body)
	}
	total, perAccount := ledger(t, ctx, c.Primary())
	t.Logf("CONCURRENCY %d transfers at once over %d accounts in %v: statuses %v; total balance %d (opened with %d)",
		transfers, accounts, took.Round(time.Millisecond), statuses, total, accounts*opening)
	assert.Equal(t, int64(accounts*opening), total, "money neither appears nor vanishes")
	assert.Equal(t, statuses[http.StatusCreated], perAccount.transfers, "one transfer row per 201")
	for id, bal := range perAccount.balance {
		assert.Equal(t, opening+perAccount.in[id]-perAccount.out[id], bal, "account %d: opening + in - out", id)
	}
	assert.Positive(t, statuses[http.StatusCreated])
}

// books is what the primary holds: balances and the transfers' sums.
type books struct {
	balance, in, out map[int64]int64
	transfers        int
}

// ledger reads the accounts and transfers on node n, directly.
func ledger(t *testing.T, ctx context.Context, n *pgcluster.Node) (int64, books) {
	t.Helper()
	db, err := n.Open()
	require.NoError(t, err)
	defer db.Close()
	b := books{balance: map[int64]int64{}, in: map[int64]int64{}, out: map[int64]int64{}}
	var total int64
	rows, err := db.QueryContext(ctx, "SELECT id, balance FROM accounts")
	require.NoError(t, err)
	for rows.Next() {
		var id, bal int64
		require.NoError(t, rows.Scan(&id, &bal))
		b.balance[id] = bal
		total += bal
	}
	require.NoError(t, rows.Err())
	rows.Close()
	rows, err = db.QueryContext(ctx, "SELECT from_id, to_id, amount FROM transfers")
	require.NoError(t, err)
	for rows.Next() {
		var from, to, amount int64
		require.NoError(t, rows.Scan(&from, &to, &amount))
		b.out[from] += amount
		b.in[to] += amount
		b.transfers++
	}
	require.NoError(t, rows.Err())
	rows.Close()
	return total, b
}

// TestReadYourWritesAcrossRequests delays one replica by 2 s, so that a
// read there right after a write is stale, and runs 100 trials: a new user
// creates an account and reads it back, transfers from it and reads it
// back, each request on its own (the session rides in the cookie); a
// stranger reads the new account at once too. The user never reads a
// stale account; the stranger's reads go to the replicas, and those on the
// delayed one miss the account, which shows the delay would have caught a
// stale read.
func TestReadYourWritesAcrossRequests(t *testing.T) {
	c := sharedCluster(t)
	delayed := c.Replicas()[1]
	s := startService(t, c)
	ctx := testContext(t, 3*time.Minute)
	const delay = 2 * time.Second
	require.NoError(t, delayed.SetApplyDelay(ctx, delay))
	t.Cleanup(func() { // leave the shared cluster as it was
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		assert.NoError(t, delayed.SetApplyDelay(ctx, 0))
		waitCaughtUp(t, ctx, c)
	})
	sink := s.client(t, true).createAccount(ctx, "sink", 0)
	stranger := s.client(t, false)

	const trials = 100
	userServed := map[string]int{}
	strangerServed := map[string]int{}
	stale := map[string]int{} // the stranger's reads that missed the new account, by node
	var userStale int
	for i := range trials {
		user := s.client(t, true)
		a := user.createAccount(ctx, fmt.Sprintf("user%d", i), 100)

		r := stranger.must(ctx, "GET", fmt.Sprintf("/accounts/%d", a.ID), nil)
		var seen Account // or, for a 404, the error and served_by
		r.decode(t, &seen)
		strangerServed[seen.ServedBy]++
		switch r.status {
		case http.StatusOK:
		case http.StatusNotFound:
			stale[seen.ServedBy]++
		default:
			t.Fatalf("stranger: %d %s", r.status, r.body)
		}

		read := func(want int64) {
			t.Helper()
			r := user.must(ctx, "GET", fmt.Sprintf("/accounts/%d", a.ID), nil)
			if !assert.Equal(t, http.StatusOK, r.status, "trial %d: the user's own account: %s", i, r.body) {
				userStale++
				return
			}
			var got Account
			r.decode(t, &got)
			userServed[got.ServedBy]++
			if !assert.Equal(t, want, got.Balance, "trial %d, served by %s", i, got.ServedBy) {
				userStale++
			}
		}
		read(100)
		tr := user.must(ctx, "POST", "/transfers", map[string]int64{"from": a.ID, "to": sink.ID, "amount": 10})
		require.Equal(t, http.StatusCreated, tr.status, "%s", tr.body)
		read(90)
	}
	t.Logf("CONSISTENCY %d trials (create, read, transfer, read; %s delayed by %v): the user's reads stale %d of %d, served by %v; a stranger's reads served by %v, stale %v",
		trials, delayed.Name(), delay, userStale, 2*trials, userServed, strangerServed, stale)
	assert.Zero(t, userStale, "a client reads its own writes")
	for node := range strangerServed {
		assert.Contains(t, []string{"node1", "node2"}, node, "a client with no recent write reads from the replicas")
	}
	assert.Positive(t, stale[delayed.Name()], "the delayed replica served stale reads to the stranger: the delay shows")
}
