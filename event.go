package dbrouter

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// EventKind says what changed.
type EventKind uint8

const (
	EventNodeDown          EventKind = iota + 1 // a node failed WithFailureThreshold probes in a row
	EventNodeUp                                 // a down node answered a probe again
	EventRoleChanged                            // a node's probes report another role (Detail: "replica -> primary")
	EventPrimaryChanged                         // writes now go to Node (Detail: the previous primary, or "")
	EventNoPrimary                              // no node is known to be primary; writes wait (Node: the last primary)
	EventFenced                                 // Node reports being a primary but lost to a higher timeline, or is of another cluster (Detail says)
	EventUnfenced                               // a fenced node reports being in recovery again
	EventReplicaExcluded                        // a replica stopped serving reads (Detail: why: "lag", "timeline", "another cluster: …")
	EventReplicaIncluded                        // a replica serves reads again
	EventPromoted                               // the router promoted Node (WithAutoPromote)
	EventPromoteFailed                          // the router's promotion of Node failed, or was called off (Err); told once while the same reason lasts
	EventMissingGrant                           // the probing role cannot see replicas' WAL receivers (Detail: the GRANT to run)
	EventMemberJoined                           // OpenDiscovered's source reports a new member, Node
	EventMemberLeft                             // the source no longer reports Node: it drains, then closes
	EventSourceUnreachable                      // the source did not answer (Err): the last members and the router's own rules stand
	EventSourceReachable                        // the source answers again
	EventStatementClash                         // prepared statements collide behind a transaction pooler (Detail: the DSN setting that fixes it)

	eventKinds // how many kinds there are, plus one
)

// Code returns the kind in snake case, as the status page's JSON and metric
// labels spell it: "node_down", "primary_changed", "missing_grant", ….
func (k EventKind) Code() string { return strings.ReplaceAll(k.String(), " ", "_") }

// String returns the kind in words: "node down", "primary changed", ….
func (k EventKind) String() string {
	switch k {
	case EventNodeDown:
		return "node down"
	case EventNodeUp:
		return "node up"
	case EventRoleChanged:
		return "role changed"
	case EventPrimaryChanged:
		return "primary changed"
	case EventNoPrimary:
		return "no primary"
	case EventFenced:
		return "fenced"
	case EventUnfenced:
		return "unfenced"
	case EventReplicaExcluded:
		return "replica excluded"
	case EventReplicaIncluded:
		return "replica included"
	case EventPromoted:
		return "promoted"
	case EventPromoteFailed:
		return "promote failed"
	case EventMissingGrant:
		return "missing grant"
	case EventMemberJoined:
		return "member joined"
	case EventMemberLeft:
		return "member left"
	case EventSourceUnreachable:
		return "source unreachable"
	case EventSourceReachable:
		return "source reachable"
	case EventStatementClash:
		return "statement clash"
	}
	return "unknown"
}

// An Event is one state change of the router, passed to the hook given with
// WithEventHook and logged through the logger given with WithLogger.
type Event struct {
	Time   time.Time
	Kind   EventKind
	Node   string // the node it is about
	Detail string // see the EventKind constants
	Err    error  // the error that caused it, if any
}

func (db *DB) event(kind EventKind, n *node, now time.Time, detail string, err error) Event {
	e := Event{Time: now, Kind: kind, Detail: detail, Err: err}
	if n != nil {
		e.Node = n.name
	}
	return e
}

// recentEvents is how many events Status keeps.
const recentEvents = 100

// queueLocked queues events for delivery, in the order the state changed,
// and keeps them among the recent ones Status shows. DB.mu is held.
func (db *DB) queueLocked(events ...Event) {
	for _, e := range events {
		db.hs.recent[db.hs.recentN%recentEvents] = e
		db.hs.recentN++
		if int(e.Kind) < len(db.hs.eventCounts) {
			db.hs.eventCounts[e.Kind]++
		}
	}
	db.events.push(events...)
}

// recentLocked returns a copy of the recent events, oldest first. DB.mu is
// held.
func (db *DB) recentLocked() []Event {
	n := min(db.hs.recentN, recentEvents)
	out := make([]Event, 0, n)
	for i := db.hs.recentN - n; i < db.hs.recentN; i++ {
		out = append(out, db.hs.recent[i%recentEvents])
	}
	return out
}

// emitter delivers events from one goroutine of its own, in the order they
// were queued, with no lock held (as grpc-go's callback serializer does):
// the probes of several nodes change state concurrently, and a hook that
// tracks the primary must not see "primary changed" before the "no primary"
// that came first. Events are queued under DB.mu, in the order of the state
// changes; emitter.mu is a leaf lock.
type emitter struct {
	deliver func(Event)
	wake    chan struct{} // size 1: the queue is not empty
	quit    chan struct{} // closed by stop
	done    chan struct{} // closed when the goroutine has ended

	mu    sync.Mutex // protects queue
	queue []queued
}

// queued is an event, or (with flushed set) a marker that is closed once
// every event queued before it was delivered.
type queued struct {
	e       Event
	flushed chan struct{}
}

// start starts the delivering goroutine.
func (em *emitter) start(deliver func(Event)) {
	em.deliver = deliver
	em.wake = make(chan struct{}, 1)
	em.quit = make(chan struct{})
	em.done = make(chan struct{})
	go em.loop()
}

// push queues events. It never blocks on their delivery.
func (em *emitter) push(events ...Event) {
	if len(events) == 0 {
		return
	}
	em.mu.Lock()
	for _, e := range events {
		em.queue = append(em.queue, queued{e: e})
	}
	em.mu.Unlock()
	em.signal()
}

// flush returns once every event queued before it was delivered.
func (em *emitter) flush() {
	done := make(chan struct{})
	em.mu.Lock()
	em.queue = append(em.queue, queued{flushed: done})
	em.mu.Unlock()
	em.signal()
	select {
	case <-done:
	case <-em.done:
	}
}

func (em *emitter) signal() {
	select {
	case em.wake <- struct{}{}:
	default:
	}
}

// stop delivers what is queued, then ends the goroutine and waits for it.
func (em *emitter) stop() {
	close(em.quit)
	<-em.done
}

func (em *emitter) loop() {
	ended := false
	defer func() {
		if !ended {
			// The hook ended this goroutine (runtime.Goexit, e.g. t.FailNow
			// in a test's hook): carry on in a new one.
			go em.loop()
			return
		}
		close(em.done)
	}()
	for {
		select {
		case <-em.wake:
			em.drain()
		case <-em.quit:
			em.drain()
			ended = true
			return
		}
	}
}

// drain delivers the queue, one event at a time, until it is empty.
func (em *emitter) drain() {
	for {
		em.mu.Lock()
		if len(em.queue) == 0 {
			em.mu.Unlock()
			return
		}
		q := em.queue[0]
		em.queue[0] = queued{}
		em.queue = em.queue[1:]
		em.mu.Unlock()
		if q.flushed != nil {
			close(q.flushed)
			continue
		}
		em.deliver(q.e)
	}
}

// emit logs e and passes it to the hook. The emitter calls it, with no
// lock held.
func (db *DB) emit(e Event) {
	level := slog.LevelInfo
	switch e.Kind {
	case EventNodeDown, EventNoPrimary, EventFenced, EventPromoteFailed, EventMissingGrant, EventSourceUnreachable, EventStatementClash:
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{slog.String("event", e.Kind.String()), slog.String("node", e.Node)}
	if e.Detail != "" {
		attrs = append(attrs, slog.String("detail", e.Detail))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	db.cfg.logger.LogAttrs(context.Background(), level, "dbrouter: "+e.Kind.String(), attrs...)
	if db.cfg.hook != nil {
		db.cfg.hook(e)
	}
}
