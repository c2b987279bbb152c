// Failover shows dbrouter following a failover under load. It starts a
// local PostgreSQL primary and two streaming replicas, runs a mixed read
// and write load through a dbrouter.DB and prints one line a second: reads
// and writes per second, errors, the primary the router sees, and each
// node's traffic and state. Then it fails the primary over, as the
// -scenario flag says:
//
//	crash       the primary is killed (pg_ctl stop -m immediate)
//	hang        the primary is frozen (SIGSTOP on every process): its port
//	            still accepts connections, nothing answers
//	switchover  the primary shuts down cleanly
//
// Once the router reports no primary, the replica that received the most
// WAL is promoted and the other one re-pointed to it, as a failover manager
// would; a few seconds later the old primary comes back (restarted, or
// thawed) as a primary on its old timeline, and the router fences it. It
// ends with a summary, each figure on a line of its own, as
// "SUMMARY key=value":
//
//	scenario                      crash, hang or switchover
//	reads_ok, reads_failed        the load's reads
//	writes_ok, writes_failed      the load's writes (a failed one's outcome is unknown)
//	old_primary, new_primary      node names
//	fault_to_no_primary_ms        from the fault to the router reporting no primary
//	fault_to_promotion_ms         from the fault to calling pg_promote
//	promotion_took_ms             how long pg_promote took
//	promotion_to_first_write_ms   from calling pg_promote to the first write the new primary ran
//	promotion_to_fresh_write_ms   … to a write started after the promotion succeeding
//	promotion_to_load_write_ms    … to the load's first acknowledged write since (its writers
//	                              may first sit out their 2 s deadline on a frozen primary)
//	writes_resumed                the new primary took writes
//	old_primary_fenced            the router fenced the old primary when it came back
//	fenced_reads, fenced_writes   statements the router sent the old primary once fenced
//	fenced_rows_sent_after_fence  rows on the old primary sent after its fence
//	old_primary_late_rows         rows the old primary committed after it was gone: writes in
//	                              flight when it froze, run when it was thawed (never acknowledged)
//	acked_writes                  writes acknowledged to the load
//	acked_writes_lost             of those, the ones the new primary lacks
//
// Run it with:
//
//	go run ./examples/failover
//	go run ./examples/failover -scenario hang
//	go run ./examples/failover -scenario switchover -duration 40s
//
// It needs PostgreSQL server binaries (on PATH or under
// /usr/lib/postgresql/*/bin) or Docker, and always runs a cluster of its
// own (it crashes nodes), removed on exit, Ctrl-C included. Commits wait
// for one replica (synchronous_standby_names = 'ANY 1 (*)'), so that no
// acknowledged write may be lost; -async leaves replication asynchronous,
// to see what a crash can then take with it (acked_writes_lost).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("interrupted: %w", err)
	}
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "failover:", err)
		os.Exit(1)
	}
}

// config is what the flags say.
type config struct {
	scenario string
	duration time.Duration
	async    bool
	readers  int
	writers  int
}

// The scenarios, by the -scenario flag.
var scenarios = map[string]bool{"crash": true, "hang": true, "switchover": true}

func parseFlags(args []string, out io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("failover", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&cfg.scenario, "scenario", "crash", "what happens to the primary: crash, hang or switchover")
	fs.DurationVar(&cfg.duration, "duration", 24*time.Second, "how long the load runs (at least 12s; longer if the failover needs it)")
	fs.BoolVar(&cfg.async, "async", false, "leave replication asynchronous (commits do not wait for a replica)")
	fs.IntVar(&cfg.readers, "readers", 4, "concurrent readers")
	fs.IntVar(&cfg.writers, "writers", 2, "concurrent writers")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	switch {
	case fs.NArg() > 0:
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	case !scenarios[cfg.scenario]:
		return cfg, fmt.Errorf("-scenario %q: want crash, hang or switchover", cfg.scenario)
	case cfg.duration < 12*time.Second:
		return cfg, fmt.Errorf("-duration %v: want at least 12s", cfg.duration)
	case cfg.readers < 1 || cfg.readers > 64 || cfg.writers < 1 || cfg.writers > 64:
		return cfg, errors.New("-readers and -writers: want 1 to 64")
	}
	return cfg, nil
}

// run starts the cluster, the router and the load, runs the scenario and
// prints the live view and the summary to out.
func run(ctx context.Context, args []string, out io.Writer) error {
	cfg, err := parseFlags(args, out)
	if err != nil {
		return err
	}
	p := newPrinter(out)
	p.linef("starting a PostgreSQL primary + 2 streaming replicas…")
	began := time.Now()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Replicas: 2})
	if err != nil {
		return err
	}
	defer func() {
		if err := c.Close(); err != nil {
			p.linef("removing the cluster: %v", err)
		}
	}()
	p.linef("cluster up in %v (%s backend):", time.Since(began).Round(10*time.Millisecond), c.Backend())
	for i, n := range c.Nodes() {
		role := "replica"
		if i == 0 {
			role = "primary"
		}
		p.linef("  %s %s (%s)", n.Name(), n.Addr(), role)
	}
	if !cfg.async {
		// Quorum commit: a commit returns once one replica has it.
		if err := c.Primary().Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (*)'"); err != nil {
			return err
		}
		if err := c.Primary().Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
			return err
		}
	}

	var names []string
	for _, n := range c.Nodes() {
		names = append(names, n.Name())
	}
	m := newMeter(names)
	primary, replicas := c.DSNs()
	db, err := dbrouter.Open("pgx", primary, replicas,
		dbrouter.WithNames(names[0], names[1:]...),
		dbrouter.WithStatementHook(m.observe),
		dbrouter.WithEventHook(func(e dbrouter.Event) { m.event(e); p.event(e) }))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(16)
	if _, err := db.ExecContext(ctx, demoTable); err != nil {
		return err
	}
	if err := waitReplicated(ctx, c); err != nil {
		return err
	}

	mode := "quorum commit (ANY 1)"
	if cfg.async {
		mode = "asynchronous replication"
	}
	p.linef("scenario %s: %d readers, %d writers for %v, %s", cfg.scenario, cfg.readers, cfg.writers, cfg.duration, mode)
	p.header(names)
	lctx, stopLoad := context.WithCancel(ctx)
	l := startLoad(lctx, db, cfg.readers, cfg.writers)
	s := &scenario{kind: cfg.scenario, c: c, db: db, p: p, m: m, loadStart: l.began}
	steps := make(chan error, 1)
	go func() { steps <- s.play(lctx) }()

	// The live view: one line a second until the load has run its
	// duration and the scenario is over.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := l.began.Add(cfg.duration)
	var stepsErr error
	stepsDone := false
	for ctx.Err() == nil && (!stepsDone || time.Now().Before(end)) {
		select {
		case <-ctx.Done():
		case stepsErr = <-steps:
			stepsDone = true
			if stepsErr != nil {
				p.linef("scenario failed: %v", stepsErr)
				end = time.Now() // stop at once
			} else {
				if soon := time.Now().Add(3 * time.Second); soon.After(end) {
					end = soon // a few lines of the outcome
				}
			}
		case now := <-tick.C:
			p.live(now.Sub(l.began), l.take(), m.take(), db.Status())
		}
	}
	stopLoad()
	l.wait()
	if !stepsDone {
		<-steps
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if stepsErr != nil {
		return stepsErr
	}
	sum, err := s.summarize(ctx, l)
	if err != nil {
		return err
	}
	p.summary(sum)
	return nil
}

// waitReplicated waits until both replicas have the demo's table: reads
// on a replica without it would fail.
func waitReplicated(ctx context.Context, c *pgcluster.Cluster) error {
	for _, r := range c.Replicas() {
		ok := waitUntil(ctx, time.Minute, func() bool {
			var there bool
			err := r.QueryRow(ctx, "SELECT to_regclass('failover_demo') IS NOT NULL", &there)
			return err == nil && there
		})
		if !ok {
			return fmt.Errorf("%s: no table failover_demo after a minute", r.Name())
		}
	}
	return ctx.Err()
}
