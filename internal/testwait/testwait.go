// Package testwait is the one polling helper of dbrouter's tests: poll a
// condition with a deadline instead of sleeping and hoping.
package testwait

import (
	"testing"
	"time"
)

// Interval is how often a condition is polled.
const Interval = 5 * time.Millisecond

// For polls cond until it reports true. When timeout passes first it fails
// the test, naming what it waited for and the last error cond returned. Call
// it from the test's own goroutine (it calls t.Fatalf).
func For(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				t.Fatalf("timed out after %v waiting for %s (last error: %v)", timeout, what, last)
			}
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(Interval)
	}
}

// Until is For for a condition that cannot fail.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	For(t, timeout, what, func() (bool, error) { return cond(), nil })
}
