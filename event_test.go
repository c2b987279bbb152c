package dbrouter

import (
	"bytes"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/internal/testwait"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A hook runs with no lock held: while it is blocked, probes run, state
// changes and Status answers. Were it called under DB.mu, the probe below
// would block and the test fail at its deadline (not hang: the hook is
// released either way).
func TestEventsAreEmittedWithoutTheLock(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var kinds []EventKind
	pc := newPGCluster(t, 1, WithEventHook(func(e Event) {
		once.Do(func() {
			close(entered)
			<-release
		})
		mu.Lock()
		kinds = append(kinds, e.Kind)
		mu.Unlock()
	}))
	pc.pg[1].fail.Store(true)
	first := make(chan struct{})
	go func() { // probes off the test's goroutine: a hook run inside them must not stall the test
		pc.probe()
		pc.probe() // replica1 down: an event, whose hook now blocks
		close(first)
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("no event reached the hook")
	}
	done := make(chan Status, 1)
	go func() {
		<-first
		pc.pg[1].fail.Store(false)
		pc.probe() // replica1 up again: takes DB.mu, queues an event
		done <- pc.db.Status()
	}()
	select {
	case s := <-done:
		assert.Equal(t, StateUp, s.Nodes[1].State)
	case <-time.After(10 * time.Second):
		t.Error("a probe and Status blocked while a hook ran: the hook holds a lock")
	}
	close(release)
	pc.db.events.flush()
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []EventKind{EventNodeDown, EventNodeUp}, kinds)
}

// Events reach the hook in the order they were queued, however many
// goroutines queue them (as the probes of several nodes do, under DB.mu)
// and however slow the hook.
func TestEventsAreDeliveredInOrder(t *testing.T) {
	var got []int
	var em emitter
	queued := make(chan struct{})
	em.start(func(e Event) {
		n, _ := strconv.Atoi(e.Detail)
		if n == 0 {
			<-queued // a slow hook: every later event queues up behind it
		}
		got = append(got, n)
	})
	defer em.stop()
	var mu sync.Mutex // stands for DB.mu
	next := 0
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				mu.Lock()
				em.push(Event{Detail: strconv.Itoa(next)})
				next++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(queued)
	em.flush()
	require.Len(t, got, 800)
	for i, n := range got {
		if n != i {
			t.Fatalf("event %d delivered in place %d", n, i)
		}
	}
}

func TestEventsAreLogged(t *testing.T) {
	var buf safeBuffer
	pc := newPGCluster(t, 1, WithLogger(slog.New(slog.NewTextHandler(&buf, nil))))
	pc.pg[1].fail.Store(true)
	pc.probe()
	pc.probe()
	pc.db.events.flush()
	assert.Contains(t, buf.String(), `level=WARN msg="dbrouter: node down" event="node down" node=replica1`)
}

// safeBuffer is a bytes.Buffer for concurrent writers.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAHookThatEndsItsGoroutineDoesNotStopEvents(t *testing.T) {
	f := newFakeNodes(t, 2)
	var n atomic.Int32
	db, err := New(f.dbs[0], f.dbs[1:], WithDialect(Generic()), WithProbeInterval(10*time.Millisecond),
		WithFailureThreshold(1), WithEventHook(func(Event) {
			if n.Add(1) == 1 {
				runtime.Goexit() // as t.FailNow or require do inside a hook
			}
		}))
	require.NoError(t, err)
	f.conns[1].SetDown(true)
	testwait.Until(t, 10*time.Second, "the first event", func() bool { return n.Load() >= 1 })
	f.conns[2].SetDown(true)
	testwait.Until(t, 10*time.Second, "a later event", func() bool { return n.Load() >= 2 })
	closed := make(chan struct{})
	go func() { db.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Error("Close hangs")
	}
}

// A probing role that may not see the replicas' WAL receivers is named,
// once, with the grant it needs.
func TestMissingGrantIsNamedOnce(t *testing.T) {
	pc := newPGClusterSetup(t, 2, func(pg []*fakePG) {
		pg[1].hidden.Store(true)
		pg[2].hidden.Store(true)
	})
	pc.probe()
	pc.probe()
	var grants []Event
	pc.db.events.flush()
	pc.mu.Lock()
	for _, e := range pc.events {
		if e.Kind == EventMissingGrant {
			grants = append(grants, e)
		}
	}
	pc.mu.Unlock()
	require.Len(t, grants, 1)
	assert.Contains(t, grants[0].Detail, "GRANT pg_monitor TO ")
	assert.Equal(t, "missing grant", grants[0].Kind.String())
}
