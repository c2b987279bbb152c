package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/internal/pgcluster"
	"github.com/dbrouter/dbrouter/internal/testwait"
)

// TestFailoverDuringTransfers crashes the primary under a steady stream of
// transfers, promotes the most advanced replica once the service reports
// no primary (/healthz 503), and re-points the other replica to it. Every
// transfer the service acknowledged (201) is on the new primary afterwards,
// and the books still balance.
//
// PostgreSQL's replication is asynchronous by default: a primary that
// crashes may take commits it acknowledged with it, whatever the client
// in front of it does. Promising no loss takes quorum commit, so this test
// sets synchronous_standby_names = 'ANY 1 (*)' (a commit returns once one
// replica has it on disk) and promotes the replica that received the most
// WAL, as a failover manager would.
func TestFailoverDuringTransfers(t *testing.T) {
	c := ownCluster(t)
	ctx := testContext(t, 4*time.Minute)
	n0, n1, n2 := c.Primary(), c.Replicas()[0], c.Replicas()[1]
	require.NoError(t, n0.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (*)'"))
	require.NoError(t, n0.Exec(ctx, "SELECT pg_reload_conf()"))
	testwait.For(t, time.Minute, "both replicas in the commit quorum", func() (bool, error) {
		var n int
		err := n0.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'", &n)
		return n == 2, err
	})

	s := startService(t, c)
	setup := s.client(t, true)
	const accounts, opening = 10, 1000
	for i := range accounts {
		setup.createAccount(ctx, fmt.Sprintf("acct%d", i), opening)
	}

	l := startTransfers(t, s, accounts, 6)
	l.waitCreated(t, 50, time.Minute)

	crashAt := time.Now()
	require.NoError(t, n0.Crash(ctx))
	health := s.client(t, false)
	testwait.Until(t, time.Minute, "/healthz 503 once the router sees no primary", func() bool {
		return health.must(ctx, "GET", "/healthz", nil).status == http.StatusServiceUnavailable
	})
	noPrimaryAt := time.Now()
	best, other := mostAdvanced(t, ctx, n1, n2)
	require.NoError(t, best.Promote(ctx))
	promotedAt := time.Now()
	require.NoError(t, other.Repoint(ctx, best))
	l.waitCreated(t, 50, time.Minute)
	r := health.must(ctx, "GET", "/healthz", nil)
	assert.Equal(t, http.StatusOK, r.status)
	assert.JSONEq(t, `{"status":"ok","primary":"`+best.Name()+`"}`, string(r.body))
	require.NoError(t, other.WaitStreaming(ctx))
	l.stop()

	acked, statuses, firstAfter := l.results(promotedAt)
	var onNew int
	db, err := best.Open()
	require.NoError(t, err)
	defer db.Close()
	for id, want := range acked {
		var got transferRow
		err := db.QueryRowContext(ctx, "SELECT from_id, to_id, amount FROM transfers WHERE id = $1", id).Scan(&got.From, &got.To, &got.Amount)
		if assert.NoError(t, err, "acknowledged transfer %d on the new primary", id) {
			assert.Equal(t, want, got, "transfer %d", id)
			onNew++
		}
	}
	total, b := ledger(t, ctx, best)
	t.Logf("FAILOVER service: crash -> /healthz 503 %v; promoted %s (most WAL received) %v after the crash; first 201 on it %v after the promotion; "+
		"%d transfers acknowledged, %d of them on the new primary (which holds %d transfers); statuses %v; total balance %d (opened with %d)",
		noPrimaryAt.Sub(crashAt).Round(time.Millisecond), best.Name(), promotedAt.Sub(crashAt).Round(time.Millisecond),
		max(firstAfter.Sub(promotedAt), 0).Round(time.Millisecond), len(acked), onNew, b.transfers, statuses, total, accounts*opening)
	assert.Equal(t, len(acked), onNew, "no acknowledged transfer is lost")
	assert.Equal(t, int64(accounts*opening), total, "the books balance")
	for id, bal := range b.balance {
		assert.Equal(t, opening+b.in[id]-b.out[id], bal, "account %d: opening + in - out", id)
	}
	for st := range statuses {
		assert.Contains(t, []int{http.StatusCreated, http.StatusConflict, http.StatusServiceUnavailable}, st,
			"a transfer during a failover succeeds, is refused, or is unavailable (503): never a 500")
	}

	// The re-pointed replica has every transfer too.
	waitCaughtUpWith(t, ctx, best, other)
	var replicated int
	require.NoError(t, other.QueryRow(ctx, "SELECT count(*) FROM transfers", &replicated))
	assert.Equal(t, b.transfers, replicated)
}

// transferRow is a transfer as the transfers table holds it.
type transferRow struct{ From, To, Amount int64 }

// transferLoad sends transfers between random accounts from a few
// workers, each paced, until stopped.
type transferLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex // protects following fields
	acked    map[int64]transferRow
	statuses map[int]int
	created  []time.Time // when each 201 came back
}

func startTransfers(t *testing.T, s *service, accounts int64, workers int) *transferLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &transferLoad{cancel: cancel, acked: map[int64]transferRow{}, statuses: map[int]int{}}
	cl := s.client(t, false)
	for w := range workers {
		l.wg.Go(func() {
			rng := rand.New(rand.NewPCG(11, uint64(w)))
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				from := 1 + rng.Int64N(accounts)
				want := transferRow{From: from, To: 1 + (from+rng.Int64N(accounts-1))%accounts, Amount: 1 + rng.Int64N(50)}
				r, err := cl.do(ctx, "POST", "/transfers", map[string]int64{"from": want.From, "to": want.To, "amount": want.Amount})
				if ctx.Err() != nil {
					return // stopped mid-call: not a result
				}
				l.mu.Lock()
				switch {
				case err != nil:
					l.statuses[-1]++ // no reply
				case r.status == http.StatusCreated:
					var tr Transfer
					if jerr := json.Unmarshal(r.body, &tr); jerr == nil && tr.ID > 0 {
						l.acked[tr.ID] = want
						l.created = append(l.created, time.Now())
					}
					l.statuses[r.status]++
				default:
					l.statuses[r.status]++
				}
				l.mu.Unlock()
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

func (l *transferLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

// waitCreated waits until n more transfers than now were acknowledged.
func (l *transferLoad) waitCreated(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	count := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.created)
	}
	base := count()
	testwait.Until(t, timeout, strconv.Itoa(n)+" more acknowledged transfers", func() bool { return count() >= base+n })
}

// results returns the acknowledged transfers, the statuses seen and when
// the first 201 after since came back.
func (l *transferLoad) results(since time.Time) (map[int64]transferRow, map[int]int, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	acked := make(map[int64]transferRow, len(l.acked))
	for k, v := range l.acked {
		acked[k] = v
	}
	statuses := make(map[int]int, len(l.statuses))
	for k, v := range l.statuses {
		statuses[k] = v
	}
	var first time.Time
	for _, at := range l.created {
		if at.After(since) {
			first = at
			break
		}
	}
	return acked, statuses, first
}

// mostAdvanced waits until the replicas' WAL receivers stopped streaming
// (their primary is gone) and returns the one that received the most WAL,
// then the other: promoting it loses nothing the other has, so the other
// can follow it.
func mostAdvanced(t *testing.T, ctx context.Context, a, b *pgcluster.Node) (best, other *pgcluster.Node) {
	t.Helper()
	received := func(n *pgcluster.Node) uint64 {
		testwait.For(t, time.Minute, n.Name()+"'s WAL receiver stopped streaming", func() (bool, error) {
			var streaming bool
			err := n.QueryRow(ctx, "SELECT count(*) > 0 FROM pg_stat_wal_receiver WHERE status = 'streaming'", &streaming)
			return err == nil && !streaming, err
		})
		var lsn string
		require.NoError(t, n.QueryRow(ctx, "SELECT (pg_last_wal_receive_lsn() - '0/0')::text", &lsn))
		v, err := strconv.ParseUint(lsn, 10, 64)
		require.NoError(t, err)
		return v
	}
	if received(a) >= received(b) {
		return a, b
	}
	return b, a
}

// waitCaughtUpWith waits until replica r has replayed primary p's WAL as of now.
func waitCaughtUpWith(t *testing.T, ctx context.Context, p, r *pgcluster.Node) {
	t.Helper()
	var lsn string
	require.NoError(t, p.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text", &lsn))
	testwait.For(t, time.Minute, r.Name()+" replayed "+lsn, func() (bool, error) {
		var ok bool
		err := r.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= '"+lsn+"'::pg_lsn", &ok)
		return ok, err
	})
}
