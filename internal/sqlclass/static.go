package sqlclass

import (
	"os"
	"strconv"
	"strings"
	"unsafe"
)

// Queries are mostly string constants, whose bytes the linker puts in the
// executable's read-only data: they are never written and never freed, so
// two strings there with the same address and length have the same bytes,
// for as long as the process runs. Classify trusts an address there without
// comparing the text; anywhere else (heap, stack, a buffer converted with
// unsafe.String) it compares the whole text.

// span is an address range [lo, hi).
type span struct{ lo, hi uintptr }

// readOnly are the executable's mappings that no one can write to. Empty
// where they cannot be learned (not Linux, no /proc): then every lookup
// compares the text.
var readOnly = executableReadOnly()

// anchor is a string constant, to find the executable's mappings by.
const anchor = "sqlclass: a string constant in read-only data"

// inReadOnly reports whether the bytes of s lie in the executable's
// read-only mappings.
func inReadOnly(s string) bool {
	if len(s) == 0 {
		return false
	}
	lo := uintptr(unsafe.Pointer(unsafe.StringData(s)))
	hi := lo + uintptr(len(s))
	for _, r := range readOnly {
		if lo >= r.lo && hi <= r.hi {
			return true
		}
	}
	return false
}

// executableReadOnly reads /proc/self/maps for the mappings of the file
// that holds anchor's bytes, and returns those without write permission.
func executableReadOnly() []span {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil
	}
	a := uintptr(unsafe.Pointer(unsafe.StringData(anchor)))
	type mapping struct {
		span
		perms, file string
	}
	var all []mapping
	file := ""
	for _, line := range strings.Split(string(maps), "\n") {
		// 00540000-006b4000 r--p 00140000 fe:00 10001714   /path/to/exe
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		from, to, ok := strings.Cut(f[0], "-")
		lo, err1 := strconv.ParseUint(from, 16, 64)
		hi, err2 := strconv.ParseUint(to, 16, 64)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		m := mapping{span{uintptr(lo), uintptr(hi)}, f[1], f[4] + " " + strings.Join(f[5:], " ")}
		all = append(all, m)
		if a >= m.lo && a < m.hi {
			file = m.file
		}
	}
	var spans []span
	for _, m := range all {
		if m.file == file && file != "" && m.perms[0] == 'r' && m.perms[1] == '-' {
			spans = append(spans, m.span)
		}
	}
	return spans
}
