package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

// cluster starts a primary + 2 replicas, creates the tables of the load and
// waits until the replicas have them. The caller removes it with clusters.close.
func (b *bench) cluster(ctx context.Context) (*pgcluster.Cluster, error) {
	began := time.Now()
	c, err := clusters.start(ctx)
	if err != nil {
		return nil, err
	}
	n0 := c.Primary()
	for _, ddl := range []string{
		"CREATE TABLE " + loadTable + " (id bigserial PRIMARY KEY, v bigint, node text DEFAULT current_setting('cluster_name'), at timestamptz DEFAULT clock_timestamp())",
		"CREATE TABLE " + rwTable + " (k bigint PRIMARY KEY, node text DEFAULT current_setting('cluster_name'))",
		"CREATE TABLE " + markTable + " (id bigserial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())",
	} {
		if err := n0.Exec(ctx, ddl); err != nil {
			clusters.close(c)
			return nil, err
		}
	}
	if err := waitCaughtUp(ctx, c, b.p.setupTimeout); err != nil {
		clusters.close(c)
		return nil, err
	}
	if b.meta.pgVersion == "" {
		var v string
		if err := n0.QueryRow(ctx, "SHOW server_version", &v); err == nil {
			b.meta.pgVersion = v
		}
	}
	b.log.printf("  cluster: primary + 2 replicas up on %s, %s, %s in %v", c.Nodes()[0].Addr(), c.Nodes()[1].Addr(), c.Nodes()[2].Addr(),
		time.Since(began).Round(time.Millisecond))
	return c, nil
}

// waitCaughtUp waits until every replica has replayed all the WAL the
// primary has written.
func waitCaughtUp(ctx context.Context, c *pgcluster.Cluster, timeout time.Duration) error {
	var last error
	err := waitFor(ctx, timeout, "the replicas to catch up with the primary", func() bool {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var lsn string
		if last = c.Primary().QueryRow(qctx, "SELECT pg_current_wal_lsn()::text", &lsn); last != nil {
			return false
		}
		for _, r := range c.Replicas() {
			var behind bool
			if last = r.QueryRow(qctx, "SELECT coalesce(pg_last_wal_replay_lsn() < '"+lsn+"'::pg_lsn, true)", &behind); last != nil || behind {
				return false
			}
		}
		return true
	})
	if err != nil && last != nil {
		err = fmt.Errorf("%w (last error: %v)", err, last)
	}
	return err
}

// promote promotes n without waiting (pg_promote(false)) and watches it over
// one connection every millisecond: it returns when n first reported that it
// is out of recovery, the moment it could take writes.
func promote(ctx context.Context, n *pgcluster.Node, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	h, err := n.Open()
	if err != nil {
		return time.Time{}, err
	}
	defer h.Close()
	conn, err := h.Conn(ctx)
	if err != nil {
		return time.Time{}, err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_promote(false)"); err != nil {
		return time.Time{}, fmt.Errorf("promote %s: %w", n.Name(), err)
	}
	for {
		var rec bool
		if err := conn.QueryRowContext(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
			return time.Time{}, fmt.Errorf("promote %s: %w", n.Name(), err)
		}
		if !rec {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("promote %s: %w", n.Name(), ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// closeBounded closes a client, waiting at most d: a client stuck on a
// frozen node must not stall the run (its cluster is removed next, which
// ends every connection).
func closeBounded(c client, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- c.close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return errors.New("close did not return in " + d.String())
	}
}
