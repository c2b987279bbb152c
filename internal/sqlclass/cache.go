package sqlclass

import (
	"hash/maphash"
	"strings"
	"sync/atomic"
)

// Classify is IsReadOnly behind a lock-free cache, for the router's hot
// path: an application sends the same few hundred statements again and
// again, and hashing one (about 0.1 ns a byte) is cheaper than lexing it
// (about 1.1 ns a byte). A slot is compared by the whole query text, so a
// hash collision costs a lex, never a wrong answer.
//
// A query enters the cache the second time its hash lands on a slot, so
// one-off statements (built with inline values) never allocate; a repeated
// one allocates once, when admitted. Queries longer than MaxCachedLen are
// lexed every time.
func Classify(query string) (readOnly bool) {
	if len(query) > MaxCachedLen {
		return IsReadOnly(query)
	}
	h := maphash.String(cacheSeed, query)
	i := h & (cacheSlots - 1)
	if e := cacheEntries[i].Load(); e != nil && e.query == query {
		return e.readOnly
	}
	readOnly = IsReadOnly(query)
	if cacheSeen[i].Swap(h) == h {
		cacheEntries[i].Store(&cacheEntry{query: strings.Clone(query), readOnly: readOnly})
	}
	return readOnly
}

// MaxCachedLen is the longest query Classify caches.
const MaxCachedLen = 4096

const cacheSlots = 4096 // a power of two

type cacheEntry struct {
	query    string
	readOnly bool
}

var (
	cacheSeed    = maphash.MakeSeed()
	cacheEntries [cacheSlots]atomic.Pointer[cacheEntry]
	cacheSeen    [cacheSlots]atomic.Uint64 // the hash last seen in each slot
)
