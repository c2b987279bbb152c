package main

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// md builds the Markdown report.
type md struct{ strings.Builder }

func (m *md) line(format string, args ...any) { fmt.Fprintf(&m.Builder, format+"\n", args...) }

func (m *md) row(cells ...string) {
	for i, c := range cells {
		cells[i] = strings.ReplaceAll(c, "|", "\\|")
	}
	m.line("| %s |", strings.Join(cells, " | "))
}

func (m *md) header(cells ...string) {
	m.row(cells...)
	seps := make([]string, len(cells))
	for i := range seps {
		seps[i] = "---"
	}
	m.line("|%s|", strings.Join(seps, "|"))
}

func (b *bench) contendersSelected() []*contender {
	var ks []*contender
	for _, key := range b.cfg.peers {
		ks = append(ks, findContender(key))
	}
	return ks
}

// title is the contender's name in tables, with "(baseline)" for plain.
func title(k *contender) string {
	if k.baseline {
		return k.title + " (baseline)"
	}
	return k.title
}

func (b *bench) markdown() string {
	var m md
	mt, p := b.meta, b.p
	args := strings.Join(mt.args, " ")
	if args != "" {
		args = " " + args
	}
	m.line("## dbrouter and its peers, side by side")
	m.line("")
	m.line("Made by `go run ./bench/peers%s` on %s in %v.", args, mt.date.UTC().Format("2006-01-02 15:04 UTC"), mt.elapsed.Round(time.Second))
	m.line("")
	m.header("", "")
	m.row("machine", fmt.Sprintf("%s, %d cores (`runtime.NumCPU`), GOMAXPROCS %d, %s", mt.osArch, mt.cores, mt.gomaxprocs, mt.cpuModel))
	m.row("load average (1 min)", fmt.Sprintf("%s at the start, %s at the end: other work shared the machine, so timing figures are noisy", mt.loadStart, mt.loadEnd))
	m.row("Go", mt.goVersion)
	pg := mt.pgVersion
	if pg == "" {
		pg = "not started (no scenario needed a cluster)"
	}
	m.row("PostgreSQL", pg+"; local server binaries through `internal/pgcluster`: a primary + 2 streaming replicas, a fresh cluster per contender for scenarios 2–5, one cluster shared by every contender for scenario 6")
	if mt.runs > 1 {
		m.row("runs", fmt.Sprintf("%d: each figure is the median over the %d runs, with the range (min–max) in parentheses where they differ", mt.runs, mt.runs))
	} else {
		m.row("runs", "1: each figure is from that one run (`-runs N` gives medians and ranges)")
	}
	if mt.quick {
		m.row("mode", "`-quick`: shorter windows, rounds and fewer trials than the full run")
	}
	m.row("load", fmt.Sprintf("%d readers + %d writers, each at most one call per %v, every call with a %v deadline; a write is `INSERT … RETURNING node` (the column defaults to the server's `cluster_name`), a read `SELECT current_setting('cluster_name')`: every call records the server that ran it",
		p.readers, p.writers, dur(p.pace), dur(p.callTimeout)))
	m.line("")
	m.line("### Contenders")
	m.line("")
	m.header("contender", "version", "set up as")
	for _, k := range b.contendersSelected() {
		var vs []string
		for _, mod := range k.modules {
			vs = append(vs, "`"+mod+"` "+mt.version(mod))
		}
		if k.key != "pgx-multihost" && k.key != "plain" {
			vs = append(vs, "driver `github.com/jackc/pgx/v5` "+mt.version("github.com/jackc/pgx/v5"))
		}
		m.row(title(k), strings.Join(vs, "<br>"), k.usage)
	}
	m.line("")
	m.line("Every contender gets the harness's DSNs (`postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable&connect_timeout=5`; pgx multi-host the same parameters in one keyword/value DSN) and `database/sql`'s default pool settings. yandex/go-hasql and tsenart/nap are not served by the Go module proxy here, so they are not measured by this program.")
	if containsKey(b.cfg.peers, "gorm") {
		m.line("")
		m.line("gorm's dbresolver leaves goroutines behind: each `Register` makes a prepared-statement store per source and replica whose expiry goroutine never exits (`gorm.io/gorm/internal/lru`, as its own comment says), 3 here per registration, for good.")
	}
	m.line("")
	if b.cfg.has(scOverhead) {
		b.mdOverhead(&m)
	}
	if b.cfg.has(scCrash) {
		b.mdCrash(&m)
	}
	if b.cfg.has(scSplitBrain) {
		b.mdSplit(&m)
	}
	if b.cfg.has(scStale) {
		b.mdStale(&m)
	}
	if b.cfg.has(scHang) {
		b.mdHang(&m)
	}
	if b.cfg.has(scLag) {
		b.mdLag(&m)
	}
	b.mdSummary(&m)
	return m.String()
}

func (b *bench) mdOverhead(m *md) {
	r, p := b.res, b.p
	m.line("### 1. Per-call overhead against a raw `*sql.DB` (no-op driver)")
	m.line("")
	m.line("Each contender over a primary and 2 replicas, each its own `*sql.DB` on `internal/noopdriver` (no I/O) with `SetMaxIdleConns(64)` (dbrouter with `WithDialect(Generic())`), beside one raw `*sql.DB` doing the same call; %d paired interleaved rounds of %v a side (`internal/paired`), the median of the per-round ratios (subject ÷ raw; 1.00 = no overhead) and the subject's ns per call (median over runs). Parallel: 2×GOMAXPROCS goroutines a side. The plain row measures a raw `*sql.DB` against another: the noise floor.",
		p.overheadRounds, dur(p.overheadRound))
	m.line("")
	ks := b.contendersSelected()
	cols := []string{"call", "callers"}
	for _, k := range ks {
		cols = append(cols, title(k))
		if k.key == "gorm" {
			cols = append(cols, "gorm + dbresolver vs plain GORM")
		}
	}
	m.header(cols...)
	for call := range nCalls {
		for _, mode := range overheadModes {
			name := fmt.Sprintf("%d.%s", call, mode.name)
			cells := []string{callNames[call], fmt.Sprint(mode.goroutines())}
			for _, k := range ks {
				cells = append(cells, b.ratioCell(k, "ratio."+name, "ns."+name))
				if k.key == "gorm" {
					cells = append(cells, b.ratioCell(k, "twinRatio."+name, "ns."+name))
				}
			}
			m.row(cells...)
		}
	}
	m.line("")
	m.line("Allocations per call (serial, `testing.AllocsPerRun`), raw `*sql.DB` → contender, and where each call went:")
	m.line("")
	m.header("contender", "QueryRow", "Query", "Exec", "routed (QueryRow / Query / Exec)", "notes")
	for _, k := range ks {
		if k.wrap == nil {
			m.row(title(k), "—", "—", "—", "—", r.extras(scOverhead, k.key))
			continue
		}
		cells := []string{title(k)}
		var routes []string
		for call := range nCalls {
			c := formatted(r.get(scOverhead, k.key, fmt.Sprintf("rawAllocs.%d", call)), fmtAllocs) + " → " +
				formatted(r.get(scOverhead, k.key, fmt.Sprintf("allocs.%d", call)), fmtAllocs)
			if tw := r.get(scOverhead, k.key, fmt.Sprintf("twinAllocs.%d", call)); len(tw) > 0 {
				c += " (plain GORM " + formatted(tw, fmtAllocs) + ")"
			}
			cells = append(cells, c)
			routes = append(routes, orDash(r.getStr(scOverhead, k.key, fmt.Sprintf("route.%d", call))))
		}
		cells = append(cells, strings.Join(routes, " / "), r.extras(scOverhead, k.key))
		m.row(cells...)
	}
	m.line("")
}

// dur renders a configured duration: "5 ms", "2 s", "1.5 s".
func dur(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d%time.Second == 0:
		return fmt.Sprintf("%d s", d/time.Second)
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func fmtAllocs(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// ratioCell is "1.07 · 443 ns", or the contender's reason when it cannot be measured.
func (b *bench) ratioCell(k *contender, ratio, ns string) string {
	if k.wrap == nil {
		return "n/a: one pool, not a wrapper"
	}
	rs := b.res.get(scOverhead, k.key, ratio)
	if len(rs) == 0 {
		return "—"
	}
	return formatted(rs, fmtRatio) + " · " + fmtInt(medianOf(b.res.get(scOverhead, k.key, ns))) + " ns"
}

func (b *bench) mdCrash(m *md) {
	r, p := b.res, b.p
	m.line("### 2. Primary crashed, a replica promoted")
	m.line("")
	m.line("Under the load, the writers pause until both replicas have replayed everything, node0 is crashed (`pg_ctl stop -m immediate`) and the writers resume; node1 is promoted at once (`pg_promote`). Counted from the crash until writes reached node1 and %v passed, at most %v after the promotion. node2 is re-pointed to node1 only after scenario 4's window. \"Writes recover\": a write succeeded on node1 within %v of the promotion, with no restart of the application.",
		dur(p.staleWindow), dur(p.recoverCap), dur(p.recoverCap))
	m.line("")
	m.header("contender", "failed reads", "failed writes", "promotion → first write on the new primary", "crash → first write", "writes recover without restart", b.errsHeader(), "notes")
	for _, k := range b.contendersSelected() {
		key := k.key
		m.row(title(k),
			share(r.get(scCrash, key, "readsFailed"), r.get(scCrash, key, "readsTotal")),
			share(r.get(scCrash, key, "writesFailed"), r.get(scCrash, key, "writesTotal")),
			formatted(r.get(scCrash, key, "promoToWrite"), fmtSeconds),
			formatted(r.get(scCrash, key, "crashToWrite"), fmtSeconds),
			yesNo(r.get(scCrash, key, "recovered")),
			errCell(r.getErrs(scCrash, key, "reads"), r.getErrs(scCrash, key, "writes")),
			r.extras(scCrash, key))
	}
	m.line("")
}

// errsHeader names the errors column: kinds are counted over every run.
func (b *bench) errsHeader() string {
	if b.cfg.runs > 1 {
		return fmt.Sprintf("errors seen (reads; writes), all %d runs", b.cfg.runs)
	}
	return "errors seen (reads; writes)"
}

// fmtSigned renders a count with its sign: "+3", "0", "-1".
func fmtSigned(v float64) string {
	if v > 0 {
		return "+" + fmtInt(v)
	}
	return fmtInt(v)
}

func errCell(kinds ...errKinds) string {
	var parts []string
	for _, k := range kinds {
		if len(k) == 0 {
			parts = append(parts, "none")
		} else {
			parts = append(parts, k.String())
		}
	}
	return strings.Join(parts, "; ")
}

func (b *bench) mdSplit(m *md) {
	r, p := b.res, b.p
	m.line("### 3. The old primary returns on its old timeline (split brain)")
	m.line("")
	m.line("After scenario 2 (node1 primary on timeline 2, node2 re-pointed to it), node0 is started again with its data: a primary on timeline 1. Counted for %v from the moment it accepts connections: successful writes it took (they are lost to the cluster), reads it served, and the rows of that window it holds by its own count. The load's connections may all predate node0's return, so after the window one write goes through a client of the contender opened right then (in the last run, for -runs N).", dur(p.splitWindow))
	m.line("")
	m.header("contender", "writes taken by the old primary", "reads served by the old primary", "rows it holds from the window", "a client opened then writes to", "failed writes", strings.Replace(b.errsHeader(), "reads; writes", "writes", 1), "notes")
	for _, k := range b.contendersSelected() {
		key := k.key
		m.row(title(k),
			share(r.get(scSplitBrain, key, "oldWrites"), r.get(scSplitBrain, key, "splitWrites")),
			share(r.get(scSplitBrain, key, "oldReads"), r.get(scSplitBrain, key, "splitReads")),
			formatted(r.get(scSplitBrain, key, "oldRows"), fmtInt),
			orDash(r.getStr(scSplitBrain, key, "freshClient")),
			formatted(r.get(scSplitBrain, key, "splitWritesFailed"), fmtInt),
			errCell(r.getErrs(scSplitBrain, key, "writes")),
			r.extras(scSplitBrain, key))
	}
	m.line("")
}

func (b *bench) mdStale(m *md) {
	r, p := b.res, b.p
	m.line("### 4. A replica left on the old timeline")
	m.line("")
	m.line("In scenario 2's episode node2 is not re-pointed: it keeps waiting for the dead node0 and serves its old data. Right after node1's promotion the harness writes one row on node1, so from then on every read node2 serves misses it. Counted over the %v after that row: reads served by node2 (stale), and of those, the ones after the contender's own first write on node1.", dur(p.staleWindow))
	m.line("")
	m.header("contender", "stale reads (served by node2)", "stale reads after the contender's first write on node1", "notes")
	for _, k := range b.contendersSelected() {
		key := k.key
		after := share(r.get(scStale, key, "staleAfterWrite"), r.get(scStale, key, "staleAfterWriteTotal"))
		if after == "—" && len(r.get(scStale, key, "staleReads")) > 0 {
			after = "— (no write reached node1)"
		}
		m.row(title(k), share(r.get(scStale, key, "staleReads"), r.get(scStale, key, "staleTotal")), after, r.extras(scStale, key))
	}
	m.line("")
}

func (b *bench) mdHang(m *md) {
	r, p := b.res, b.p
	m.line("### 5. The primary hangs (SIGSTOP), a replica is promoted")
	m.line("")
	m.line("Under the load, every process of node0 is stopped (`Freeze`: its port still accepts TCP connections, nothing answers) and node1 is promoted at once. Counted from the freeze until writes reached node1 and one more second passed, at most %v after the promotion. The load's two writers may both sit out their deadline on the frozen node, so beside the load a fresh write is issued every 100 ms from a goroutine of its own (same deadline): its first success on node1 shows when a new write gets there. A call is stuck when it took (or, at the end, had been running) longer than its %s deadline + %s. Failed writes count the load's writes from the freeze on (a few that began while the freeze was taking hold succeeded on node0). Goroutines: the process's count at the end of the window less at the freeze, fresh writes in flight not counted.",
		dur(p.recoverCap), dur(p.callTimeout), dur(p.stuckMargin))
	m.line("")
	m.header("contender", "promotion → first write of the load on the new primary", "promotion → first fresh write on it", "writes recover without restart", "calls stuck (load; fresh writes)", "slowest call", "failed reads", "failed writes", "goroutines: growth during the hang", b.errsHeader(), "notes")
	for _, k := range b.contendersSelected() {
		key := k.key
		m.row(title(k),
			formatted(r.get(scHang, key, "promoToWrite"), fmtSeconds),
			formatted(r.get(scHang, key, "freshToWrite"), fmtSeconds),
			yesNo(r.get(scHang, key, "recovered")),
			formatted(r.get(scHang, key, "stuck"), fmtInt)+"; "+formatted(r.get(scHang, key, "freshStuck"), fmtInt),
			formatted(r.get(scHang, key, "slowest"), fmtSeconds),
			share(r.get(scHang, key, "readsFailed"), r.get(scHang, key, "readsTotal")),
			share(r.get(scHang, key, "writesFailed"), r.get(scHang, key, "writesTotal")),
			formatted(r.get(scHang, key, "goroutinesGrowth"), fmtSigned),
			errCell(r.getErrs(scHang, key, "reads"), r.getErrs(scHang, key, "writes")),
			r.extras(scHang, key))
	}
	m.line("")
}

// lagSum adds a scenario 6 metric over both delayed replicas, per run.
func (b *bench) lagSum(key, metric, mode string) []float64 {
	a := b.res.get(scLag, key, metric+"."+mode+".node1")
	c := b.res.get(scLag, key, metric+"."+mode+".node2")
	var s []float64
	for i := range min(len(a), len(c)) {
		s = append(s, a[i]+c[i])
	}
	return s
}

// lagMedian is the per-run mean of a scenario 6 metric over both delayed replicas.
func (b *bench) lagMedian(key, metric, mode string) []float64 {
	s := b.lagSum(key, metric, mode)
	for i := range s {
		s[i] /= 2
	}
	return s
}

func (b *bench) lagCell(key, mode string) string {
	r := b.res
	total := share(b.lagSum(key, "stale", mode), b.lagSum(key, "trials", mode))
	if total == "—" {
		return "—"
	}
	return fmt.Sprintf("%s: node1 delayed %s, node2 delayed %s", total,
		share(r.get(scLag, key, "stale."+mode+".node1"), r.get(scLag, key, "trials."+mode+".node1")),
		share(r.get(scLag, key, "stale."+mode+".node2"), r.get(scLag, key, "trials."+mode+".node2")))
}

func (b *bench) mdLag(m *md) {
	r, p := b.res, b.p
	m.line("### 6. One replica %s behind: reading one's own writes", dur(p.lagDelay))
	m.line("")
	m.line("One cluster for every contender; one replica applies WAL %v late (`recovery_min_apply_delay`): node1 for %d trials, then node2 for %d, so that a contender reading from one replica only meets the delay once. Under the load, each trial writes a new key (`Exec` of an INSERT) and reads it back at once; a read that does not find it is stale. The same trials again with the contender's read-your-writes feature where it has one. Replication is asynchronous, so a read that reaches even the undelayed replica before it has replayed the commit is stale too (a column of its own; on this machine its share varies widely from run to run, so differences between contenders that spread reads over both replicas are mostly that noise). Read-back time: the median time of the read alone.",
		dur(p.lagDelay), p.lagTrials, p.lagTrials)
	m.line("")
	m.header("contender", "read-your-writes feature", "stale reads without it", "reads on replicas without it", "stale reads with it", "reads on replicas with it", "stale reads on the undelayed replica (without)", "read-back time, median (without / with)", "notes")
	for _, k := range b.contendersSelected() {
		key := k.key
		feature := "none"
		if k.ryw != "" {
			feature = k.ryw
		} else if k.rywNote != "" {
			feature = k.rywNote
		}
		with, withReplica := "n/a", "n/a"
		times := formatted(b.lagMedian(key, "readTime", "without"), fmtSeconds)
		if k.newRYW != nil {
			with = b.lagCell(key, "with")
			withReplica = share(b.lagSum(key, "replica", "with"), b.lagSum(key, "trials", "with"))
			times += " / " + formatted(b.lagMedian(key, "readTime", "with"), fmtSeconds)
		}
		stale, delayed := b.lagSum(key, "stale", "without"), b.lagSum(key, "staleDelayed", "without")
		var undelayed []float64
		for i := range min(len(stale), len(delayed)) {
			undelayed = append(undelayed, stale[i]-delayed[i])
		}
		extras := r.extras(scLag, key)
		if e := r.getErrs(scLag, key, "trials"); len(e) > 0 {
			extras = strings.TrimPrefix(extras+"; failed trials: "+e.String(), "; ")
		}
		m.row(title(k), feature, b.lagCell(key, "without"),
			share(b.lagSum(key, "replica", "without"), b.lagSum(key, "trials", "without")),
			with, withReplica, formatted(undelayed, fmtInt), times, extras)
	}
	m.line("")
}

// medianOf returns the median of a metric, NaN when it has no value.
func medianOf(vals []float64) float64 {
	s := summarize(vals)
	if s.n == 0 {
		return math.NaN()
	}
	return s.med
}

// medianShare is the median over runs of part/whole.
func medianShare(parts, wholes []float64) float64 {
	var s []float64
	for i := range min(len(parts), len(wholes)) {
		if !math.IsNaN(parts[i]) && !math.IsNaN(wholes[i]) && wholes[i] > 0 {
			s = append(s, parts[i]/wholes[i])
		}
	}
	return medianOf(s)
}

// criterion is one figure of the summary, lower is better.
type criterion struct {
	sc    int
	name  string
	runs  func(key string) []float64 // one value a run
	show  func(v float64) string
	slack float64 // differences within slack are ties (noise)
}

// overheadSlack is how far apart overhead ratios must be to count: the
// baseline's raw-against-raw row shows how noisy a run was.
const overheadSlack = 0.05

// shares divides parts by wholes run by run (NaN where the whole is 0).
func shares(parts, wholes []float64) []float64 {
	var s []float64
	for i := range min(len(parts), len(wholes)) {
		if wholes[i] > 0 {
			s = append(s, parts[i]/wholes[i])
		} else {
			s = append(s, math.NaN())
		}
	}
	return s
}

func (b *bench) criteria() []criterion {
	r := b.res
	get := func(sc int, metric string) func(string) []float64 {
		return func(key string) []float64 { return r.get(sc, key, metric) }
	}
	frac := func(sc int, part, whole string) func(string) []float64 {
		return func(key string) []float64 { return shares(r.get(sc, key, part), r.get(sc, key, whole)) }
	}
	lag := func(mode string) func(string) []float64 {
		return func(key string) []float64 {
			m := mode
			if k := findContender(key); m == "best" {
				m = "without"
				if k != nil && k.newRYW != nil {
					m = "with"
				}
			}
			return shares(b.lagSum(key, "stale", m), b.lagSum(key, "trials", m))
		}
	}
	var cs []criterion
	for call := range nCalls {
		for _, mode := range overheadModes {
			name := fmt.Sprintf("%d.%s", call, mode.name)
			cs = append(cs, criterion{scOverhead, "overhead, " + callNames[call] + ", " + mode.name, get(scOverhead, "ratio."+name), fmtRatio, overheadSlack})
		}
	}
	return append(cs,
		criterion{scCrash, "crash: failed reads", frac(scCrash, "readsFailed", "readsTotal"), fmtPct, 0},
		criterion{scCrash, "crash: failed writes", frac(scCrash, "writesFailed", "writesTotal"), fmtPct, 0},
		criterion{scCrash, "crash: promotion → first write", get(scCrash, "promoToWrite"), fmtSeconds, 0.02},
		criterion{scSplitBrain, "split brain: writes taken by the old primary", frac(scSplitBrain, "oldWrites", "splitWrites"), fmtPct, 0},
		criterion{scSplitBrain, "split brain: reads served by the old primary", frac(scSplitBrain, "oldReads", "splitReads"), fmtPct, 0},
		criterion{scStale, "old-timeline replica: stale reads", frac(scStale, "staleReads", "staleTotal"), fmtPct, 0},
		criterion{scHang, "hang: promotion → first write of the load", get(scHang, "promoToWrite"), fmtSeconds, 0.02},
		criterion{scHang, "hang: promotion → first fresh write", get(scHang, "freshToWrite"), fmtSeconds, 0.02},
		criterion{scHang, "hang: calls stuck", get(scHang, "stuck"), fmtInt, 0},
		criterion{scHang, "hang: failed reads", frac(scHang, "readsFailed", "readsTotal"), fmtPct, 0},
		criterion{scHang, "hang: failed writes", frac(scHang, "writesFailed", "writesTotal"), fmtPct, 0},
		criterion{scLag, "lag: stale reads, with read-your-writes where the contender has it", lag("best"), fmtPct, 0},
		criterion{scLag, "lag: stale reads without read-your-writes", lag("without"), fmtPct, 0},
	)
}

func (b *bench) mdSummary(m *md) {
	r := b.res
	m.line("### Summary")
	m.line("")
	if b.cfg.runs > 1 {
		m.line("Medians over %d runs; the tables above have the ranges and the details.", b.cfg.runs)
	} else {
		m.line("One run; the tables above have the details.")
	}
	m.line("")
	m.header("contender", "overhead (QueryRow serial / parallel)", "crash: failed reads / writes", "crash: promotion → first write",
		"split brain: writes / reads on the old primary", "old-timeline replica: stale reads", "hang: promotion → first write (load / fresh) · stuck calls",
		"lag: stale reads without / with read-your-writes")
	pct := func(v float64) string {
		if math.IsNaN(v) {
			return "—"
		}
		return fmtPct(v)
	}
	for _, k := range b.contendersSelected() {
		key := k.key
		over := "—"
		if b.cfg.has(scOverhead) {
			if k.wrap == nil {
				over = "n/a (not a wrapper)"
			} else {
				over = fmtRatio(medianOf(r.get(scOverhead, key, "ratio.0.serial"))) + " / " + fmtRatio(medianOf(r.get(scOverhead, key, "ratio.0.parallel")))
			}
		}
		crash, first, split, stale, hang, lag := "—", "—", "—", "—", "—", "—"
		if b.cfg.has(scCrash) {
			crash = pct(medianShare(r.get(scCrash, key, "readsFailed"), r.get(scCrash, key, "readsTotal"))) + " / " +
				pct(medianShare(r.get(scCrash, key, "writesFailed"), r.get(scCrash, key, "writesTotal")))
			first = fmtSeconds(medianOf(r.get(scCrash, key, "promoToWrite")))
		}
		if b.cfg.has(scSplitBrain) {
			split = pct(medianShare(r.get(scSplitBrain, key, "oldWrites"), r.get(scSplitBrain, key, "splitWrites"))) + " / " +
				pct(medianShare(r.get(scSplitBrain, key, "oldReads"), r.get(scSplitBrain, key, "splitReads"))) +
				" · a new client writes to " + orDash(r.getStr(scSplitBrain, key, "freshClient"))
		}
		if b.cfg.has(scStale) {
			stale = pct(medianShare(r.get(scStale, key, "staleReads"), r.get(scStale, key, "staleTotal")))
		}
		if b.cfg.has(scHang) {
			hang = fmtSeconds(medianOf(r.get(scHang, key, "promoToWrite"))) + " / " + fmtSeconds(medianOf(r.get(scHang, key, "freshToWrite"))) +
				" · " + fmtIntNaN(medianOf(r.get(scHang, key, "stuck")))
		}
		if b.cfg.has(scLag) {
			with := "none"
			if k.newRYW != nil {
				with = pct(medianShare(b.lagSum(key, "stale", "with"), b.lagSum(key, "trials", "with")))
			}
			lag = pct(medianShare(b.lagSum(key, "stale", "without"), b.lagSum(key, "trials", "without"))) + " / " + with
		}
		m.row(title(k), over, crash, first, split, stale, hang, lag)
	}
	m.line("")
	b.mdLosses(m)
}

func fmtIntNaN(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	return fmtInt(v)
}

// mdLosses lists every figure of the summary where a contender did better
// than dbrouter by the median over runs (beyond the noise allowance of
// overhead and timings), and says whether it did in every run (its worst
// run beat dbrouter's best) or by the median only.
func (b *bench) mdLosses(m *md) {
	if !containsKey(b.cfg.peers, "dbrouter") || len(b.cfg.peers) < 2 {
		return
	}
	var every, median []string
	for _, c := range b.criteria() {
		if !b.cfg.has(c.sc) {
			continue
		}
		mine := summarize(c.runs("dbrouter"))
		if mine.n == 0 {
			continue
		}
		for _, k := range b.contendersSelected() {
			if k.key == "dbrouter" || k.baseline && c.sc == scOverhead { // raw against raw is the noise floor
				continue
			}
			other := summarize(c.runs(k.key))
			if other.n == 0 || math.IsInf(other.med, 1) || !(other.med < mine.med-c.slack) {
				continue
			}
			line := fmt.Sprintf("- %s: %s %s, dbrouter %s", c.name, title(k), formatted(c.runs(k.key), c.show), formatted(c.runs("dbrouter"), c.show))
			if b.cfg.runs == 1 || other.max < mine.min-c.slack {
				every = append(every, line)
			} else {
				median = append(median, line)
			}
		}
	}
	m.line("Where another contender did better than dbrouter (overhead ratios within %.2f and times within 20 ms count as ties; the baseline's overhead row is raw against raw, the noise floor, and is not compared):", overheadSlack)
	m.line("")
	if b.cfg.runs == 1 {
		m.line("In this run:")
	} else {
		m.line("In every run (the contender's worst run beat dbrouter's best):")
	}
	m.line("")
	if len(every) == 0 {
		m.line("- nowhere")
	}
	for _, l := range every {
		m.line("%s", l)
	}
	m.line("")
	if b.cfg.runs > 1 {
		m.line("By the median only (the runs overlap):")
		m.line("")
		if len(median) == 0 {
			m.line("- nowhere")
		}
		for _, l := range median {
			m.line("%s", l)
		}
		m.line("")
	}
}

func containsKey(keys []string, k string) bool {
	for _, x := range keys {
		if x == k {
			return true
		}
	}
	return false
}
