package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/dbrouter/dbrouter"
)

// printer writes the live view: a line a second, the scenario's steps and
// the router's events between them, then the summary. It is safe for
// concurrent use (events come from the router's goroutines).
type printer struct {
	mu    sync.Mutex // protects following fields
	out   io.Writer
	names []string
	began time.Time // of the load; zero before it starts
}

func newPrinter(out io.Writer) *printer { return &printer{out: out} }

// nodeCol is the width of a node's column: " 1234r 1234w replica".
const nodeCol = 20

// linef prints one line.
func (p *printer) linef(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, format+"\n", args...)
}

// header prints the live view's column names and starts its clock.
func (p *printer) header(names []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.names, p.began = names, time.Now()
	var b strings.Builder
	fmt.Fprintf(&b, "\n%5s %7s %8s %6s  %-7s |", "time", "reads/s", "writes/s", "errors", "primary")
	for _, n := range names {
		fmt.Fprintf(&b, " %-*s", nodeCol-1, n)
	}
	fmt.Fprintln(p.out, strings.TrimRight(b.String(), " "))
}

// live prints one line of the view: the second's reads, writes and errors,
// the primary, and each node's traffic and state as the router sees it.
func (p *printer) live(at time.Duration, t tally, traffic map[string]nodeTraffic, st dbrouter.Status) {
	p.mu.Lock()
	defer p.mu.Unlock()
	primary := st.Primary
	if primary == "" {
		primary = "none"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%4.0fs %7d %8d %6d  %-7s |", at.Seconds(), t.readsOK, t.writesOK, t.readsFailed+t.writesFailed, primary)
	for _, name := range p.names {
		tr := traffic[name]
		n, _ := st.Node(name)
		fmt.Fprintf(&b, " %4dr %4dw %-7s", tr.reads, tr.writes, state(n, st.Primary))
	}
	fmt.Fprintln(p.out, strings.TrimRight(b.String(), " "))
	if errs := t.readsFailed + t.writesFailed; errs > 0 && t.lastErr != nil {
		fmt.Fprintf(p.out, "%4.1fs !! %d failed (%d reads, %d writes), the last: %s\n",
			at.Seconds(), errs, t.readsFailed, t.writesFailed, reason(t.lastErr))
	}
}

// state is a node's state in a word.
func state(n dbrouter.NodeStatus, primary string) string {
	switch {
	case n.State == dbrouter.StateFenced:
		return "FENCED"
	case n.State == dbrouter.StateDown:
		return "down"
	case n.Name == primary:
		return "primary"
	case n.Readable:
		return "replica"
	case n.StaleTimeline:
		return "old-tl"
	case n.LagExcluded:
		return "lagging"
	case n.State == dbrouter.StateUnknown:
		return "unknown"
	}
	return "idle" // up, but serving nothing (a primary that is not the one, say)
}

// step prints what the scenario does.
func (p *printer) step(at time.Duration, format string, args ...any) {
	p.linef("%4.1fs >> %s", at.Seconds(), fmt.Sprintf(format, args...))
}

// event prints a router event.
func (p *printer) event(e dbrouter.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	at := "     "
	if !p.began.IsZero() {
		at = fmt.Sprintf("%4.1fs", e.Time.Sub(p.began).Seconds())
	}
	line := fmt.Sprintf("%s !! router: %s %s", at, e.Kind, e.Node)
	if e.Detail != "" {
		line += " (" + e.Detail + ")"
	}
	fmt.Fprintln(p.out, line)
}

// summary prints the outcome, one "SUMMARY key=value" line each.
func (p *printer) summary(s summary) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.out)
	for _, f := range s {
		fmt.Fprintf(p.out, "SUMMARY %s=%v\n", f.key, f.value)
	}
}
