package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

// Scenario timing.
const (
	steadyFor    = 3 * time.Second  // load before the fault
	detectWithin = 15 * time.Second // the router seeing no primary; promoted anyway after that
	backAfter    = 4 * time.Second  // from the promotion to the old primary's return
	fenceWithin  = 15 * time.Second // the router fencing the returned old primary
)

// scenario is one failover, played against the cluster while the load
// runs: what it did to which node, and when.
type scenario struct {
	kind      string // crash, hang or switchover
	c         *pgcluster.Cluster
	db        *dbrouter.DB
	p         *printer
	m         *meter
	loadStart time.Time

	old, promoted, other  *pgcluster.Node
	faultAt, goneAt       time.Time // the fault began; it was done (the primary dead, frozen or stopped)
	noPrimaryAt           time.Time
	promoteAt, promotedAt time.Time // pg_promote called, returned
	freshAt               time.Time // a write of the scenario's own succeeded
	backAt                time.Time // the old primary came back
}

// play runs the scenario's steps: the fault, the promotion of the most
// advanced replica once the router sees no primary, the other replica
// re-pointed, the old primary back, and its fence.
func (s *scenario) play(ctx context.Context) error {
	s.old = s.c.Primary()
	a, b := s.c.Replicas()[0], s.c.Replicas()[1]
	if err := sleep(ctx, time.Until(s.loadStart.Add(steadyFor))); err != nil {
		return err
	}

	s.faultAt = time.Now()
	var err error
	switch s.kind {
	case "crash":
		s.p.step(s.since(), "crash %s (pg_ctl stop -m immediate)", s.old.Name())
		err = s.old.Crash(ctx)
	case "hang":
		s.p.step(s.since(), "freeze %s (SIGSTOP: its port accepts, nothing answers)", s.old.Name())
		err = s.old.Freeze(ctx)
	case "switchover":
		s.p.step(s.since(), "stop %s cleanly (pg_ctl stop -m fast)", s.old.Name())
		err = s.old.Stop(ctx)
	}
	if err != nil {
		return err
	}
	s.goneAt = time.Now()

	seen := waitUntil(ctx, detectWithin, func() bool { return s.db.Status().Primary == "" })
	s.noPrimaryAt = time.Now()
	if err := ctx.Err(); err != nil {
		return err
	}
	if seen {
		s.p.step(s.since(), "the router sees no primary (%v after the fault)", ms(s.noPrimaryAt.Sub(s.faultAt)))
	} else {
		s.p.step(s.since(), "the router still names a primary after %v: promoting all the same", detectWithin)
	}
	// A frozen primary's replicas keep their connection until
	// wal_receiver_timeout: do not wait for them to notice.
	best, other, lsn, err := mostAdvanced(ctx, a, b, s.kind != "hang")
	if err != nil {
		return err
	}
	s.p.step(s.since(), "promote %s (received the most WAL: %s)", best.Name(), lsn)
	s.promoteAt = time.Now()
	if err := best.Promote(ctx); err != nil {
		return err
	}
	s.promotedAt = time.Now()
	s.promoted, s.other = best, other
	// The load's writers may still sit out their deadline on a frozen
	// primary: a fresh write shows when the router itself switched.
	for i := int64(1); s.freshAt.IsZero(); i++ {
		wctx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := s.db.ExecContext(wctx, "INSERT INTO failover_demo (writer, seq, sent_at) VALUES (-1, $1, $2)", i, time.Now())
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
			s.freshAt = time.Now()
		case time.Since(s.promotedAt) > detectWithin:
			return fmt.Errorf("no write succeeded within %v of the promotion: %w", detectWithin, err)
		}
	}
	s.p.step(s.since(), "a fresh write succeeded, %v after the promotion began", ms(s.freshAt.Sub(s.promoteAt)))
	s.p.step(s.since(), "re-point %s to %s", other.Name(), best.Name())
	if err := other.Repoint(ctx, best); err != nil {
		return err
	}
	if err := other.WaitStreaming(ctx); err != nil {
		return err
	}
	s.p.step(s.since(), "%s streams from %s", other.Name(), best.Name())

	if err := sleep(ctx, time.Until(s.promotedAt.Add(backAfter))); err != nil {
		return err
	}
	s.backAt = time.Now()
	if s.kind == "hang" {
		s.p.step(s.since(), "thaw %s: a primary again, on its old timeline", s.old.Name())
		err = s.old.Thaw(ctx)
	} else {
		s.p.step(s.since(), "restart %s: a primary again, on its old timeline", s.old.Name())
		err = s.old.Start(ctx)
	}
	if err != nil {
		return err
	}
	if !waitUntil(ctx, fenceWithin, func() bool { _, _, ok := s.m.fenced(s.old.Name()); return ok }) && ctx.Err() == nil {
		return fmt.Errorf("the router did not fence %s within %v of its return", s.old.Name(), fenceWithin)
	}
	return ctx.Err()
}

// since is the time since the load started, for the log.
func (s *scenario) since() time.Duration { return time.Since(s.loadStart) }

// mostAdvanced returns the replica that received the most WAL, the other,
// and that position: promoting it loses nothing the other has, so the
// other can follow it. With settle set it first waits (a few seconds at
// most) until both WAL receivers stopped streaming, so that nothing more
// arrives while it compares.
func mostAdvanced(ctx context.Context, a, b *pgcluster.Node, settle bool) (best, other *pgcluster.Node, lsn string, err error) {
	if settle {
		for _, n := range []*pgcluster.Node{a, b} {
			waitUntil(ctx, 5*time.Second, func() bool {
				var streaming bool
				err := n.QueryRow(ctx, "SELECT count(*) > 0 FROM pg_stat_wal_receiver WHERE status = 'streaming'", &streaming)
				return err == nil && !streaming
			})
		}
	}
	received := func(n *pgcluster.Node) (uint64, string, error) {
		var pos, text string
		if err := n.QueryRow(ctx, "SELECT (pg_last_wal_receive_lsn() - '0/0')::text, pg_last_wal_receive_lsn()::text", &pos, &text); err != nil {
			return 0, "", err
		}
		v, err := strconv.ParseUint(pos, 10, 64)
		return v, text, err
	}
	ra, ta, err := received(a)
	if err != nil {
		return nil, nil, "", err
	}
	rb, tb, err := received(b)
	if err != nil {
		return nil, nil, "", err
	}
	if ra >= rb {
		return a, b, ta, nil
	}
	return b, a, tb, nil
}

// summary is the outcome of the run, in the order printed.
type summary []field

type field struct {
	key   string
	value any
}

// summarize reads the outcome: the load's counts, the meter's, and what
// the nodes themselves hold.
func (s *scenario) summarize(ctx context.Context, l *load) (summary, error) {
	t := l.totals()
	old, promoted := s.old.Name(), s.promoted.Name()
	first, resumed := s.m.firstWriteOn(promoted)
	fencedAt, onFenced, fenced := s.m.fenced(old)

	// What the old primary holds: rows sent after its fence (none may be),
	// and rows it committed after it was gone (writes in flight when it
	// froze, run when it was thawed: never acknowledged).
	var afterFence, late int64
	if fenced {
		if err := s.old.QueryRow(ctx, "SELECT count(*) FROM failover_demo WHERE sent_at >= '"+pgTime(fencedAt)+"'", &afterFence); err != nil {
			return nil, err
		}
	}
	if err := s.old.QueryRow(ctx, "SELECT count(*) FROM failover_demo WHERE committed_at >= '"+pgTime(s.goneAt)+"'", &late); err != nil {
		return nil, err
	}
	lost, err := ackedLost(ctx, s.promoted, l.ackedKeys())
	if err != nil {
		return nil, err
	}

	toFirst, toLoad := int64(-1), int64(-1) // -1: none
	if resumed {
		toFirst = first.Sub(s.promoteAt).Milliseconds()
	}
	if at, ok := l.firstAckAfter(s.promoteAt); ok {
		toLoad = at.Sub(s.promoteAt).Milliseconds()
	}
	return summary{
		{"scenario", s.kind},
		{"reads_ok", t.readsOK},
		{"reads_failed", t.readsFailed},
		{"writes_ok", t.writesOK},
		{"writes_failed", t.writesFailed},
		{"old_primary", old},
		{"new_primary", promoted},
		{"fault_to_no_primary_ms", s.noPrimaryAt.Sub(s.faultAt).Milliseconds()},
		{"fault_to_promotion_ms", s.promoteAt.Sub(s.faultAt).Milliseconds()},
		{"promotion_took_ms", s.promotedAt.Sub(s.promoteAt).Milliseconds()},
		{"promotion_to_first_write_ms", toFirst},
		{"promotion_to_fresh_write_ms", s.freshAt.Sub(s.promoteAt).Milliseconds()},
		{"promotion_to_load_write_ms", toLoad},
		{"writes_resumed", resumed},
		{"old_primary_fenced", fenced},
		{"fenced_reads", onFenced.reads},
		{"fenced_writes", onFenced.writes},
		{"fenced_rows_sent_after_fence", afterFence},
		{"old_primary_late_rows", late},
		{"acked_writes", t.writesOK},
		{"acked_writes_lost", lost},
	}, nil
}

// ackedLost counts the acknowledged writes the new primary lacks.
func ackedLost(ctx context.Context, n *pgcluster.Node, acked map[key]struct{}) (int, error) {
	db, err := n.Open()
	if err != nil {
		return 0, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT writer, seq FROM failover_demo")
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.writer, &k.seq); err != nil {
			return 0, err
		}
		delete(acked, k)
	}
	return len(acked), rows.Err()
}

// pgTime formats t as a timestamptz literal.
func pgTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.999999Z07:00") }

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitUntil polls cond every 20 ms until it holds (true) or d passes or
// ctx ends (false).
func waitUntil(ctx context.Context, d time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// ms rounds d to milliseconds, for the log.
func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
