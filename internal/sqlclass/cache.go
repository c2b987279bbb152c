package sqlclass

import (
	"hash/maphash"
	"strings"
	"sync/atomic"
	"unsafe"
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
//
// In front of that, a second table is indexed by where the query's bytes are
// in memory: an application's statements are mostly string constants, whose
// address never changes, so a repeated statement is found without hashing
// its text. Its slots point to entries of the first table. A constant (its
// bytes in the executable's read-only data, see static.go) is found by its
// address and length alone; any other string is also compared by its whole
// text (one built in a reused buffer can come back at the same address with
// other bytes), so an address that was reused costs a lookup, never a wrong
// answer.
func Classify(query string) (readOnly bool) {
	readOnly, _ = Describe(query)
	return readOnly
}

// Describe is Classify that also reports LeavesSessionState(query) (false
// for a read-only query, which cannot), from the same cache.
func Describe(query string) (readOnly, session bool) {
	if len(query) > MaxCachedLen {
		return describe(query)
	}
	p := addrSlot(query)
	if e := addrEntries[p].Load(); e != nil {
		if e.constant && unsafe.StringData(e.query) == unsafe.StringData(query) && len(e.query) == len(query) {
			return e.readOnly, e.session // the same read-only bytes
		}
		if e.query == query {
			return e.readOnly, e.session
		}
	}
	h := maphash.String(cacheSeed, query)
	i := h & (cacheSlots - 1)
	if e := cacheEntries[i].Load(); e != nil && e.query == query {
		addrEntries[p].Store(e)
		return e.readOnly, e.session
	}
	readOnly, session = describe(query)
	if cacheSeen[i].Swap(h) == h {
		e := &cacheEntry{query: query, readOnly: readOnly, session: session, constant: inReadOnly(query)}
		if !e.constant {
			e.query = strings.Clone(query) // never keep bytes someone else may write
		}
		cacheEntries[i].Store(e)
		addrEntries[p].Store(e)
	}
	return readOnly, session
}

func describe(query string) (readOnly, session bool) {
	if IsReadOnly(query) {
		return true, false
	}
	return false, LeavesSessionState(query)
}

// addrSlot returns the slot of the address table for query: a Fibonacci
// hash of the address and length of its bytes.
func addrSlot(query string) uint64 {
	a := uint64(uintptr(unsafe.Pointer(unsafe.StringData(query)))) ^ uint64(len(query))<<48
	return (a * 0x9E3779B97F4A7C15) >> (64 - addrBits)
}

// MaxCachedLen is the longest query Classify caches.
const MaxCachedLen = 4096

const cacheSlots = 4096 // a power of two

const addrBits = 12 // the address table has 1<<addrBits slots

type cacheEntry struct {
	query    string
	readOnly bool
	session  bool // LeavesSessionState
	constant bool // query is the caller's own string, in read-only memory
}

var (
	cacheSeed    = maphash.MakeSeed()
	cacheEntries [cacheSlots]atomic.Pointer[cacheEntry]
	cacheSeen    [cacheSlots]atomic.Uint64 // the hash last seen in each slot
	addrEntries  [1 << addrBits]atomic.Pointer[cacheEntry]
)
