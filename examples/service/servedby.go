package main

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dbrouter/dbrouter"
)

// How a request learns which node served its read.
//
// The statement hook (dbrouter.WithStatementHook) reports every statement
// of every request, on the goroutine that ran it, but with no context: a
// Statement says what ran where, not for whom, and Go has no goroutine-local
// storage to carry a request to the hook. Matching by Query text and Start
// time would mix up two requests running the same query at once. The one
// field of a Statement the caller controls is its Query, so a request marks
// its reads: it borrows a tag, a numbered SQL comment that no other request
// holds meanwhile, and prefixes its query with it:
//
//	/*req 7*/ SELECT id, owner, balance FROM accounts WHERE id = $1
//
// The router's lexer skips comments, so the read routes as the bare query
// would. The hook parses the number and records the node under that tag.
// It runs before the query call returns, on the request's own goroutine
// (twice for a retried read: the last call names the node that served it),
// so the request reads the node right after its query, then gives the tag
// back. Tags are reused, so there are only ever as many as reads once ran
// at the same time: the set of SQL texts stays small, and pgx's
// per-connection statement cache keeps working.

const (
	tagOpen  = "/*req "
	tagClose = "*/ "
)

// tagger hands out tags and records, for each, the node of the last tagged
// statement. It is safe for concurrent use.
type tagger struct {
	all atomic.Pointer[[]*tag] // every tag, by number; replaced whole when one is added

	mu   sync.Mutex // protects following fields, and serializes adding tags
	free []*tag     // tags no request holds
}

// tag is one request's mark on its reads, while it holds it.
type tag struct {
	prefix string // "/*req N*/ ": put it before the query

	mu   sync.Mutex // protects node
	node string
}

// acquire returns a tag that no other caller holds, with no node recorded.
// Give it back with release.
func (tg *tagger) acquire() *tag {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if n := len(tg.free); n > 0 {
		t := tg.free[n-1]
		tg.free = tg.free[:n-1]
		t.set("")
		return t
	}
	var all []*tag
	if p := tg.all.Load(); p != nil {
		all = *p
	}
	t := &tag{prefix: tagOpen + strconv.Itoa(len(all)) + tagClose}
	all = append(all[:len(all):len(all)], t) // a new array: readers may hold the old one
	tg.all.Store(&all)
	return t
}

// release gives t back. Its holder must not use it afterwards.
func (tg *tagger) release(t *tag) {
	tg.mu.Lock()
	tg.free = append(tg.free, t)
	tg.mu.Unlock()
}

// observe is the tagger's part of the statement hook: it records the node
// of a tagged statement under its tag. Untagged statements (writes,
// transactions) are left alone. It takes no lock but the tag's own.
func (tg *tagger) observe(s dbrouter.Statement) {
	q, ok := strings.CutPrefix(s.Query, tagOpen)
	if !ok {
		return
	}
	num, _, ok := strings.Cut(q, tagClose)
	if !ok {
		return
	}
	n, err := strconv.Atoi(num)
	p := tg.all.Load()
	if err != nil || p == nil || n < 0 || n >= len(*p) {
		return
	}
	(*p)[n].set(s.Node)
}

func (t *tag) set(node string) {
	t.mu.Lock()
	t.node = node
	t.mu.Unlock()
}

// servedBy returns the node that ran the last statement tagged with t since
// it was acquired: "" when none ran.
func (t *tag) servedBy() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.node
}
