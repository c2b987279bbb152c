package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dbrouter/dbrouter/internal/noopdriver"
	"github.com/dbrouter/dbrouter/internal/paired"
)

// overheadQuery is a 300-byte read: a join, a subquery and a comment (the
// one the library's own overhead report uses).
const overheadQuery = `/* accounts page */ SELECT a.id, a.owner, a.balance, c.name AS currency, (SELECT count(*) FROM transfers t
WHERE t.from_id = a.id AND t.created_at > now() - interval '30 days') AS recent FROM accounts a JOIN currencies c
ON c.id = a.currency_id WHERE a.owner = $1 AND a.closed_at IS NULL ORDER BY a.id LIMIT 50`

const overheadUpdate = "UPDATE accounts SET balance = balance + $1 WHERE id = $2"

// The calls of scenario 1.
const (
	callQueryRow = iota
	callQuery
	callExec
	nCalls
)

var callNames = [nCalls]string{
	"`QueryRow(\"SELECT 1\")` + `Scan`",
	"300-byte `Query` + `Close`",
	"`Exec` of an UPDATE",
}

// caller makes one call of scenario 1.
type caller func(ctx context.Context, call int) error

func sqlCaller(q querier) caller {
	return func(ctx context.Context, call int) error {
		switch call {
		case callQueryRow:
			var v int
			return q.QueryRowContext(ctx, "SELECT 1").Scan(&v)
		case callQuery:
			rows, err := q.QueryContext(ctx, overheadQuery, "ann")
			if err != nil {
				return err
			}
			return rows.Close()
		default:
			_, err := q.ExecContext(ctx, overheadUpdate, 10, 1)
			return err
		}
	}
}

// gormCaller makes the same calls the way GORM's documentation writes them.
func gormCaller(g *gorm.DB) caller {
	query, update := gormSQL(overheadQuery), gormSQL(overheadUpdate)
	return func(ctx context.Context, call int) error {
		switch call {
		case callQueryRow:
			var v int
			return g.WithContext(ctx).Raw("SELECT 1").Scan(&v).Error
		case callQuery:
			rows, err := g.WithContext(ctx).Raw(query, "ann").Rows()
			if err != nil {
				return err
			}
			return rows.Close()
		default:
			return g.WithContext(ctx).Exec(update, 10, 1).Error
		}
	}
}

// modes of scenario 1: one caller, or 2×GOMAXPROCS of them.
var overheadModes = []struct {
	name       string
	goroutines func() int
}{
	{"serial", func() int { return 1 }},
	{"parallel", func() int { return 2 * runtime.GOMAXPROCS(0) }},
}

// overhead runs scenario 1 for one contender: the contender over a primary
// and two replicas, each its own *sql.DB on the no-op driver keeping 64 idle
// connections, beside one raw *sql.DB doing the same calls, in paired
// interleaved rounds (internal/paired); the figure is the median ratio.
// GORM is measured twice: against the raw *sql.DB (what a user pays for
// GORM + the plugin) and against GORM on one *sql.DB (the plugin's share).
func (b *bench) overhead(k *contender) error {
	r := b.res
	if k.wrap == nil {
		r.note(scOverhead, k.key, k.wrapNote)
		return nil
	}
	ctx := context.Background()
	var handles []*sql.DB
	open := func() *sql.DB {
		h := sql.OpenDB(noopdriver.Connector{})
		h.SetMaxIdleConns(64)
		handles = append(handles, h)
		return h
	}
	defer func() {
		for _, h := range handles {
			h.Close()
		}
	}()
	raw := sqlCaller(open())
	subject, closeSubject, err := k.wrap(open(), []*sql.DB{open(), open()})
	if err != nil {
		return err
	}
	defer closeSubject()
	var twin caller // plain GORM on one handle
	if k.key == "gorm" {
		g, err := gorm.Open(postgres.New(postgres.Config{Conn: open()}), &gorm.Config{Logger: logger.Discard})
		if err != nil {
			return err
		}
		twin = gormCaller(g)
	}
	if err := b.routes(k); err != nil {
		return err
	}
	o := paired.Options{Rounds: b.p.overheadRounds, Round: b.p.overheadRound}
	for call := range nCalls {
		for _, m := range overheadModes {
			o.Goroutines = m.goroutines()
			res, err := paired.Measure(o, func() error { return raw(ctx, call) }, func() error { return subject(ctx, call) })
			if err != nil {
				return fmt.Errorf("%s, %s: %w", callNames[call], m.name, err)
			}
			rawNs, subjNs, ratio := res.Median()
			name := fmt.Sprintf("%d.%s", call, m.name)
			r.put(scOverhead, k.key, "ratio."+name, ratio)
			r.put(scOverhead, k.key, "rawNs."+name, rawNs)
			r.put(scOverhead, k.key, "ns."+name, subjNs)
			if twin != nil {
				res, err := paired.Measure(o, func() error { return twin(ctx, call) }, func() error { return subject(ctx, call) })
				if err != nil {
					return err
				}
				twinNs, _, ratio := res.Median()
				r.put(scOverhead, k.key, "twinRatio."+name, ratio)
				r.put(scOverhead, k.key, "twinNs."+name, twinNs)
			}
		}
		var callErr error
		allocs := func(c caller) float64 {
			return testing.AllocsPerRun(b.p.allocRuns, func() {
				if err := c(ctx, call); err != nil {
					callErr = err
				}
			})
		}
		r.put(scOverhead, k.key, fmt.Sprintf("rawAllocs.%d", call), allocs(raw))
		r.put(scOverhead, k.key, fmt.Sprintf("allocs.%d", call), allocs(subject))
		if twin != nil {
			r.put(scOverhead, k.key, fmt.Sprintf("twinAllocs.%d", call), allocs(twin))
		}
		if callErr != nil {
			return callErr
		}
	}
	b.log.printf("  %s: QueryRow serial %.3f, parallel %.3f; Query serial %.3f; Exec serial %.3f (ratios to a raw *sql.DB)", k.key,
		r.last(scOverhead, k.key, "ratio.0.serial"), r.last(scOverhead, k.key, "ratio.0.parallel"),
		r.last(scOverhead, k.key, "ratio.1.serial"), r.last(scOverhead, k.key, "ratio.2.serial"))
	return nil
}

// routes records where the contender sends each call of scenario 1: it runs
// each once over handles that count the statements they receive.
func (b *bench) routes(k *contender) error {
	counters := make([]*countingConnector, 3)
	handles := make([]*sql.DB, 3)
	for i := range counters {
		counters[i] = &countingConnector{}
		handles[i] = sql.OpenDB(counters[i])
		defer handles[i].Close()
	}
	subject, closeSubject, err := k.wrap(handles[0], handles[1:])
	if err != nil {
		return err
	}
	defer closeSubject()
	for call := range nCalls {
		before := make([]int64, 3)
		for i, c := range counters {
			before[i] = c.n.Load()
		}
		if err := subject(context.Background(), call); err != nil {
			return err
		}
		var to []string
		for i, c := range counters {
			if c.n.Load() > before[i] {
				to = append(to, map[bool]string{true: "primary", false: "replica"}[i == 0])
			}
		}
		if len(to) == 0 {
			to = []string{"?"}
		}
		b.res.str(scOverhead, k.key, fmt.Sprintf("route.%d", call), strings.Join(to, "+"))
	}
	return nil
}

// countingConnector opens no-op connections that count the statements they run.
type countingConnector struct{ n atomic.Int64 }

func (c *countingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	inner, err := noopdriver.Connector{}.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: inner, n: &c.n}, nil
}

func (c *countingConnector) Driver() driver.Driver { return noopdriver.Driver{} }

type countingConn struct {
	driver.Conn
	n *atomic.Int64
}

var errNotSupported = errors.New("not supported by the no-op driver")

func (c *countingConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	c.n.Add(1)
	if qc, ok := c.Conn.(driver.QueryerContext); ok {
		return qc.QueryContext(ctx, q, args)
	}
	return nil, errNotSupported
}

func (c *countingConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	c.n.Add(1)
	if ec, ok := c.Conn.(driver.ExecerContext); ok {
		return ec.ExecContext(ctx, q, args)
	}
	return nil, errNotSupported
}

func (c *countingConn) BeginTx(ctx context.Context, o driver.TxOptions) (driver.Tx, error) {
	if bc, ok := c.Conn.(driver.ConnBeginTx); ok {
		return bc.BeginTx(ctx, o)
	}
	return nil, errNotSupported
}
