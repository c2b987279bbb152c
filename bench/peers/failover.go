package main

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

// never is the value of a time that did not come within its bound.
var never = math.Inf(1)

// episode is a contender on a fresh cluster under the mixed load.
type episode struct {
	b          *bench
	k          *contender
	c          *pgcluster.Cluster
	n0, n1, n2 *pgcluster.Node
	cl         client
	l          *load
}

// startEpisode starts a cluster, opens the contender on it and starts the
// load; it returns once the load has made warmWrites writes on the primary.
func (b *bench) startEpisode(ctx context.Context, k *contender) (*episode, error) {
	c, err := b.cluster(ctx)
	if err != nil {
		return nil, err
	}
	e := &episode{b: b, k: k, c: c, n0: c.Nodes()[0], n1: c.Nodes()[1], n2: c.Nodes()[2]}
	e.cl, err = k.open(e.n0, []*pgcluster.Node{e.n1, e.n2})
	if err != nil {
		clusters.close(c)
		return nil, fmt.Errorf("open %s: %w", k.key, err)
	}
	e.l = startLoad(e.cl, b.p)
	err = waitFor(ctx, b.p.setupTimeout, "the load to start", func() bool {
		w, r := e.l.counts(e.n0.Name())
		return w >= b.p.warmWrites && r >= b.p.warmWrites
	})
	if err != nil {
		t := count(e.l.snapshot())
		e.end()
		return nil, fmt.Errorf("%w (%d calls, %d failed: %s)", err, t.total, t.failed, t.errs)
	}
	return e, nil
}

// end stops the load, closes the contender and removes the cluster, each
// bounded in time. It returns how many load calls ignored their context.
func (e *episode) end() int {
	stuck := e.l.stop(5 * time.Second)
	if err := closeBounded(e.cl, 10*time.Second); err != nil {
		e.b.log.printf("  %s: close: %v", e.k.key, err)
	}
	if err := clusters.close(e.c); err != nil {
		e.b.log.printf("  removing the cluster: %v", err)
	}
	return stuck
}

// crashEpisode runs scenarios 2, 3 and 4 on one cluster:
//
//  1. under the load, the writers hold still until both replicas have
//     replayed everything (so that node2 can follow node1's new timeline
//     later), then node0 is crashed and the writers resume;
//  2. node1 is promoted at once, and takes one write of its own (a marker:
//     from then on node2, still on the old timeline, is stale);
//  3. scenario 2 and 4 window: until writes reached node1 and staleWindow
//     passed, at most recoverCap after the promotion; node2 is left pointing
//     at the dead node0 throughout (scenario 4);
//  4. (scenario 3) node2 is re-pointed to node1, node0 restarted: a primary
//     on its old timeline; splitWindow of load afterwards.
func (b *bench) crashEpisode(ctx context.Context, k *contender) error {
	e, err := b.startEpisode(ctx, k)
	if err != nil {
		return err
	}
	notReturned := 0
	defer func() {
		if n := max(e.end(), notReturned); n > 0 {
			b.res.note(scCrash, k.key, fmt.Sprintf("%d calls ignored their context when the load stopped", n))
		}
	}()
	p, l := b.p, e.l
	n0, n1, n2 := e.n0, e.n1, e.n2

	l.hold.Store(true)
	if err := l.waitHeld(ctx, 2*p.callTimeout); err != nil {
		return err
	}
	if err := waitCaughtUp(ctx, e.c, p.setupTimeout); err != nil {
		return err
	}
	crashAt := time.Now()
	if err := n0.Crash(ctx); err != nil {
		return err
	}
	l.hold.Store(false)
	promotedAt, err := promote(ctx, n1, p.setupTimeout)
	if err != nil {
		return err
	}
	if err := n1.Exec(ctx, "INSERT INTO "+markTable+" DEFAULT VALUES"); err != nil {
		return err
	}
	markAt := time.Now()
	b.log.printf("  %s: node0 crashed, node1 promoted %v later; node2 left on the old timeline", k.key, promotedAt.Sub(crashAt).Round(time.Millisecond))

	capAt := promotedAt.Add(p.recoverCap)
	windowEnd := markAt.Add(p.staleWindow)
	err = waitFor(ctx, p.recoverCap+time.Second, "writes on node1", func() bool {
		now := time.Now()
		if now.After(capAt) {
			return true
		}
		first, ok := l.firstWrite(n1.Name())
		return ok && now.After(windowEnd) && now.After(first.Add(time.Second))
	})
	if err != nil {
		return err
	}
	endA := time.Now()
	ops := l.snapshot()

	// Scenario 2: the failover itself.
	reads, writes := count(window(ops, false, crashAt, endA)), count(window(ops, true, crashAt, endA))
	r := b.res
	r.put(scCrash, k.key, "readsFailed", float64(reads.failed))
	r.put(scCrash, k.key, "readsTotal", float64(reads.total))
	r.put(scCrash, k.key, "writesFailed", float64(writes.failed))
	r.put(scCrash, k.key, "writesTotal", float64(writes.total))
	r.errs(scCrash, k.key, "reads", reads.errs)
	r.errs(scCrash, k.key, "writes", writes.errs)
	first, recovered := firstOK(ops, true, n1.Name(), crashAt)
	recovered = recovered && !first.After(capAt)
	if recovered {
		r.put(scCrash, k.key, "promoToWrite", max(first.Sub(promotedAt), 0).Seconds())
		r.put(scCrash, k.key, "crashToWrite", first.Sub(crashAt).Seconds())
		r.put(scCrash, k.key, "recovered", 1)
	} else {
		r.put(scCrash, k.key, "promoToWrite", never)
		r.put(scCrash, k.key, "crashToWrite", never)
		r.put(scCrash, k.key, "recovered", 0)
	}
	b.log.printf("  %s: failover: %d/%d reads and %d/%d writes failed; first write on node1: %s", k.key,
		reads.failed, reads.total, writes.failed, writes.total, fmtSeconds(r.last(scCrash, k.key, "promoToWrite")))

	// Scenario 4: reads served by node2, left on the old timeline, once node1
	// had taken a write.
	sw := count(window(ops, false, markAt, windowEnd))
	r.put(scStale, k.key, "staleReads", float64(sw.byNode[n2.Name()]))
	r.put(scStale, k.key, "staleTotal", float64(sw.total-sw.failed))
	if recovered {
		aw := count(window(ops, false, first, windowEnd))
		r.put(scStale, k.key, "staleAfterWrite", float64(aw.byNode[n2.Name()]))
		r.put(scStale, k.key, "staleAfterWriteTotal", float64(aw.total-aw.failed))
	} else {
		r.put(scStale, k.key, "staleAfterWrite", math.NaN())
		r.put(scStale, k.key, "staleAfterWriteTotal", math.NaN())
	}
	r.put(scStale, k.key, "staleFailed", float64(sw.failed))
	b.log.printf("  %s: stale timeline: node2 served %d of %d reads in the %v after the promotion", k.key,
		sw.byNode[n2.Name()], sw.total-sw.failed, p.staleWindow)

	if !b.cfg.has(scSplitBrain) {
		return nil
	}
	// Scenario 3: node2 follows node1; node0 returns on its old timeline.
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err = n2.Repoint(rctx, n1)
	if err == nil {
		err = n2.WaitStreaming(rctx)
	}
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.note(scSplitBrain, k.key, "node2 did not stream from node1 after re-pointing")
	}
	if err := n0.Start(ctx); err != nil {
		return err
	}
	backAt := time.Now()
	b.log.printf("  %s: node0 back as a primary on its old timeline", k.key)
	if err := sleepCtx(ctx, p.splitWindow); err != nil {
		return err
	}
	endB := time.Now()
	notReturned = l.stop(5 * time.Second)
	ops = l.snapshot()
	bw, br := count(window(ops, true, backAt, endB)), count(window(ops, false, backAt, endB))
	r.put(scSplitBrain, k.key, "oldWrites", float64(bw.byNode[n0.Name()]))
	r.put(scSplitBrain, k.key, "splitWrites", float64(bw.total-bw.failed))
	r.put(scSplitBrain, k.key, "oldReads", float64(br.byNode[n0.Name()]))
	r.put(scSplitBrain, k.key, "splitReads", float64(br.total-br.failed))
	r.put(scSplitBrain, k.key, "splitWritesFailed", float64(bw.failed))
	r.put(scSplitBrain, k.key, "splitReadsFailed", float64(br.failed))
	r.errs(scSplitBrain, k.key, "writes", bw.errs)
	var rows int
	q := fmt.Sprintf("SELECT count(*) FROM %s WHERE node = '%s' AND at >= '%s'", loadTable, n0.Name(), backAt.UTC().Format(time.RFC3339Nano))
	if err := n0.QueryRow(ctx, q, &rows); err == nil {
		r.put(scSplitBrain, k.key, "oldRows", float64(rows))
	}
	// Where does a client opened now, during the split brain, write? (The
	// load's own connections may all predate node0's return.)
	fresh, err := k.open(n0, []*pgcluster.Node{n1, n2})
	if err != nil {
		r.str(scSplitBrain, k.key, "freshClient", "open failed: "+errKind(err))
	} else {
		wctx, cancel := context.WithTimeout(ctx, p.callTimeout)
		node, err := fresh.write(wctx, -2)
		cancel()
		if err != nil {
			node = "failed: " + errKind(err)
		}
		r.str(scSplitBrain, k.key, "freshClient", node)
		if err := closeBounded(fresh, 10*time.Second); err != nil {
			b.log.printf("  %s: close: %v", k.key, err)
		}
	}
	b.log.printf("  %s: split brain: node0 took %d of %d writes and served %d of %d reads; a new client writes to %s", k.key,
		bw.byNode[n0.Name()], bw.total-bw.failed, br.byNode[n0.Name()], br.total-br.failed, r.getStr(scSplitBrain, k.key, "freshClient"))
	return nil
}

// hang runs scenario 5: node0 is frozen (SIGSTOP: it accepts connections and
// answers nothing), node1 promoted at once; the window lasts until writes
// reached node1 (and one more second), at most recoverCap.
func (b *bench) hang(ctx context.Context, k *contender) error {
	e, err := b.startEpisode(ctx, k)
	if err != nil {
		return err
	}
	p, l, r := b.p, e.l, b.res
	ended := false
	defer func() {
		if !ended {
			e.end()
		}
	}()
	before := runtime.NumGoroutine()
	frozenAt := time.Now()
	if err := e.n0.Freeze(ctx); err != nil {
		return err
	}
	frozen := time.Now()
	promotedAt, err := promote(ctx, e.n1, p.setupTimeout)
	if err != nil {
		return err
	}
	fresh := startFresh(e.cl, p)
	defer fresh.stop(p.callTimeout + time.Second) // on an early return too
	b.log.printf("  %s: node0 frozen, node1 promoted %v later", k.key, promotedAt.Sub(frozenAt).Round(time.Millisecond))
	capAt := promotedAt.Add(p.recoverCap)
	err = waitFor(ctx, p.recoverCap+time.Second, "writes on node1", func() bool {
		first, ok := l.firstWrite(e.n1.Name())
		return time.Now().After(capAt) || ok && time.Since(first) > time.Second
	})
	if err != nil {
		return err
	}
	endW := time.Now()
	threshold := p.callTimeout + p.stuckMargin
	stuckNow := l.stuck(threshold)
	during := runtime.NumGoroutine() - fresh.running()
	ops := l.snapshot()
	freshOps, freshLeft := fresh.stop(p.callTimeout + time.Second)
	ended = true
	notReturned := e.end()

	calls := append(window(ops, false, frozenAt, endW), window(ops, true, frozenAt, endW)...)
	stuck := stuckNow
	for _, o := range calls {
		if o.end.Sub(o.start) > threshold {
			stuck++
		}
	}
	reads, writes := count(window(ops, false, frozenAt, endW)), count(window(ops, true, frozenAt, endW))
	r.put(scHang, k.key, "readsFailed", float64(reads.failed))
	r.put(scHang, k.key, "readsTotal", float64(reads.total))
	r.put(scHang, k.key, "writesFailed", float64(writes.failed))
	r.put(scHang, k.key, "writesTotal", float64(writes.total))
	r.errs(scHang, k.key, "reads", reads.errs)
	r.errs(scHang, k.key, "writes", writes.errs)
	r.put(scHang, k.key, "stuck", float64(stuck))
	r.put(scHang, k.key, "slowest", slowest(calls).Seconds())
	r.put(scHang, k.key, "goroutinesGrowth", float64(during-before))
	if notReturned > 0 {
		r.note(scHang, k.key, fmt.Sprintf("%d calls ignored their context when the load stopped", notReturned))
	}
	first, ok := firstOK(ops, true, e.n1.Name(), frozenAt)
	if ok && !first.After(capAt) {
		r.put(scHang, k.key, "promoToWrite", max(first.Sub(promotedAt), 0).Seconds())
		r.put(scHang, k.key, "recovered", 1)
	} else {
		r.put(scHang, k.key, "promoToWrite", never)
		r.put(scHang, k.key, "recovered", 0)
	}
	if f, ok := firstOK(freshOps, true, e.n1.Name(), promotedAt); ok && !f.After(capAt) {
		r.put(scHang, k.key, "freshToWrite", max(f.Sub(promotedAt), 0).Seconds())
	} else {
		r.put(scHang, k.key, "freshToWrite", never)
	}
	freshStuck := freshLeft
	for _, o := range freshOps {
		if o.end.Sub(o.start) > threshold {
			freshStuck++
		}
	}
	r.put(scHang, k.key, "freshStuck", float64(freshStuck))
	// A frozen node answers nothing: a call it served that began well after
	// the freeze took hold means the freeze did not hold, and the figures
	// above would not mean what they say.
	if late := countOK(calls, true, e.n0.Name(), frozen.Add(100*time.Millisecond)) + countOK(calls, false, e.n0.Name(), frozen.Add(100*time.Millisecond)); late > 0 {
		r.note(scHang, k.key, fmt.Sprintf("**node0 answered %d calls after it was frozen: the freeze did not hold in this run**", late))
	}
	b.log.printf("  %s: hang: first write on node1 %s after the promotion (a fresh write: %s); %d calls stuck past %v; %d/%d reads, %d/%d writes failed",
		k.key, fmtSeconds(r.last(scHang, k.key, "promoToWrite")), fmtSeconds(r.last(scHang, k.key, "freshToWrite")), stuck, threshold,
		reads.failed, reads.total, writes.failed, writes.total)
	return nil
}

// freshWriter issues a write every 100 ms, each from a goroutine of its own
// with the load's deadline, so that none waits behind another: the first of
// them to succeed on the new primary shows when a new write gets there,
// whatever the load's writers are stuck in.
type freshWriter struct {
	stopc chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	live  atomic.Int64

	mu  sync.Mutex // protects ops
	ops []op
}

func startFresh(c client, p params) *freshWriter {
	f := &freshWriter{stopc: make(chan struct{})}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := int64(-1); ; i-- {
			select {
			case <-f.stopc:
				return
			case <-tick.C:
			}
			f.wg.Add(1)
			f.live.Add(1)
			go func() {
				defer f.wg.Done()
				defer f.live.Add(-1)
				ctx, cancel := context.WithTimeout(context.Background(), p.callTimeout)
				defer cancel()
				o := op{write: true, start: time.Now()}
				o.node, o.err = c.write(ctx, i)
				o.end = time.Now()
				f.mu.Lock()
				f.ops = append(f.ops, o)
				f.mu.Unlock()
			}()
		}
	}()
	return f
}

func (f *freshWriter) running() int { return int(f.live.Load()) }

// stop stops issuing writes and waits up to wait for those in flight; it
// returns the writes that ended and how many had not. It may be called again.
func (f *freshWriter) stop(wait time.Duration) ([]op, int) {
	f.once.Do(func() { close(f.stopc) })
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ops), f.running()
}
