package sqlclass

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

func TestClassifyAgreesWithIsReadOnly(t *testing.T) {
	queries := []string{
		"SELECT 1", "select * from t for update", "INSERT INTO t VALUES (1)", "SELECT nextval('s')",
		"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "SELECT 'a''; delete'", "select 1; select 2",
		strings.Repeat("SELECT 1 + ", 500) + "1", "", "-- only a comment",
	}
	for range 3 { // first sight, admission, hits
		for _, q := range queries {
			if got, want := Classify(q), IsReadOnly(q); got != want {
				t.Errorf("Classify(%.40q) = %v, IsReadOnly = %v", q, got, want)
			}
		}
	}
}

func TestClassifyHitsDoNotAllocate(t *testing.T) {
	q := "SELECT id, name FROM users WHERE id = $1"
	Classify(q)
	Classify(q)
	if n := testing.AllocsPerRun(100, func() { Classify(q) }); n != 0 {
		t.Errorf("a cached query allocates %v times", n)
	}
	// One-off statements are never admitted. They are made before the
	// measurement (fmt's printer pool, emptied by every GC, would allocate
	// in it now and then), and each run of the test makes new ones.
	oneOffRuns++
	qs := make([]string, 101) // AllocsPerRun calls once more than it is asked to
	for i := range qs {
		qs[i] = fmt.Sprintf("SELECT /* one-off %d */ %d", oneOffRuns, i)
	}
	i := 0
	if n := testing.AllocsPerRun(len(qs)-1, func() {
		Classify(qs[i])
		i++
	}); n != 0 {
		t.Errorf("one-off statements allocate %v times in Classify", n)
	}
}

// oneOffRuns counts the runs of TestClassifyHitsDoNotAllocate (-count).
var oneOffRuns int

func TestClassifyConcurrently(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				q := fmt.Sprintf("SELECT %d FROM t%d", i%50, g%2)
				w := fmt.Sprintf("DELETE FROM t%d WHERE id = %d", g%2, i%50)
				if !Classify(q) || Classify(w) {
					t.Errorf("wrong answer for %q or %q", q, w)
					return
				}
			}
		})
	}
	wg.Wait()
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{"SELECT 1", "DELETE FROM t", "select $$;$$", "select 1 --"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		want := IsReadOnly(q)
		for range 3 {
			if Classify(q) != want {
				t.Fatalf("Classify(%q) != IsReadOnly", q)
			}
		}
	})
}

// A string built in a reused buffer (as some query builders convert bytes
// to a string without copying) comes back at the same address with other
// bytes: the address table must never answer for the old text.
func TestClassifyAddressReusedWithOtherBytes(t *testing.T) {
	read, write := []byte("SELECT * FROM accounts WHERE id = 1"), []byte("DELETE FROM accounts WHERE id = 1 ")
	buf := make([]byte, len(read))
	q := unsafe.String(&buf[0], len(buf))
	for range 3 { // admitted, then found by address
		copy(buf, read)
		if !Classify(q) {
			t.Fatalf("Classify(%q) = false", q)
		}
	}
	copy(buf, write) // same address and length, a write now
	if Classify(q) {
		t.Fatalf("Classify(%q) = true: answered for the old text at that address", q)
	}
}

func TestInReadOnly(t *testing.T) {
	const constant = "SELECT id FROM accounts WHERE owner = $1"
	if !inReadOnly(constant) {
		t.Fatalf("a string constant is not seen in read-only memory (mappings %x)", readOnly)
	}
	if inReadOnly(strings.Clone(constant)) {
		t.Error("a heap string is taken for read-only memory")
	}
	buf := []byte(constant)
	buf[0] = 's' // written to, so the compiler cannot share the constant's bytes
	if inReadOnly(unsafe.String(&buf[0], len(buf))) {
		t.Error("a string over a byte slice is taken for read-only memory")
	}
	if inReadOnly("") {
		t.Error("an empty string is taken for read-only memory")
	}
}
