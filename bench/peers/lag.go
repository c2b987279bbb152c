package main

import (
	"context"
	"fmt"
	"time"

	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

// lag runs scenario 6 on one cluster shared by every contender (no fault is
// injected, and each trial uses keys of its own): one replica applies WAL
// lagDelay late (recovery_min_apply_delay), first node1, then node2, so that
// a contender that reads from one replica only is measured against both.
// Under the mixed load, each trial writes a key and reads it back at once;
// a read that does not find it is stale. Contenders with a read-your-writes
// feature run the trials again with it.
func (b *bench) lag(ctx context.Context, tag string) error {
	c, err := b.cluster(ctx)
	if err != nil {
		return err
	}
	defer clusters.close(c)
	n1, n2 := c.Nodes()[1], c.Nodes()[2]
	for _, key := range b.cfg.peers {
		k := findContender(key)
		b.log.printf("%s · 6 lag · %s", tag, key)
		if err := b.lagContender(ctx, c, k); err != nil {
			if ctx.Err() != nil {
				return err
			}
			b.res.fail(scLag, key, err)
			b.log.printf("  %s: %v", key, err)
		}
		for _, n := range []*pgcluster.Node{n1, n2} {
			if err := n.SetApplyDelay(ctx, 0); err != nil {
				return err
			}
		}
		if err := waitCaughtUp(ctx, c, b.p.setupTimeout); err != nil {
			return err
		}
	}
	return nil
}

// lagKeys hands out keys no trial used before.
var lagKeys int64

func (b *bench) lagContender(ctx context.Context, c *pgcluster.Cluster, k *contender) error {
	n0, n1, n2 := c.Nodes()[0], c.Nodes()[1], c.Nodes()[2]
	cl, err := k.open(n0, []*pgcluster.Node{n1, n2})
	if err != nil {
		return fmt.Errorf("open %s: %w", k.key, err)
	}
	defer closeBounded(cl, 10*time.Second)
	l := startLoad(cl, b.p)
	defer l.stop(5 * time.Second)
	if err := waitFor(ctx, b.p.setupTimeout, "the load to start", func() bool {
		w, r := l.counts(n0.Name())
		return w >= b.p.warmWrites && r >= b.p.warmWrites
	}); err != nil {
		return err
	}
	type mode struct {
		name string
		wrap func(context.Context) context.Context
	}
	modes := []mode{{name: "without"}}
	if k.newRYW != nil {
		modes = append(modes, mode{name: "with"})
	}
	for _, delayed := range []*pgcluster.Node{n1, n2} {
		other := n1
		if delayed == n1 {
			other = n2
		}
		if err := b.setDelay(ctx, n0, delayed, other); err != nil {
			return err
		}
		for _, m := range modes {
			wrap := func(ctx context.Context) context.Context { return ctx }
			if m.name == "with" {
				wrap = k.newRYW() // a fresh session: one user
			}
			var stale, staleDelayed, onReplica, failed int
			var readTimes []float64 // seconds, each read-back
			errs := errKinds{}
			for range b.p.lagTrials {
				lagKeys++
				key := lagKeys
				tctx, cancel := context.WithTimeout(ctx, 2*b.p.callTimeout)
				wctx := wrap(tctx)
				node, found := "", false
				err := cl.put(wctx, key)
				if err == nil {
					began := time.Now()
					node, found, err = cl.get(wctx, key)
					readTimes = append(readTimes, time.Since(began).Seconds())
				}
				cancel()
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if err != nil {
					failed++
					errs.add(err)
					continue
				}
				if !found {
					stale++
					if node == delayed.Name() {
						staleDelayed++
					}
				}
				if node != n0.Name() {
					onReplica++
				}
			}
			suffix := m.name + "." + delayed.Name()
			b.res.put(scLag, k.key, "stale."+suffix, float64(stale))
			b.res.put(scLag, k.key, "staleDelayed."+suffix, float64(staleDelayed))
			b.res.put(scLag, k.key, "replica."+suffix, float64(onReplica))
			b.res.put(scLag, k.key, "trials."+suffix, float64(b.p.lagTrials-failed))
			b.res.put(scLag, k.key, "failed."+suffix, float64(failed))
			b.res.put(scLag, k.key, "readTime."+suffix, medianOf(readTimes))
			b.res.errs(scLag, k.key, "trials", errs)
			b.log.printf("  %s: %s delayed, %s read-your-writes: %d of %d reads stale (%d on %s), %d served by replicas",
				k.key, delayed.Name(), m.name, stale, b.p.lagTrials-failed, staleDelayed, delayed.Name(), onReplica)
		}
	}
	return nil
}

// setDelay makes delayed apply WAL lagDelay late and other at once, and
// returns once a row written on the primary is seen on other but not yet on
// delayed (the setting took effect).
func (b *bench) setDelay(ctx context.Context, primary, delayed, other *pgcluster.Node) error {
	if err := other.SetApplyDelay(ctx, 0); err != nil {
		return err
	}
	if err := delayed.SetApplyDelay(ctx, b.p.lagDelay); err != nil {
		return err
	}
	for attempt := 0; attempt < 20; attempt++ {
		var id int64
		if err := primary.QueryRow(ctx, "INSERT INTO "+markTable+" DEFAULT VALUES RETURNING id", &id); err != nil {
			return err
		}
		has := func(n *pgcluster.Node) (bool, error) {
			var ok bool
			err := n.QueryRow(ctx, fmt.Sprintf("SELECT EXISTS (SELECT 1 FROM %s WHERE id = %d)", markTable, id), &ok)
			return ok, err
		}
		var last error
		if err := waitFor(ctx, 5*time.Second, other.Name()+" to replay a row", func() bool {
			ok, err := has(other)
			last = err
			return ok
		}); err != nil {
			return fmt.Errorf("%w (last error: %v)", err, last)
		}
		ok, err := has(delayed)
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("recovery_min_apply_delay on %s did not take effect", delayed.Name())
}
