// Peers measures dbrouter beside its Go peers on the same machine, the same
// real PostgreSQL primary + 2 streaming replicas and the same load (GitHub
// issue 13). Each contender is used the way its README recommends, with its
// defaults:
//
//   - dbrouter: dbrouter.Open("pgx", primary, replicas), default options;
//   - bxcodec: github.com/bxcodec/dbresolver/v2, round-robin over the replicas;
//   - gorm: gorm.io/gorm with gorm.io/plugin/dbresolver (Sources/Replicas);
//   - pgx-multihost: pgx's multi-host DSN through database/sql, one pool with
//     target_session_attrs=read-write for writes and one with prefer-standby
//     for reads;
//   - plain: one *sql.DB on the primary (no router: the baseline).
//
// Scenarios (the same for every contender):
//
//  1. per-call overhead against a raw *sql.DB on a no-op driver;
//  2. the primary crashes, a replica is promoted, the other is re-pointed;
//  3. the old primary returns on its old timeline (split brain);
//  4. the other replica is left on the old timeline after the failover;
//  5. the primary hangs (SIGSTOP) and a replica is promoted;
//  6. one replica applies WAL 2 s late: stale reads right after a write,
//     with and without the contender's read-your-writes feature.
//
// It starts its own clusters (internal/pgcluster, local server binaries),
// prints progress on stderr and the Markdown report on stdout, and removes
// every cluster when it ends, on Ctrl-C or SIGTERM too. From the repository
// root:
//
//	go run ./bench/peers                          # everything, once (< 10 min on 2 cores)
//	go run ./bench/peers -quick                   # a short subset for CI
//	go run ./bench/peers -runs 3 -out peers.md    # medians and ranges over 3 runs
//	go run ./bench/peers -scenarios 2,5 -peers dbrouter,pgx-multihost
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The first Ctrl-C or SIGTERM cancels the run, which unwinds and removes
	// its clusters. A program stuck past its context must not leave them
	// behind either: a second signal, or 30 s without an end, removes every
	// cluster at once and exits.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "peers: %v: stopping and removing the clusters\n", s)
		cancel()
		select {
		case <-sigs:
		case <-time.After(30 * time.Second):
		}
		fmt.Fprintln(os.Stderr, "peers: removing the clusters now and exiting")
		clusters.closeAll()
		os.Exit(130)
	}()
	err = run(ctx, cfg, os.Stdout, os.Stderr)
	clusters.closeAll()
	if err != nil {
		if ctx.Err() != nil {
			first, _, _ := strings.Cut(err.Error(), "\n")
			fmt.Fprintln(os.Stderr, "peers: interrupted; every cluster was removed:", first)
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

// Scenario numbers.
const (
	scOverhead   = 1
	scCrash      = 2
	scSplitBrain = 3
	scStale      = 4
	scHang       = 5
	scLag        = 6
)

// scenarioNames are accepted by -scenarios beside the numbers.
var scenarioNames = map[string]int{
	"overhead": scOverhead, "crash": scCrash, "splitbrain": scSplitBrain,
	"stale": scStale, "hang": scHang, "lag": scLag,
}

// config is what the flags say.
type config struct {
	scenarios []int    // sorted, unique
	peers     []string // contender keys, in the order of contenders
	runs      int
	quick     bool
	out       string
}

func (c config) has(sc int) bool { return slices.Contains(c.scenarios, sc) }

// parseFlags parses the command line. Help goes to w.
func parseFlags(args []string, w io.Writer) (config, error) {
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.SetOutput(w)
	var keys []string
	for _, c := range contenders {
		keys = append(keys, c.key)
	}
	scen := fs.String("scenarios", "", "comma list of scenarios, by number (1-6) or name (overhead, crash, splitbrain, stale, hang, lag); default: all")
	peers := fs.String("peers", "", "comma list of contenders ("+strings.Join(keys, ", ")+"); default: all")
	runs := fs.Int("runs", 1, "runs of every scenario; figures are the median and range over them")
	quick := fs.Bool("quick", false, "a short subset for CI: shorter windows and rounds, fewer trials")
	out := fs.String("out", "", "also write the Markdown report to this file")
	fs.Usage = func() {
		fmt.Fprintf(w, "usage: go run ./bench/peers [flags]\n\nMeasures dbrouter beside its peers on real PostgreSQL clusters it starts itself.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	cfg := config{runs: *runs, quick: *quick, out: *out}
	if cfg.runs < 1 {
		return config{}, fmt.Errorf("-runs %d: want at least 1", cfg.runs)
	}
	if *scen == "" {
		cfg.scenarios = []int{1, 2, 3, 4, 5, 6}
	} else {
		for _, s := range strings.Split(*scen, ",") {
			s = strings.ToLower(strings.TrimSpace(s))
			n, err := strconv.Atoi(s)
			if err != nil {
				var ok bool
				if n, ok = scenarioNames[s]; !ok {
					return config{}, fmt.Errorf("-scenarios: unknown scenario %q", s)
				}
			}
			if n < 1 || n > 6 {
				return config{}, fmt.Errorf("-scenarios: no scenario %d (1-6)", n)
			}
			if !slices.Contains(cfg.scenarios, n) {
				cfg.scenarios = append(cfg.scenarios, n)
			}
		}
		slices.Sort(cfg.scenarios)
	}
	if *peers == "" {
		cfg.peers = keys
	} else {
		want := map[string]bool{}
		for _, p := range strings.Split(*peers, ",") {
			p = strings.ToLower(strings.TrimSpace(p))
			if findContender(p) == nil {
				return config{}, fmt.Errorf("-peers: unknown contender %q (want some of %s)", p, strings.Join(keys, ", "))
			}
			want[findContender(p).key] = true
		}
		for _, k := range keys { // canonical order
			if want[k] {
				cfg.peers = append(cfg.peers, k)
			}
		}
	}
	return cfg, nil
}

// params are the sizes of the scenarios: bounds on every loop, in count and time.
type params struct {
	overheadRounds int           // paired rounds per overhead figure
	overheadRound  time.Duration // each side's time per round
	allocRuns      int           // calls averaged for allocations per call

	readers, writers int           // the mixed load
	pace             time.Duration // each load goroutine calls at most once per pace
	callTimeout      time.Duration // every call of the load has this deadline
	stuckMargin      time.Duration // a call longer than callTimeout+stuckMargin is stuck
	warmWrites       int           // writes on the primary before a fault is injected

	recoverCap  time.Duration // how long writes may take to reach a new primary
	staleWindow time.Duration // scenario 4's window after the promotion
	splitWindow time.Duration // scenario 3's window after the old primary returns

	lagDelay  time.Duration // recovery_min_apply_delay of the lagging replica
	lagTrials int           // write-then-read trials per lagging replica and mode

	setupTimeout time.Duration // bound on every wait for the cluster itself
}

func paramsFor(quick bool) params {
	p := params{
		overheadRounds: 15, overheadRound: 30 * time.Millisecond, allocRuns: 2000,
		readers: 4, writers: 2, pace: 5 * time.Millisecond,
		callTimeout: 2 * time.Second, stuckMargin: 500 * time.Millisecond, warmWrites: 20,
		recoverCap: 15 * time.Second, staleWindow: 5 * time.Second, splitWindow: 5 * time.Second,
		lagDelay: 2 * time.Second, lagTrials: 50,
		setupTimeout: 60 * time.Second,
	}
	if quick {
		p.overheadRounds, p.overheadRound, p.allocRuns = 5, 10*time.Millisecond, 200
		p.recoverCap, p.staleWindow, p.splitWindow = 6*time.Second, 2*time.Second, 2*time.Second
		p.lagTrials = 10
	}
	return p
}

// bench is one invocation of the program.
type bench struct {
	cfg     config
	p       params
	log     *progress
	res     *results
	meta    meta
	started time.Time
}

func run(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	b := newBench(cfg, stderr)
	if err := b.runAll(ctx); err != nil {
		return err
	}
	report := b.markdown()
	if _, err := io.WriteString(stdout, report); err != nil {
		return err
	}
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(report), 0o644); err != nil {
			return err
		}
		b.log.printf("report written to %s", cfg.out)
	}
	b.log.printf("done in %v", time.Since(b.started).Round(100*time.Millisecond))
	return nil
}

func newBench(cfg config, stderr io.Writer) *bench {
	return &bench{cfg: cfg, p: paramsFor(cfg.quick), log: newProgress(stderr), res: newResults(), started: time.Now(), meta: collectMeta(cfg)}
}

// runAll runs every run of every selected scenario.
func (b *bench) runAll(ctx context.Context) error {
	cfg := b.cfg
	b.log.printf("scenarios %v, contenders %s, %d run(s)%s", cfg.scenarios, strings.Join(cfg.peers, ", "), cfg.runs, map[bool]string{true: ", quick"}[cfg.quick])
	for r := 1; r <= cfg.runs; r++ {
		if err := b.runOnce(ctx, r); err != nil {
			return err
		}
	}
	b.meta.finish()
	b.meta.elapsed = time.Since(b.started)
	return nil
}

// runOnce runs every selected scenario for every selected contender once.
// A contender's failure in one scenario is recorded in the report and the
// run goes on; only a cancelled context stops it.
func (b *bench) runOnce(ctx context.Context, r int) error {
	tag := fmt.Sprintf("run %d/%d", r, b.cfg.runs)
	if b.cfg.has(scOverhead) {
		for _, key := range b.cfg.peers {
			b.log.printf("%s · 1 overhead · %s", tag, key)
			if err := b.overhead(findContender(key)); err != nil {
				b.res.fail(scOverhead, key, err)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	if b.cfg.has(scCrash) || b.cfg.has(scSplitBrain) || b.cfg.has(scStale) {
		for _, key := range b.cfg.peers {
			b.log.printf("%s · 2-4 crash episode · %s", tag, key)
			if err := b.crashEpisode(ctx, findContender(key)); err != nil {
				if ctx.Err() != nil {
					return err
				}
				for _, sc := range []int{scCrash, scSplitBrain, scStale} {
					if b.cfg.has(sc) {
						b.res.fail(sc, key, err)
					}
				}
				b.log.printf("%s · crash episode · %s failed: %v", tag, key, err)
			}
		}
	}
	if b.cfg.has(scHang) {
		for _, key := range b.cfg.peers {
			b.log.printf("%s · 5 hang · %s", tag, key)
			if err := b.hang(ctx, findContender(key)); err != nil {
				if ctx.Err() != nil {
					return err
				}
				b.res.fail(scHang, key, err)
				b.log.printf("%s · hang · %s failed: %v", tag, key, err)
			}
		}
	}
	if b.cfg.has(scLag) {
		b.log.printf("%s · 6 lag (one cluster for every contender)", tag)
		if err := b.lag(ctx, tag); err != nil {
			if ctx.Err() != nil {
				return err
			}
			for _, key := range b.cfg.peers {
				b.res.fail(scLag, key, err)
			}
			b.log.printf("%s · lag failed: %v", tag, err)
		}
	}
	return ctx.Err()
}

// progress prints timestamped lines on stderr.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func newProgress(w io.Writer) *progress { return &progress{w: w, start: time.Now()} }

func (p *progress) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "peers [%6.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// clusterSet holds every cluster that runs, so that they can all be removed
// when the program is interrupted.
type clusterSet struct {
	mu      sync.Mutex
	live    map[*pgcluster.Cluster]bool
	closing sync.WaitGroup
}

var clusters = &clusterSet{live: map[*pgcluster.Cluster]bool{}}

// start starts a primary + 2 replicas and registers it.
func (s *clusterSet) start(ctx context.Context) (*pgcluster.Cluster, error) {
	c, err := pgcluster.Start(ctx, pgcluster.Options{Replicas: 2, Backend: pgcluster.BackendLocal})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.live[c] = true
	s.mu.Unlock()
	return c, nil
}

// close removes one cluster (once, however often it is called).
func (s *clusterSet) close(c *pgcluster.Cluster) error {
	s.mu.Lock()
	if !s.live[c] {
		s.mu.Unlock()
		return nil
	}
	delete(s.live, c)
	s.closing.Add(1)
	s.mu.Unlock()
	defer s.closing.Done()
	return c.Close()
}

// closeAll removes every cluster still registered and waits for removals
// under way elsewhere.
func (s *clusterSet) closeAll() {
	s.mu.Lock()
	var all []*pgcluster.Cluster
	for c := range s.live {
		all = append(all, c)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range all {
		wg.Go(func() {
			if err := s.close(c); err != nil {
				fmt.Fprintln(os.Stderr, "peers: removing a cluster:", err)
			}
		})
	}
	wg.Wait()
	s.closing.Wait()
}
