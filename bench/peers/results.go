package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
)

// results hold every figure of every run: per scenario and contender, per
// metric, one value a run. +Inf is "never" (within its bound), NaN "does not apply".
type results struct {
	mu    sync.Mutex // protects following fields
	cells map[int]map[string]*cell
}

type cell struct {
	vals  map[string][]float64
	strs  map[string]string
	errs  map[string]errKinds // "reads", "writes", …
	notes []string            // distinct, in order
	fails []string            // runs that failed, why
}

func newResults() *results { return &results{cells: map[int]map[string]*cell{}} }

// cellLocked returns the cell of a scenario and contender, creating it. r.mu must be held.
func (r *results) cellLocked(sc int, key string) *cell {
	m := r.cells[sc]
	if m == nil {
		m = map[string]*cell{}
		r.cells[sc] = m
	}
	c := m[key]
	if c == nil {
		c = &cell{vals: map[string][]float64{}, strs: map[string]string{}, errs: map[string]errKinds{}}
		m[key] = c
	}
	return c
}

func (r *results) put(sc int, key, metric string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.cellLocked(sc, key)
	c.vals[metric] = append(c.vals[metric], v)
}

func (r *results) str(sc int, key, metric, v string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cellLocked(sc, key).strs[metric] = v
}

func (r *results) errs(sc int, key, what string, k errKinds) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.cellLocked(sc, key)
	if c.errs[what] == nil {
		c.errs[what] = errKinds{}
	}
	c.errs[what].merge(k)
}

func (r *results) note(sc int, key, s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.cellLocked(sc, key)
	if !slices.Contains(c.notes, s) {
		c.notes = append(c.notes, s)
	}
}

func (r *results) fail(sc int, key string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.cellLocked(sc, key)
	c.fails = append(c.fails, err.Error())
}

// get returns a copy of the values of a metric.
func (r *results) get(sc int, key, metric string) []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.cells[sc][key]; c != nil {
		return slices.Clone(c.vals[metric])
	}
	return nil
}

// last returns the latest value of a metric, NaN when there is none.
func (r *results) last(sc int, key, metric string) float64 {
	v := r.get(sc, key, metric)
	if len(v) == 0 {
		return math.NaN()
	}
	return v[len(v)-1]
}

func (r *results) getStr(sc int, key, metric string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.cells[sc][key]; c != nil {
		return c.strs[metric]
	}
	return ""
}

func (r *results) getErrs(sc int, key, what string) errKinds {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.cells[sc][key]; c != nil && c.errs[what] != nil {
		k := errKinds{}
		k.merge(c.errs[what])
		return k
	}
	return nil
}

// extras are a cell's notes and failures, for a table's notes column.
func (r *results) extras(sc int, key string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.cells[sc][key]
	if c == nil {
		return ""
	}
	parts := slices.Clone(c.notes)
	for _, f := range c.fails {
		f = strings.ReplaceAll(f, "\n", " ")
		if len(f) > 160 {
			f = f[:160] + "…"
		}
		parts = append(parts, "**run failed**: "+f)
	}
	return strings.Join(parts, "; ")
}

// stats summarizes the values of a metric over runs: the median and the
// range of those that apply (NaN does not), +Inf sorting last.
type stats struct {
	n             int // values that apply
	med, min, max float64
}

func summarize(vals []float64) stats {
	var s []float64
	for _, v := range vals {
		if !math.IsNaN(v) {
			s = append(s, v)
		}
	}
	if len(s) == 0 {
		return stats{}
	}
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		a, b := s[len(s)/2-1], s[len(s)/2]
		if math.IsInf(b, 1) {
			med = b // between a time and "never": say never
		} else {
			med = (a + b) / 2
		}
	}
	return stats{n: len(s), med: med, min: s[0], max: s[len(s)-1]}
}

// formatted renders a median with its range when runs differ: "46 ms (31 ms–60 ms)".
func formatted(vals []float64, f func(float64) string) string {
	s := summarize(vals)
	if s.n == 0 {
		return "—"
	}
	out := f(s.med)
	if lo, hi := f(s.min), f(s.max); s.n > 1 && lo != hi {
		out += " (" + lo + "–" + hi + ")"
	}
	return out
}

// fmtSeconds renders seconds: "3 ms", "0.88 s", "never".
func fmtSeconds(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case math.IsInf(v, 1):
		return "never"
	case v < 0.01:
		return fmt.Sprintf("%.1f ms", v*1000)
	case v < 1:
		return fmt.Sprintf("%.0f ms", v*1000)
	default:
		return fmt.Sprintf("%.2f s", v)
	}
}

func fmtInt(v float64) string {
	if math.IsInf(v, 1) {
		return "never"
	}
	return commas(int64(math.Round(v)))
}

func fmtRatio(v float64) string { return fmt.Sprintf("%.2f", v) }

func fmtPct(v float64) string {
	switch {
	case v == 0:
		return "0%"
	case v < 0.01:
		return fmt.Sprintf("%.1f%%", v*100)
	default:
		return fmt.Sprintf("%.0f%%", v*100)
	}
}

// commas formats 12345 as "12,345".
func commas(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// share renders part of a whole over runs: "12 of 1,880 (0.6%)", the
// medians of each and of the share, with the range of the share when runs
// differ: "12 of 1,880 (0.6%, range 0.2%–1%)".
func share(parts, wholes []float64) string {
	p, w := summarize(parts), summarize(wholes)
	if p.n == 0 || w.n == 0 {
		return "—"
	}
	var shares []float64
	for i := range min(len(parts), len(wholes)) {
		if !math.IsNaN(parts[i]) && !math.IsNaN(wholes[i]) && wholes[i] > 0 {
			shares = append(shares, parts[i]/wholes[i])
		}
	}
	out := fmtInt(p.med) + " of " + fmtInt(w.med)
	if s := summarize(shares); s.n > 0 {
		out += " (" + fmtPct(s.med)
		if lo, hi := fmtPct(s.min), fmtPct(s.max); s.n > 1 && lo != hi {
			out += ", range " + lo + "–" + hi
		}
		out += ")"
	}
	return out
}

// yesNo renders a 0/1 metric over runs: "yes", "no", "2 of 3 runs".
func yesNo(vals []float64) string {
	s := summarize(vals)
	if s.n == 0 {
		return "—"
	}
	yes := 0
	for _, v := range vals {
		if v == 1 {
			yes++
		}
	}
	switch yes {
	case s.n:
		return "yes"
	case 0:
		return "**no**"
	}
	return fmt.Sprintf("%d of %d runs", yes, s.n)
}
