package main

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// op is one call of the load.
type op struct {
	write      bool
	start, end time.Time
	node       string // the node that ran it, by its own account
	err        error
}

func (o op) ok() bool { return o.err == nil }

// load runs readers and writers through a client until stopped: each
// goroutine calls at most once per pace, every call with its own deadline.
type load struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{} // closed when every goroutine returned
	hold    atomic.Bool   // writers skip their turns while set
	writing atomic.Int64  // writes in flight

	mu       sync.Mutex // protects following fields
	ops      []op
	inflight map[int64]time.Time // call id -> start
	nextID   int64
	okWrites map[string]int       // successful writes per node
	okReads  int                  // successful reads
	firstW   map[string]time.Time // per node, when its first successful write ended
}

func startLoad(c client, p params) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, done: make(chan struct{}), inflight: map[int64]time.Time{},
		okWrites: map[string]int{}, firstW: map[string]time.Time{}}
	run := func(write bool, seed int64) {
		defer l.wg.Done()
		tick := time.NewTicker(p.pace)
		defer tick.Stop()
		for i := seed; ; i += 1000 {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if write && l.hold.Load() {
				continue
			}
			if write {
				l.writing.Add(1)
			}
			cctx, ccancel := context.WithTimeout(ctx, p.callTimeout)
			o := op{write: write, start: time.Now()}
			id := l.begin(o.start)
			if write {
				o.node, o.err = c.write(cctx, i)
			} else {
				o.node, o.err = c.read(cctx)
			}
			o.end = time.Now()
			ccancel()
			if write {
				l.writing.Add(-1)
			}
			l.finish(id, o, ctx.Err() == nil) // stopped mid-call: not a result
			if ctx.Err() != nil {
				return
			}
		}
	}
	for i := range p.readers {
		l.wg.Add(1)
		go run(false, int64(i))
	}
	for i := range p.writers {
		l.wg.Add(1)
		go run(true, int64(p.readers+i))
	}
	go func() { l.wg.Wait(); close(l.done) }()
	return l
}

func (l *load) begin(at time.Time) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextID++
	l.inflight[l.nextID] = at
	return l.nextID
}

func (l *load) finish(id int64, o op, keep bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.inflight, id)
	if !keep {
		return
	}
	l.ops = append(l.ops, o)
	switch {
	case o.err != nil:
	case o.write:
		l.okWrites[o.node]++
		if f, ok := l.firstW[o.node]; !ok || o.end.Before(f) {
			l.firstW[o.node] = o.end
		}
	default:
		l.okReads++
	}
}

// counts returns the successful writes on node and the successful reads so far.
func (l *load) counts(node string) (writes, reads int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.okWrites[node], l.okReads
}

// firstWrite returns when the first successful write on node ended.
func (l *load) firstWrite(node string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.firstW[node]
	return t, ok
}

// stuck counts the calls in flight for longer than d.
func (l *load) stuck(d time.Duration) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, at := range l.inflight {
		if time.Since(at) > d {
			n++
		}
	}
	return n
}

// stop cancels the load and waits up to wait for its goroutines; it returns
// how many calls were still in flight then (calls that ignore their context).
func (l *load) stop(wait time.Duration) int {
	l.cancel()
	select {
	case <-l.done:
		return 0
	case <-time.After(wait):
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.inflight)
	}
}

func (l *load) snapshot() []op {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ops)
}

// waitHeld waits until no write is in flight (the writers hold) or timeout.
func (l *load) waitHeld(ctx context.Context, timeout time.Duration) error {
	return waitFor(ctx, timeout, "writes in flight to end", func() bool { return l.writing.Load() == 0 })
}

// countOK counts the successful ops of a kind on node ("" any node) that started at or after from.
func countOK(ops []op, write bool, node string, from time.Time) int {
	n := 0
	for _, o := range ops {
		if o.write == write && o.ok() && (node == "" || o.node == node) && !o.start.Before(from) {
			n++
		}
	}
	return n
}

// window selects ops of a kind that started in [from, to).
func window(ops []op, write bool, from, to time.Time) []op {
	var w []op
	for _, o := range ops {
		if o.write == write && !o.start.Before(from) && o.start.Before(to) {
			w = append(w, o)
		}
	}
	return w
}

// tally counts ops: all, failed, and successful per node.
type tally struct {
	total, failed int
	byNode        map[string]int
	errs          errKinds
}

func count(ops []op) tally {
	t := tally{byNode: map[string]int{}, errs: errKinds{}}
	for _, o := range ops {
		t.total++
		if o.err != nil {
			t.failed++
			t.errs.add(o.err)
		} else {
			t.byNode[o.node]++
		}
	}
	return t
}

// firstOK returns when the first successful op of a kind on node that started
// at or after from ended.
func firstOK(ops []op, write bool, node string, from time.Time) (time.Time, bool) {
	var first time.Time
	for _, o := range ops {
		if o.write == write && o.ok() && o.node == node && !o.start.Before(from) && (first.IsZero() || o.end.Before(first)) {
			first = o.end
		}
	}
	return first, !first.IsZero()
}

// slowest returns the longest call that ended.
func slowest(ops []op) time.Duration {
	var d time.Duration
	for _, o := range ops {
		d = max(d, o.end.Sub(o.start))
	}
	return d
}

// waitFor polls cond every 10 ms until it holds, timeout passes or ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return &timeoutError{what: what, after: timeout}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

type timeoutError struct {
	what  string
	after time.Duration
}

func (e *timeoutError) Error() string {
	return "timed out after " + e.after.String() + " waiting for " + e.what
}

// sleepCtx waits d, the length of a measuring window, or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
