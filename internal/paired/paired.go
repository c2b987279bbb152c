// Package paired measures what a layer costs per call the way a user would:
// the layer and the raw thing it wraps do the same work in one process, in
// interleaved rounds of a fixed duration (the order alternating each round),
// and the figure is the median of the per-round ratios. Interleaving cancels
// most drift (frequency scaling, a noisy neighbour, GC) that separate runs
// of each side would fold into the ratio.
package paired

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure Measure.
type Options struct {
	Rounds     int           // paired rounds; default 21
	Round      time.Duration // each side's time per round; default 40ms
	Goroutines int           // callers per side; default 1
}

// Result is what Measure found: per round, each side's nanoseconds per call
// and their ratio (subject / raw).
type Result struct {
	Raw, Subject, Ratio []float64
}

// Median returns the median of raw and subject ns per call and of the ratios.
func (r Result) Median() (raw, subject, ratio float64) {
	return median(r.Raw), median(r.Subject), median(r.Ratio)
}

// String is "raw 1,145 ns, subject 1,190 ns, ratio 1.04".
func (r Result) String() string {
	raw, subj, ratio := r.Median()
	return fmt.Sprintf("raw %s ns, subject %s ns, ratio %.3f", commas(raw), commas(subj), ratio)
}

// Measure runs raw and subject in paired rounds and returns their costs. An
// error from either stops the measurement and is returned.
func Measure(o Options, raw, subject func() error) (Result, error) {
	if o.Rounds <= 0 {
		o.Rounds = 21
	}
	if o.Round <= 0 {
		o.Round = 40 * time.Millisecond
	}
	if o.Goroutines <= 0 {
		o.Goroutines = 1
	}
	// Warm both up (pools, caches) for a round each before counting.
	if _, err := run(o, raw); err != nil {
		return Result{}, err
	}
	if _, err := run(o, subject); err != nil {
		return Result{}, err
	}
	var res Result
	for i := range o.Rounds {
		var a, b float64
		var err error
		if i%2 == 0 {
			if a, err = run(o, raw); err == nil {
				b, err = run(o, subject)
			}
		} else {
			if b, err = run(o, subject); err == nil {
				a, err = run(o, raw)
			}
		}
		if err != nil {
			return res, err
		}
		res.Raw = append(res.Raw, a)
		res.Subject = append(res.Subject, b)
		res.Ratio = append(res.Ratio, b/a)
	}
	return res, nil
}

// run calls op from o.Goroutines goroutines for o.Round and returns the
// wall-clock nanoseconds per call.
func run(o Options, op func() error) (float64, error) {
	var (
		calls   atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	start := time.Now()
	deadline := start.Add(o.Round)
	for range o.Goroutines {
		wg.Go(func() {
			n := int64(0)
			for {
				for range 32 {
					if err := op(); err != nil {
						errOnce.Do(func() { first = err })
						calls.Add(n)
						return
					}
					n++
				}
				if time.Now().After(deadline) {
					break
				}
			}
			calls.Add(n)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		return 0, first
	}
	return float64(elapsed.Nanoseconds()) / float64(calls.Load()), nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// commas formats ns with thousands separators: 1145.3 -> "1,145".
func commas(ns float64) string {
	s := fmt.Sprintf("%.0f", ns)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
