package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dbrouter/dbrouter"
)

// demoTable is where the writers write. Each row says who wrote it (writer,
// seq: unique), when the writer sent it and when the server that took it
// ran it, so that the summary can tell, server-side, what reached which
// node when.
const demoTable = `CREATE TABLE IF NOT EXISTS failover_demo (
	id           bigserial PRIMARY KEY,
	writer       int         NOT NULL,
	seq          bigint      NOT NULL,
	sent_at      timestamptz NOT NULL,
	committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	UNIQUE (writer, seq)
)`

// Load settings: each reader and writer runs one statement every pace, each
// with its own deadline.
const (
	pace        = 10 * time.Millisecond
	callTimeout = 2 * time.Second
)

// load is the readers and writers, and what they saw: per second (taken by
// the live view) and in all.
type load struct {
	began time.Time
	wg    sync.WaitGroup

	second counts // since the last take
	total  counts

	mu      sync.Mutex // protects following fields
	acked   map[key]struct{}
	ackedAt []time.Time // when each acknowledgement came, in order
	lastErr error       // this second's last error
}

// key names a row of demoTable.
type key struct{ writer, seq int64 }

// counts are outcomes of the load's statements.
type counts struct {
	readsOK, readsFailed, writesOK, writesFailed atomic.Int64
}

// tally is a copy of counts.
type tally struct {
	readsOK, readsFailed, writesOK, writesFailed int64
	lastErr                                      error
}

// startLoad starts readers and writers on db until ctx ends; wait waits
// for them.
func startLoad(ctx context.Context, db *dbrouter.DB, readers, writers int) *load {
	l := &load{began: time.Now(), acked: make(map[key]struct{})}
	for r := range readers {
		l.wg.Go(func() { l.read(ctx, db, r) })
	}
	for w := range writers {
		l.wg.Go(func() { l.write(ctx, db, int64(w)) })
	}
	return l
}

func (l *load) wait() { l.wg.Wait() }

// read reads, one query every pace.
func (l *load) read(ctx context.Context, db *dbrouter.DB, r int) {
	rng := rand.New(rand.NewPCG(uint64(r), 1))
	tick := time.NewTicker(pace)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		var n int64
		err := db.QueryRowContext(cctx, "SELECT count(*) FROM failover_demo WHERE id > $1", rng.Int64N(1000)).Scan(&n)
		cancel()
		if ctx.Err() != nil {
			return // stopped mid-call: not a result
		}
		if err != nil {
			l.second.readsFailed.Add(1)
			l.total.readsFailed.Add(1)
			l.failed(err)
			continue
		}
		l.second.readsOK.Add(1)
		l.total.readsOK.Add(1)
	}
}

// write inserts rows (writer, 1), (writer, 2), …, one every pace, and
// remembers those acknowledged.
func (l *load) write(ctx context.Context, db *dbrouter.DB, writer int64) {
	tick := time.NewTicker(pace)
	defer tick.Stop()
	for seq := int64(1); ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := db.ExecContext(cctx, "INSERT INTO failover_demo (writer, seq, sent_at) VALUES ($1, $2, $3)", writer, seq, time.Now())
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			l.second.writesFailed.Add(1)
			l.total.writesFailed.Add(1)
			l.failed(err)
			continue
		}
		l.second.writesOK.Add(1)
		l.total.writesOK.Add(1)
		l.mu.Lock()
		l.acked[key{writer, seq}] = struct{}{}
		l.ackedAt = append(l.ackedAt, time.Now())
		l.mu.Unlock()
	}
}

func (l *load) failed(err error) {
	l.mu.Lock()
	l.lastErr = err
	l.mu.Unlock()
}

// take returns the counts since the last take, and this second's last
// error, and starts counting again.
func (l *load) take() tally {
	l.mu.Lock()
	err := l.lastErr
	l.lastErr = nil
	l.mu.Unlock()
	return tally{
		readsOK: l.second.readsOK.Swap(0), readsFailed: l.second.readsFailed.Swap(0),
		writesOK: l.second.writesOK.Swap(0), writesFailed: l.second.writesFailed.Swap(0),
		lastErr: err,
	}
}

// totals returns the counts since the start.
func (l *load) totals() tally {
	return tally{
		readsOK: l.total.readsOK.Load(), readsFailed: l.total.readsFailed.Load(),
		writesOK: l.total.writesOK.Load(), writesFailed: l.total.writesFailed.Load(),
	}
}

// ackedKeys returns a copy of the acknowledged writes.
func (l *load) ackedKeys() map[key]struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[key]struct{}, len(l.acked))
	for k := range l.acked {
		m[k] = struct{}{}
	}
	return m
}

// firstAckAfter returns when the first write acknowledged after t came
// back, if one did.
func (l *load) firstAckAfter(t time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, at := range l.ackedAt {
		if at.After(t) {
			return at, true
		}
	}
	return time.Time{}, false
}

// meter is the statement and event hooks: what the router sent to each
// node, per second for the live view, and what it sent to a fenced node
// once fenced, and when each node took its first write.
type meter struct {
	mu         sync.Mutex // protects following fields
	second     map[string]*nodeTraffic
	firstWrite map[string]time.Time // end of the first successful write on each node
	fencedAt   map[string]time.Time // when the router fenced each node (the last time)
	onFenced   map[string]*nodeTraffic
}

// nodeTraffic counts statements routed to one node.
type nodeTraffic struct{ reads, writes int64 }

func newMeter(names []string) *meter {
	m := &meter{second: map[string]*nodeTraffic{}, firstWrite: map[string]time.Time{},
		fencedAt: map[string]time.Time{}, onFenced: map[string]*nodeTraffic{}}
	for _, n := range names {
		m.second[n] = &nodeTraffic{}
		m.onFenced[n] = &nodeTraffic{}
	}
	return m
}

// observe is the statement hook. It is quick: a map lookup under a lock.
func (m *meter) observe(s dbrouter.Statement) {
	if s.Node == "" {
		return // no node could run it
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.second[s.Node]
	if !ok {
		return
	}
	count(t, s.Write)
	if at, fenced := m.fencedAt[s.Node]; fenced && !s.Start.Before(at) {
		count(m.onFenced[s.Node], s.Write)
	}
	if s.Write && s.Err == nil {
		if _, seen := m.firstWrite[s.Node]; !seen {
			m.firstWrite[s.Node] = s.Start.Add(s.Duration)
		}
	}
}

func count(t *nodeTraffic, write bool) {
	if write {
		t.writes++
	} else {
		t.reads++
	}
}

// event is the meter's part of the event hook: it notes fences.
func (m *meter) event(e dbrouter.Event) {
	if e.Kind != dbrouter.EventFenced {
		return
	}
	m.mu.Lock()
	m.fencedAt[e.Node] = e.Time
	m.mu.Unlock()
}

// take returns each node's traffic since the last take and starts again.
func (m *meter) take() map[string]nodeTraffic {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]nodeTraffic, len(m.second))
	for n, t := range m.second {
		out[n] = *t
		*t = nodeTraffic{}
	}
	return out
}

// fenced returns when node was fenced, if it was, and the traffic the
// router sent it since.
func (m *meter) fenced(node string) (time.Time, nodeTraffic, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.fencedAt[node]
	var t nodeTraffic
	if p := m.onFenced[node]; p != nil {
		t = *p
	}
	return at, t, ok
}

// firstWriteOn returns when the first write on node ended, if one did.
func (m *meter) firstWriteOn(node string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.firstWrite[node]
	return at, ok
}

// reason says in a few words why a statement failed, for the live view.
func reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, dbrouter.ErrNoPrimary):
		return "no primary"
	case errors.Is(err, dbrouter.ErrPrimaryLost):
		return "primary lost"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	}
	var ne *dbrouter.NodeError
	if errors.As(err, &ne) {
		return ne.Op + " on " + ne.Node + " failed"
	}
	return "failed"
}
