package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	all := []string{"dbrouter", "bxcodec", "gorm", "pgx-multihost", "plain"}
	tests := []struct {
		name      string
		args      []string
		scenarios []int
		peers     []string
		runs      int
		quick     bool
		out       string
		err       string // part of the error; "" for none
	}{
		{name: "defaults", scenarios: []int{1, 2, 3, 4, 5, 6}, peers: all, runs: 1},
		{name: "numbers and names, deduplicated and sorted", args: []string{"-scenarios", "hang, 2,crash,6"}, scenarios: []int{2, 5, 6}, peers: all, runs: 1},
		{name: "peers in canonical order", args: []string{"-peers", "plain,DBROUTER", "-runs", "3", "-quick", "-out", "x.md"},
			scenarios: []int{1, 2, 3, 4, 5, 6}, peers: []string{"dbrouter", "plain"}, runs: 3, quick: true, out: "x.md"},
		{name: "unknown scenario", args: []string{"-scenarios", "7"}, err: "no scenario 7"},
		{name: "unknown scenario name", args: []string{"-scenarios", "chaos"}, err: `unknown scenario "chaos"`},
		{name: "unknown peer", args: []string{"-peers", "dbrouter,hasql"}, err: `unknown contender "hasql"`},
		{name: "no runs", args: []string{"-runs", "0"}, err: "-runs 0"},
		{name: "stray argument", args: []string{"now"}, err: "unexpected arguments"},
		{name: "bad flag", args: []string{"-fast"}, err: "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseFlags(tt.args, io.Discard)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseFlags(%q) = %v, want an error containing %q", tt.args, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tt.args, err)
			}
			if !slices.Equal(cfg.scenarios, tt.scenarios) || !slices.Equal(cfg.peers, tt.peers) ||
				cfg.runs != tt.runs || cfg.quick != tt.quick || cfg.out != tt.out {
				t.Errorf("parseFlags(%q) = %+v, want scenarios %v peers %v runs %d quick %v out %q",
					tt.args, cfg, tt.scenarios, tt.peers, tt.runs, tt.quick, tt.out)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		vals []float64
		want string
	}{
		{nil, "—"},
		{[]float64{0.5}, "500 ms"},
		{[]float64{0.5, 0.1, 0.3}, "300 ms (100 ms–500 ms)"},
		{[]float64{0.5, never}, "never (500 ms–never)"},
		{[]float64{never, never}, "never"},
		{[]float64{nan(), 2}, "2.00 s"},
	}
	for _, tt := range tests {
		if got := formatted(tt.vals, fmtSeconds); got != tt.want {
			t.Errorf("formatted(%v) = %q, want %q", tt.vals, got, tt.want)
		}
	}
	if got := share([]float64{1, 3, 2}, []float64{10, 10, 10}); got != "2 of 10 (20%, range 10%–30%)" {
		t.Errorf("share = %q", got)
	}
}

// TestQuickSubset runs the quick subset for dbrouter and one peer on real
// clusters (local server binaries): every scenario's code runs, the report
// has every section and no run failed, and dbrouter keeps the guarantees the
// library's own failover tests assert (writes follow the promotion, the old
// primary gets nothing).
func TestQuickSubset(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real PostgreSQL clusters")
	}
	cfg, err := parseFlags([]string{"-quick", "-peers", "dbrouter,bxcodec"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var progress strings.Builder
	b := newBench(cfg, &progress)
	err = b.runAll(ctx)
	clusters.closeAll()
	t.Log(progress.String())
	if err != nil {
		t.Fatal(err)
	}
	report := b.markdown()
	for _, section := range []string{"### 1.", "### 2.", "### 3.", "### 4.", "### 5.", "### 6.", "### Summary", "| dbrouter |", "| bxcodec/dbresolver |"} {
		if !strings.Contains(report, section) {
			t.Errorf("the report has no %q", section)
		}
	}
	if strings.Contains(report, "run failed") {
		t.Errorf("a run failed:\n%s", report)
	}
	r := b.res
	if v := r.last(scCrash, "dbrouter", "recovered"); v != 1 {
		t.Errorf("dbrouter: writes did not reach the promoted replica after the crash")
	}
	if v := r.last(scSplitBrain, "dbrouter", "oldWrites"); v != 0 {
		t.Errorf("dbrouter: the old primary took %v writes after it returned", v)
	}
	if v := r.last(scHang, "dbrouter", "freshToWrite"); !(v < 5) {
		t.Errorf("dbrouter: a fresh write reached the promoted replica %v s after the promotion", v)
	}
	if v := r.last(scLag, "dbrouter", "stale.with.node1") + r.last(scLag, "dbrouter", "stale.with.node2"); v != 0 {
		t.Errorf("dbrouter: %v stale reads within a session", v)
	}
	if t.Failed() {
		t.Log(report)
	}
}

func nan() float64 { return never - never }

// TestMarkdown renders a report from made-up figures of two runs: every
// section is there, nothing is left unformatted, and the list of places
// where a peer beat dbrouter tells losses in every run from losses by the
// median only.
func TestMarkdown(t *testing.T) {
	cfg, err := parseFlags([]string{"-runs", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	b := newBench(cfg, io.Discard)
	r := b.res
	for i, k := range contenders {
		f := float64(i)
		for run := range 2 {
			g := f + float64(run)
			for call := range nCalls {
				for _, m := range overheadModes {
					name := fmt.Sprintf("%d.%s", call, m.name)
					r.put(scOverhead, k.key, "ratio."+name, 1+g/10)
					r.put(scOverhead, k.key, "ns."+name, 1000+g)
				}
				r.put(scOverhead, k.key, fmt.Sprintf("allocs.%d", call), 7)
				r.put(scOverhead, k.key, fmt.Sprintf("rawAllocs.%d", call), 7)
			}
			for _, m := range []string{"readsFailed", "writesFailed"} {
				r.put(scCrash, k.key, m, g)
				r.put(scHang, k.key, m, g)
			}
			for _, m := range []string{"readsTotal", "writesTotal"} {
				r.put(scCrash, k.key, m, 100)
				r.put(scHang, k.key, m, 100)
			}
			r.put(scCrash, k.key, "promoToWrite", map[bool]float64{true: 0.05 + g/100, false: never}[i%2 == 0])
			r.put(scCrash, k.key, "recovered", float64(1-i%2))
			r.put(scSplitBrain, k.key, "oldWrites", g)
			r.put(scSplitBrain, k.key, "splitWrites", 10)
			r.put(scStale, k.key, "staleReads", g)
			r.put(scStale, k.key, "staleTotal", 10)
			r.put(scHang, k.key, "promoToWrite", never)
			r.put(scHang, k.key, "freshToWrite", 0.9)
			r.put(scHang, k.key, "stuck", 0)
			r.put(scHang, k.key, "goroutinesGrowth", 3)
			for _, d := range []string{"node1", "node2"} {
				r.put(scLag, k.key, "stale.without."+d, 30-g)
				r.put(scLag, k.key, "trials.without."+d, 50)
			}
		}
		r.str(scOverhead, k.key, "route.0", "replica")
		r.errs(scCrash, k.key, "writes", errKinds{"connection refused": 3})
	}
	r.fail(scHang, "gorm", errors.New("cluster did not start"))
	report := b.markdown()
	for _, want := range []string{"### 1.", "### 2.", "### 3.", "### 4.", "### 5.", "### 6.", "### Summary",
		"In every run", "By the median only", "never", "**run failed**: cluster did not start", "connection refused ×3"} {
		if !strings.Contains(report, want) {
			t.Errorf("the report has no %q", want)
		}
	}
	for _, bad := range []string{"%!", "NaN", "+Inf"} {
		if strings.Contains(report, bad) {
			t.Errorf("the report holds %q:\n%s", bad, report)
		}
	}
	if t.Failed() {
		t.Log(report)
	}
}
