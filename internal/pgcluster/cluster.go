// Package pgcluster starts a real PostgreSQL primary and N streaming replicas
// for tests and examples, and injects faults into them: crash, stop/start,
// freeze/thaw, promote, re-point a replica, and replication delay.
//
// Two backends sit behind one API:
//   - "local": the server binaries (initdb, pg_ctl, pg_basebackup, postgres)
//     found on PATH or under /usr/lib/postgresql/*/bin; as root they run as
//     the postgres user. Each node listens on a free 127.0.0.1 port and keeps
//     its data in a temp dir.
//   - "docker": testcontainers-go with the image named by DBROUTER_PG_IMAGE
//     (default postgres:16), which must already be on the engine: pgcluster
//     never pulls. Nodes are reached only through ports published on
//     127.0.0.1. Before testcontainers-go reads its configuration, the
//     backend sets TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1 and
//     TESTCONTAINERS_RYUK_DISABLED=true in the process environment when they
//     are unset (Close removes every container and network itself); values
//     already set are kept, but a host override other than 127.0.0.1 or
//     localhost makes Start fail.
//
// DBROUTER_TEST_BACKEND=local|docker picks one; by default local binaries
// when found, else Docker.
//
// Every node is started with cluster_name set to its Name, so
// current_setting('cluster_name') tells, server-side, which node served a
// query on both backends.
//
// StartBouncer puts a PgBouncer (the local pgbouncer binary) in front of a
// node of either backend; StartBouncers one in front of each node.
//
// StartPatroni starts another kind of cluster: one etcd and N Patroni
// members (local binaries only; .ci/patroni-setup.sh installs them), for
// tests of a discovery source that reads Patroni's GET /cluster. Its
// members' servers also carry their names in cluster_name.
package pgcluster

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// Backend names.
const (
	BackendLocal  = "local"
	BackendDocker = "docker"
)

// Options configure Start.
type Options struct {
	// Replicas is the number of streaming replicas. Zero means none.
	Replicas int
	// Backend is BackendLocal or BackendDocker. Empty: DBROUTER_TEST_BACKEND,
	// else local binaries when found, else Docker.
	Backend string
	// Image is the docker image. Empty: DBROUTER_PG_IMAGE, else "postgres:16".
	Image string
	// Logf, when set, receives progress lines (e.g. t.Logf).
	Logf func(format string, args ...any)
}

// ErrNoBackend is returned by Start when neither PostgreSQL server binaries
// nor a Docker engine is available.
var ErrNoBackend = errors.New("pgcluster: no backend: install PostgreSQL server binaries " +
	"(initdb, pg_ctl, pg_basebackup on PATH or under /usr/lib/postgresql/*/bin, e.g. apt-get install postgresql) " +
	"or run a Docker engine and set DBROUTER_TEST_BACKEND=docker")

// Cluster is a running primary and its replicas. Nodes()[0] is the node
// started as primary (or, after FailOver, the one promoted); the rest are
// its replicas.
type Cluster struct {
	backend string
	nodes   []*Node
	retired []*Node // old primaries FailOver stopped, for Close only
	impl    clusterImpl
	logf    func(format string, args ...any)
}

// Node is one PostgreSQL server of a Cluster.
type Node struct {
	c    *Cluster
	name string // also its cluster_name setting
	host string // always 127.0.0.1
	port int    // port on 127.0.0.1
	impl nodeImpl
}

// clusterImpl is what a backend provides for the cluster as a whole.
type clusterImpl interface {
	// close stops every node and removes every resource (dirs, containers,
	// networks). It must work on a half-started cluster.
	close(ctx context.Context) error
}

// nodeImpl is what a backend provides for one node.
type nodeImpl interface {
	crash(ctx context.Context) error // immediate stop (pg_ctl -m immediate / container kill)
	kill9(ctx context.Context) error // kill -9 of the postmaster / container kill
	stop(ctx context.Context) error  // clean (fast) shutdown
	start(ctx context.Context) error // start again with the same data; returns once it accepts connections
	freeze(ctx context.Context) error
	thaw(ctx context.Context) error
	// conninfo is the primary_conninfo another node uses to stream from this one.
	conninfo() string
}

// Start starts a primary and opts.Replicas streaming replicas and returns once
// every replica streams from the primary.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Replicas < 0 {
		return nil, fmt.Errorf("pgcluster: Replicas = %d, want >= 0", opts.Replicas)
	}
	backend := opts.Backend
	if backend == "" {
		backend = os.Getenv("DBROUTER_TEST_BACKEND")
	}
	if backend == "" {
		if localAvailable() {
			backend = BackendLocal
		} else if dockerAvailable() {
			backend = BackendDocker
		} else {
			return nil, ErrNoBackend
		}
	}
	c := &Cluster{backend: backend, logf: opts.Logf}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	var err error
	switch backend {
	case BackendLocal:
		err = startLocal(ctx, c, opts)
	case BackendDocker:
		err = startDocker(ctx, c, opts)
	default:
		return nil, fmt.Errorf("pgcluster: unknown backend %q (want %q or %q)", backend, BackendLocal, BackendDocker)
	}
	if err != nil {
		if c.impl != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err = errors.Join(err, c.impl.close(cctx))
		}
		return nil, err
	}
	for _, r := range c.nodes[1:] {
		if err := r.WaitStreaming(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// StartT starts a cluster for a test, fails the test loudly when it cannot,
// and closes the cluster when the test ends (also when it fails).
func StartT(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("pgcluster: start: %v", err)
	}
	t.Logf("pgcluster: %s backend: primary + %d replicas up in %v", c.backend, opts.Replicas, time.Since(began).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("pgcluster: close: %v", err)
		}
	})
	return c
}

// Backend returns the backend in use.
func (c *Cluster) Backend() string { return c.backend }

// Nodes returns the nodes; [0] was started as primary. The slice is a copy.
func (c *Cluster) Nodes() []*Node { return append([]*Node(nil), c.nodes...) }

// Primary returns the node started as primary (Nodes()[0]).
func (c *Cluster) Primary() *Node { return c.nodes[0] }

// Replicas returns the nodes started as replicas. The slice is a copy.
func (c *Cluster) Replicas() []*Node { return append([]*Node(nil), c.nodes[1:]...) }

// DSNs returns the primary DSN and the replica DSNs.
func (c *Cluster) DSNs() (primary string, replicas []string) {
	for _, n := range c.nodes[1:] {
		replicas = append(replicas, n.DSN())
	}
	return c.nodes[0].DSN(), replicas
}

// FailOver leaves the cluster as a failover whose old primary was
// decommissioned does: it makes the replicas catch up with the primary,
// stops the primary cleanly, promotes to, re-points every other replica to
// it and waits until they stream. The old primary leaves Nodes() (Close
// still removes it): the cluster now runs on the next timeline, to, the new
// Primary(), first.
func (c *Cluster) FailOver(ctx context.Context, to *Node) error {
	old := c.nodes[0]
	i := slices.Index(c.nodes, to)
	if i < 1 {
		return fmt.Errorf("pgcluster: fail over to %s: not a replica of this cluster", to.name)
	}
	var lsn string
	if err := old.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text", &lsn); err != nil {
		return err
	}
	for _, r := range c.nodes[1:] {
		if err := r.poll(ctx, "replayed "+lsn, func(ctx context.Context) (bool, error) {
			var ok bool
			err := r.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= '"+lsn+"'::pg_lsn", &ok)
			return err == nil && ok, err
		}); err != nil {
			return err
		}
	}
	if err := old.Stop(ctx); err != nil {
		return err
	}
	if err := to.Promote(ctx); err != nil {
		return err
	}
	rest := slices.Delete(slices.Clone(c.nodes[1:]), i-1, i)
	for _, r := range rest {
		if err := r.Repoint(ctx, to); err != nil {
			return err
		}
	}
	for _, r := range rest {
		if err := r.WaitStreaming(ctx); err != nil {
			return err
		}
	}
	c.retired = append(c.retired, old)
	c.nodes = append([]*Node{to}, rest...)
	c.logf("pgcluster: failed over from %s to %s: %s primary, %d replicas on the next timeline", old.name, to.name, to.name, len(rest))
	return nil
}

// Close stops every node and removes every resource. It is idempotent.
func (c *Cluster) Close() error {
	if c.impl == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := c.impl.close(ctx)
	c.impl = nil
	return err
}

// Name returns the node's name, which is also its cluster_name setting.
func (n *Node) Name() string { return n.name }

// Addr returns "127.0.0.1:PORT", where the node listens for clients.
func (n *Node) Addr() string { return fmt.Sprintf("%s:%d", n.host, n.port) }

// Port returns the port on 127.0.0.1.
func (n *Node) Port() int { return n.port }

// DSN returns a pgx URL for the node (user postgres, database postgres, no password).
func (n *Node) DSN() string { return n.DSNFor(n.host, n.port) }

// DSNFor returns the node's DSN with another address, e.g. a proxy in front of it.
func (n *Node) DSNFor(host string, port int) string {
	return fmt.Sprintf("postgres://postgres@%s:%d/postgres?sslmode=disable&connect_timeout=5", host, port)
}

// Crash stops the node at once, as a power cut would (pg_ctl stop -m immediate / container kill).
// A node that is not running is left as it is.
func (n *Node) Crash(ctx context.Context) error { return n.wrap("crash", n.impl.crash(ctx)) }

// Kill kills the node's postmaster with SIGKILL, as kill -9 (or the OOM
// killer) would, and returns once every process of the node has exited: its
// backends end by themselves when they see the postmaster gone (a statement
// in flight may finish first); any still there after a few seconds are
// killed too. On the docker backend it is Crash (the container's postgres is
// its PID 1). Start brings it back through crash recovery, a crashed
// primary as a primary on its old timeline.
func (n *Node) Kill(ctx context.Context) error { return n.wrap("kill", n.impl.kill9(ctx)) }

// Stop shuts the node down cleanly.
func (n *Node) Stop(ctx context.Context) error { return n.wrap("stop", n.impl.stop(ctx)) }

// Start starts a stopped or crashed node with its data and waits until it accepts connections.
// A crashed primary comes back as a primary on its old timeline.
func (n *Node) Start(ctx context.Context) error { return n.wrap("start", n.impl.start(ctx)) }

// Freeze suspends every process of the node (SIGSTOP / container pause): it
// accepts TCP connections but answers nothing.
func (n *Node) Freeze(ctx context.Context) error { return n.wrap("freeze", n.impl.freeze(ctx)) }

// Thaw resumes a frozen node.
func (n *Node) Thaw(ctx context.Context) error { return n.wrap("thaw", n.impl.thaw(ctx)) }

func (n *Node) wrap(op string, err error) error {
	if err != nil {
		return fmt.Errorf("pgcluster: %s %s: %w", op, n.name, err)
	}
	return nil
}

// Open opens a *sql.DB on the node through pgx. The caller closes it.
func (n *Node) Open() (*sql.DB, error) { return sql.Open("pgx", n.DSN()) }

// Exec runs one statement on the node over a short-lived connection.
func (n *Node) Exec(ctx context.Context, query string, args ...any) error {
	db, err := n.Open()
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, query, args...)
	return n.wrap("exec", err)
}

// QueryRow runs a one-row query on the node over a short-lived connection and scans it into dest.
func (n *Node) QueryRow(ctx context.Context, query string, dest ...any) error {
	db, err := n.Open()
	if err != nil {
		return err
	}
	defer db.Close()
	return n.wrap("query", db.QueryRowContext(ctx, query).Scan(dest...))
}

// Promote promotes a replica (SELECT pg_promote(true, 60)) and returns once it
// accepts writes.
func (n *Node) Promote(ctx context.Context) error {
	var ok bool
	if err := n.QueryRow(ctx, "SELECT pg_promote(true, 60)", &ok); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("pgcluster: promote %s: pg_promote returned false", n.name)
	}
	return nil
}

// InRecovery reports whether the node is a replica (pg_is_in_recovery()).
func (n *Node) InRecovery(ctx context.Context) (bool, error) {
	var r bool
	err := n.QueryRow(ctx, "SELECT pg_is_in_recovery()", &r)
	return r, err
}

// Repoint makes a replica stream from primary: ALTER SYSTEM SET
// primary_conninfo + pg_reload_conf(). It does not wait for streaming; see
// WaitStreaming.
func (n *Node) Repoint(ctx context.Context, primary *Node) error {
	ci := primary.impl.conninfo()
	if err := n.Exec(ctx, fmt.Sprintf("ALTER SYSTEM SET primary_conninfo = '%s'", ci)); err != nil {
		return err
	}
	return n.Exec(ctx, "SELECT pg_reload_conf()")
}

// SetApplyDelay sets recovery_min_apply_delay on a replica (0 removes it) and
// reloads the configuration.
func (n *Node) SetApplyDelay(ctx context.Context, d time.Duration) error {
	if err := n.Exec(ctx, fmt.Sprintf("ALTER SYSTEM SET recovery_min_apply_delay = '%dms'", d.Milliseconds())); err != nil {
		return err
	}
	return n.Exec(ctx, "SELECT pg_reload_conf()")
}

// WaitReady polls until the node accepts connections and answers a query.
func (n *Node) WaitReady(ctx context.Context) error {
	return n.poll(ctx, "ready", func(ctx context.Context) (bool, error) {
		var one int
		err := n.QueryRow(ctx, "SELECT 1", &one)
		return err == nil, err
	})
}

// WaitStreaming polls until the replica's WAL receiver reports status 'streaming'.
func (n *Node) WaitStreaming(ctx context.Context) error {
	return n.poll(ctx, "streaming", func(ctx context.Context) (bool, error) {
		var streaming bool
		err := n.QueryRow(ctx, "SELECT count(*) > 0 FROM pg_stat_wal_receiver WHERE status = 'streaming'", &streaming)
		return err == nil && streaming, err
	})
}

func (n *Node) poll(ctx context.Context, what string, cond func(context.Context) (bool, error)) error {
	return poll(ctx, n.name, what, cond)
}

// poll calls cond every 50ms, each call with a 5s timeout, until it reports
// true, and gives up after two minutes or when ctx ends; the error says
// "WHO not WHAT" and carries the last error cond returned.
func poll(ctx context.Context, who, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last error
	for {
		qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := cond(qctx)
		qcancel()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: %s not %s: %w (last error: %v)", who, what, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
