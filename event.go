package dbrouter

import (
	"context"
	"log/slog"
	"time"
)

// EventKind says what changed.
type EventKind uint8

const (
	EventNodeDown        EventKind = iota + 1 // a node failed WithFailureThreshold probes in a row
	EventNodeUp                               // a down node answered a probe again
	EventRoleChanged                          // a node's probes report another role (Detail: "replica -> primary")
	EventPrimaryChanged                       // writes now go to Node (Detail: the previous primary, or "")
	EventNoPrimary                            // no node is known to be primary; writes wait (Node: the last primary)
	EventFenced                               // Node reports being a primary but lost to a higher timeline
	EventUnfenced                             // a fenced node reports being in recovery again
	EventReplicaExcluded                      // a replica stopped serving reads (Detail: why: "lag", "timeline")
	EventReplicaIncluded                      // a replica serves reads again
	EventPromoted                             // the router promoted Node (WithAutoPromote)
	EventPromoteFailed                        // the router's promotion of Node failed (Err)
)

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

// ticketLocked numbers a batch of events in the order the state changed
// (DB.mu held), so emitInOrder delivers batches in that order; 0 for none.
func (db *DB) ticketLocked(events []Event) uint64 {
	if len(events) == 0 {
		return 0
	}
	db.evIssued++
	return db.evIssued
}

// emitInOrder emits the batch numbered ticket once every earlier batch was
// emitted: the probes of several nodes make changes concurrently, and a hook
// that tracks the primary must not see "primary changed" before the "no
// primary" that came first. No lock is held while the hook runs.
func (db *DB) emitInOrder(ticket uint64, events []Event) {
	if ticket == 0 {
		return
	}
	db.evMu.Lock()
	for db.evDelivered != ticket-1 {
		db.evCond.Wait()
	}
	db.evMu.Unlock()
	defer func() { // also when the hook ends its goroutine (runtime.Goexit)
		db.evMu.Lock()
		db.evDelivered = ticket
		db.evCond.Broadcast()
		db.evMu.Unlock()
	}()
	db.emit(events)
}

// emit logs events and passes them to the hook. It is called with no lock
// held.
func (db *DB) emit(events []Event) {
	for _, e := range events {
		level := slog.LevelInfo
		switch e.Kind {
		case EventNodeDown, EventNoPrimary, EventFenced, EventPromoteFailed:
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
}
