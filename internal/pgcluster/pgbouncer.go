package pgcluster

// PgBouncer in front of a node, for tests of dbrouter "behind PgBouncer".
// Each Bouncer is one pgbouncer process started from the local binary (as
// the postgres user when we are root: pgbouncer refuses root), listening on
// a free 127.0.0.1 port, with its files in a temp dir of its own:
//
//	/tmp/pgbouncer-XXXX/pgbouncer.ini   configuration, rewritten by Start, Reload and Repoint
//	/tmp/pgbouncer-XXXX/userlist.txt    auth_file: postgres and BouncerOptions.Users, no passwords
//	/tmp/pgbouncer-XXXX/pgbouncer.log   logfile
//	/tmp/pgbouncer-XXXX/pgbouncer.pid   pidfile
//	/tmp/pgbouncer-XXXX/stderr.log      anything pgbouncer prints before its log is open
//
// Clients are let in with auth_type trust (the user must be in auth_file);
// PgBouncer logs in to the node as the same user without a password, which
// the node trusts from 127.0.0.1. Every database name maps to the node
// ("* = host=… port=…"). The admin console (database "pgbouncer") takes
// postgres as admin_users. The bouncer runs on the host for either backend:
// it reaches a docker node through its published 127.0.0.1 port.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Pool modes of PgBouncer, for BouncerOptions.PoolMode and BouncerUser.PoolMode.
const (
	PoolSession     = "session"     // a server connection per client session (PgBouncer's default)
	PoolTransaction = "transaction" // a server connection per transaction
	PoolStatement   = "statement"   // a server connection per statement; no multi-statement transactions
)

// ErrNoBouncer is returned by StartBouncer when no pgbouncer binary is found.
var ErrNoBouncer = errors.New("pgcluster: no pgbouncer binary: install it with .ci/pgbouncer-setup.sh " +
	"(apt-get install pgbouncer), or name it in DBROUTER_PGBOUNCER")

// ErrBouncerClosed is returned by the methods of a Bouncer that was closed.
var ErrBouncerClosed = errors.New("pgcluster: pgbouncer closed")

// bouncerDefaultBin is where Debian's pgbouncer package installs the binary.
const bouncerDefaultBin = "/usr/sbin/pgbouncer"

// Timeouts of the harness itself (not PgBouncer settings).
const (
	bouncerReadyTimeout = 30 * time.Second // a started pgbouncer answers its console within this
	bouncerStopTimeout  = 10 * time.Second // Close: SIGTERM, then SIGKILL after this
	bouncerPollInterval = 10 * time.Millisecond
)

// findBouncer returns the pgbouncer binary: DBROUTER_PGBOUNCER, else
// pgbouncer on PATH, else bouncerDefaultBin. It is computed once.
var findBouncer = sync.OnceValues(func() (string, error) {
	if p := os.Getenv("DBROUTER_PGBOUNCER"); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			return "", fmt.Errorf("%w: DBROUTER_PGBOUNCER=%s: %w", ErrNoBouncer, p, err)
		}
		return p, nil
	}
	for _, p := range []string{"pgbouncer", bouncerDefaultBin} {
		if abs, err := exec.LookPath(p); err == nil {
			return abs, nil
		}
	}
	return "", fmt.Errorf("%w (looked on PATH and at %s)", ErrNoBouncer, bouncerDefaultBin)
})

// BouncerOptions configure StartBouncer. A zero field leaves PgBouncer's own
// default, named on each field (PgBouncer 1.18).
type BouncerOptions struct {
	// PoolMode is pool_mode: PoolSession, PoolTransaction or PoolStatement.
	// Empty: session.
	PoolMode string
	// PoolSize is default_pool_size: server connections per (database, user)
	// pair. Zero: 20.
	PoolSize int
	// ReservePoolSize is reserve_pool_size: extra server connections a pool
	// may open for a client that waited ReservePoolTimeout. Zero: none.
	ReservePoolSize int
	// ReservePoolTimeout is reserve_pool_timeout. Zero: 5s.
	ReservePoolTimeout time.Duration
	// MaxClientConn is max_client_conn, admin console connections included.
	// Zero: 100.
	MaxClientConn int
	// QueryWaitTimeout is query_wait_timeout: how long a query may wait for a
	// server connection before PgBouncer drops the client. Zero: 120s.
	QueryWaitTimeout time.Duration
	// ServerLoginRetry is server_login_retry: after a failed login to the
	// node, how long new clients get an error at once instead of another
	// attempt. Zero: 15s.
	ServerLoginRetry time.Duration
	// ServerCheckDelay is server_check_delay: how long a released server
	// connection is reused without server_check_query. Zero: 30s (use
	// Settings for 0, "always check").
	ServerCheckDelay time.Duration
	// ServerConnectTimeout is server_connect_timeout. Zero: 15s.
	ServerConnectTimeout time.Duration
	// Users are users let in besides postgres. Each (database, user) pair
	// has a pool of its own, so a probe user is not queued behind the
	// application's clients. Each must exist as a role on the node (create it
	// on the primary; replicas get it through replication).
	Users []BouncerUser
	// Settings are other [pgbouncer] settings, written as given (a value in
	// seconds for a time), after and over the fields above, e.g.
	// {"server_check_delay": "0"}. The settings the harness owns (addresses,
	// files, auth, admin_users) cannot be set.
	Settings map[string]string
	// Logf, when set, receives progress lines (e.g. t.Logf).
	Logf func(format string, args ...any)
}

// BouncerUser is a user PgBouncer lets in besides postgres ([users] section and auth_file).
type BouncerUser struct {
	// Name is the user name: letters, digits and underscores.
	Name string
	// PoolMode is this user's pool_mode. Empty: the bouncer's.
	PoolMode string
	// MaxConnections is max_user_connections: server connections of all this
	// user's pools. Zero: unlimited.
	MaxConnections int
}

// bouncerOwned are the [pgbouncer] settings the harness writes itself.
var bouncerOwned = []string{"listen_addr", "listen_port", "unix_socket_dir", "auth_type", "auth_file",
	"auth_hba_file", "auth_user", "auth_query", "admin_users", "logfile", "pidfile", "user", "conffile"}

// bouncerName matches user names and setting names the harness writes unquoted.
var bouncerName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// validPoolMode reports whether m is a pool mode; empty is valid (the default).
func validPoolMode(m string) bool {
	return m == "" || m == PoolSession || m == PoolTransaction || m == PoolStatement
}

// validate checks the options and returns a copy that shares nothing with o.
func (o BouncerOptions) validate() (BouncerOptions, error) {
	if !validPoolMode(o.PoolMode) {
		return o, fmt.Errorf("pgcluster: bouncer PoolMode %q, want %q, %q or %q", o.PoolMode, PoolSession, PoolTransaction, PoolStatement)
	}
	for name, v := range map[string]int{"PoolSize": o.PoolSize, "ReservePoolSize": o.ReservePoolSize, "MaxClientConn": o.MaxClientConn} {
		if v < 0 {
			return o, fmt.Errorf("pgcluster: bouncer %s = %d, want >= 0", name, v)
		}
	}
	for name, d := range map[string]time.Duration{"ReservePoolTimeout": o.ReservePoolTimeout, "QueryWaitTimeout": o.QueryWaitTimeout,
		"ServerLoginRetry": o.ServerLoginRetry, "ServerCheckDelay": o.ServerCheckDelay, "ServerConnectTimeout": o.ServerConnectTimeout} {
		if d < 0 {
			return o, fmt.Errorf("pgcluster: bouncer %s = %v, want >= 0", name, d)
		}
	}
	seen := map[string]bool{"postgres": true}
	for _, u := range o.Users {
		if !bouncerName.MatchString(u.Name) {
			return o, fmt.Errorf("pgcluster: bouncer user %q: want letters, digits and underscores", u.Name)
		}
		if seen[u.Name] {
			return o, fmt.Errorf("pgcluster: bouncer user %q given twice (postgres is always there)", u.Name)
		}
		seen[u.Name] = true
		if !validPoolMode(u.PoolMode) {
			return o, fmt.Errorf("pgcluster: bouncer user %s: PoolMode %q", u.Name, u.PoolMode)
		}
		if u.MaxConnections < 0 {
			return o, fmt.Errorf("pgcluster: bouncer user %s: MaxConnections = %d, want >= 0", u.Name, u.MaxConnections)
		}
	}
	for k, v := range o.Settings {
		if !bouncerName.MatchString(k) {
			return o, fmt.Errorf("pgcluster: bouncer setting %q: not a setting name", k)
		}
		if slices.Contains(bouncerOwned, k) {
			return o, fmt.Errorf("pgcluster: bouncer setting %s is the harness's own", k)
		}
		if strings.ContainsAny(v, "\n\r") {
			return o, fmt.Errorf("pgcluster: bouncer setting %s: value holds a line break", k)
		}
	}
	o.Users = slices.Clone(o.Users)
	o.Settings = maps.Clone(o.Settings)
	return o, nil
}

// Bouncer is one PgBouncer process in front of a node. Its methods are safe
// for concurrent use.
type Bouncer struct {
	bin      string
	opts     BouncerOptions // validated copy
	cred     *syscall.Credential
	env      []string
	dir      string // temp dir with every file of this bouncer
	confPath string
	authPath string
	logPath  string
	pidPath  string
	errPath  string // stderr of the process
	logf     func(format string, args ...any)
	port     int // set once by StartBouncer, kept across Stop and Start

	mu     sync.Mutex // protects following fields
	node   *Node      // where "*" points
	proc   *bouncerProc
	closed bool
}

// bouncerProc is one run of the pgbouncer process.
type bouncerProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and err is set
	err  error         // cmd.Wait's result
}

// exited reports whether the process has exited.
func (p *bouncerProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// StartBouncer starts a PgBouncer in front of node and returns once its admin
// console answers; the node need not be running. The caller closes it (a
// bouncer outlives its cluster's Close, but not the test process).
func StartBouncer(ctx context.Context, node *Node, opts BouncerOptions) (*Bouncer, error) {
	opts, err := opts.validate()
	if err != nil {
		return nil, err
	}
	bin, err := findBouncer()
	if err != nil {
		return nil, err
	}
	cred, err := postgresCredential("pgbouncer")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgbouncer-")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	b := &Bouncer{
		bin: bin, opts: opts, cred: cred, env: localEnv(dir, cred != nil), dir: dir,
		confPath: filepath.Join(dir, "pgbouncer.ini"), authPath: filepath.Join(dir, "userlist.txt"),
		logPath: filepath.Join(dir, "pgbouncer.log"), pidPath: filepath.Join(dir, "pgbouncer.pid"),
		errPath: filepath.Join(dir, "stderr.log"),
		logf:    opts.Logf, node: node,
	}
	if b.logf == nil {
		b.logf = func(string, ...any) {}
	}
	if err := b.firstStart(ctx); err != nil {
		return nil, errors.Join(err, b.Close())
	}
	return b, nil
}

// StartBouncerT starts a PgBouncer in front of node for a test, fails the
// test loudly when it cannot (a missing pgbouncer included) and closes it
// when the test ends.
func StartBouncerT(t testing.TB, node *Node, opts BouncerOptions) *Bouncer {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := StartBouncer(ctx, node, opts)
	if err != nil {
		t.Fatalf("pgcluster: start pgbouncer: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("pgcluster: close %s: %v", b, err)
		}
	})
	return b
}

// StartBouncers starts one PgBouncer in front of each node of c, in the
// order of c.Nodes(). On failure it closes those it started.
func StartBouncers(ctx context.Context, c *Cluster, opts BouncerOptions) ([]*Bouncer, error) {
	var bs []*Bouncer
	for _, n := range c.Nodes() {
		b, err := StartBouncer(ctx, n, opts)
		if err != nil {
			for _, b := range bs {
				err = errors.Join(err, b.Close())
			}
			return nil, err
		}
		bs = append(bs, b)
	}
	return bs, nil
}

// StartBouncersT is StartBouncers for a test: it fails the test loudly when
// it cannot and closes every bouncer when the test ends.
func StartBouncersT(t testing.TB, c *Cluster, opts BouncerOptions) []*Bouncer {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bs, err := StartBouncers(ctx, c, opts)
	if err != nil {
		t.Fatalf("pgcluster: start pgbouncers: %v", err)
	}
	t.Cleanup(func() {
		for _, b := range bs {
			if err := b.Close(); err != nil {
				t.Errorf("pgcluster: close %s: %v", b, err)
			}
		}
	})
	return bs
}

// String names the bouncer by its address, for logs and errors.
func (b *Bouncer) String() string {
	return fmt.Sprintf("pgbouncer %s", b.Addr())
}

// Port returns the port on 127.0.0.1 where the bouncer listens. It stays
// the same across Stop and Start.
func (b *Bouncer) Port() int { return b.port }

// Addr returns "127.0.0.1:PORT", where the bouncer listens for clients.
func (b *Bouncer) Addr() string { return "127.0.0.1:" + strconv.Itoa(b.port) }

// DSN returns a pgx URL through the bouncer (user postgres, database
// postgres, no password): the node's DSN with the bouncer's address.
func (b *Bouncer) DSN() string { return b.UserDSN("postgres") }

// UserDSN returns the DSN through the bouncer for another user (one of
// BouncerOptions.Users), database postgres.
func (b *Bouncer) UserDSN(user string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", user, b.port)
}

// Open opens a *sql.DB through the bouncer with pgx and its default query
// exec mode (named prepared statements, cached per connection). The caller
// closes it.
//
// Behind transaction or statement pooling that mode fails (42P05, 26000):
// open DSN() + "&default_query_exec_mode=simple_protocol" (or exec, or
// cache_describe) instead. *sql.Stmt (DB.Prepare) makes named statements in
// every mode.
func (b *Bouncer) Open() (*sql.DB, error) { return sql.Open("pgx", b.DSN()) }

// Node returns the node the bouncer points at.
func (b *Bouncer) Node() *Node {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.node
}

// LogPath returns the path of PgBouncer's log file.
func (b *Bouncer) LogPath() string { return b.logPath }

// firstStart picks a free port and starts the process, trying another port
// when pgbouncer could not bind.
func (b *Bouncer) firstStart(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var err error
	for attempt := 1; attempt <= localStartAttempts; attempt++ {
		if b.port, err = freePort(); err != nil {
			return fmt.Errorf("pgcluster: pgbouncer: %w", err)
		}
		if err := b.writeFilesLocked(); err != nil {
			return err
		}
		var logOff int64
		if fi, serr := os.Stat(b.logPath); serr == nil {
			logOff = fi.Size()
		}
		if err = b.startLocked(ctx); err == nil {
			return nil
		}
		if !strings.Contains(readFrom(b.logPath, logOff), "Address already in use") {
			return err
		}
		b.logf("%s: could not bind, trying another port", b)
	}
	return err
}

// Start starts a stopped bouncer again, on the same port and with the node's
// current address, and returns once its admin console answers. It does
// nothing when the bouncer runs, and fails when another process took the
// port meanwhile.
func (b *Bouncer) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrBouncerClosed
	}
	if b.proc != nil && !b.proc.exited() {
		return nil
	}
	if err := b.writeFilesLocked(); err != nil {
		return err
	}
	return b.startLocked(ctx)
}

// startLocked starts the process from the files written and waits until its
// console answers. b.mu must be held.
func (b *Bouncer) startLocked(ctx context.Context) error {
	began := time.Now()
	stderr, err := os.OpenFile(b.errPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	defer stderr.Close() // the child has its own copy
	// Not CommandContext: the process outlives ctx. -q: log to logfile only.
	cmd := exec.Command(b.bin, "-q", b.confPath)
	cmd.Dir = b.dir
	cmd.Env = b.env
	cmd.Stdout, cmd.Stderr = stderr, stderr
	// Pdeathsig: the bouncer dies with the test process, also when that one
	// is killed before Close.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: b.cred, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgcluster: start %s: %w", b, err)
	}
	p := &bouncerProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	b.proc = p

	ctx, cancel := context.WithTimeout(ctx, bouncerReadyTimeout)
	defer cancel()
	var last error
	for {
		if p.exited() {
			b.proc = nil
			return fmt.Errorf("pgcluster: %s exited at start: %w%s", b, p.err, b.logTail())
		}
		if _, last = b.Admin(ctx, "SHOW VERSION"); last == nil {
			break
		}
		select {
		case <-ctx.Done():
			err := fmt.Errorf("pgcluster: %s not answering: %w (last error: %v)%s", b, ctx.Err(), last, b.logTail())
			return errors.Join(err, b.stopLocked(syscall.SIGKILL))
		case <-time.After(bouncerPollInterval):
		}
	}
	b.logf("%s: up in front of %s (%s) in %v", b, b.node.name, b.node.Addr(), since(began))
	return nil
}

// Stop shuts the bouncer down at once (SIGTERM: PgBouncer's immediate
// shutdown), as a crash or a restart of PgBouncer would: every client and
// server connection through it is closed. Start starts it again on the
// same port. A stopped bouncer is left as it is.
func (b *Bouncer) Stop(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrBouncerClosed
	}
	return b.stopCtxLocked(ctx, syscall.SIGTERM)
}

// stopCtxLocked sends sig and waits for the process to exit, or until ctx
// ends, then kills it. b.mu must be held.
func (b *Bouncer) stopCtxLocked(ctx context.Context, sig syscall.Signal) error {
	p := b.proc
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		b.proc = nil
		return nil
	case <-ctx.Done():
	}
	err := fmt.Errorf("pgcluster: stop %s: %w", b, ctx.Err())
	return errors.Join(err, b.stopLocked(syscall.SIGKILL))
}

// stopLocked sends sig and waits for the process to exit (SIGKILL: always
// within a few seconds). b.mu must be held.
func (b *Bouncer) stopLocked(sig syscall.Signal) error {
	ctx, cancel := context.WithTimeout(context.Background(), bouncerStopTimeout)
	defer cancel()
	p := b.proc
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		b.proc = nil
		return nil
	case <-ctx.Done():
	}
	if sig != syscall.SIGKILL {
		return b.stopLocked(syscall.SIGKILL)
	}
	return fmt.Errorf("pgcluster: %s (pid %d) still running after SIGKILL", b, p.cmd.Process.Pid)
}

// Close stops the bouncer and removes its temp dir. It is idempotent.
func (b *Bouncer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	err := b.stopLocked(syscall.SIGTERM)
	if rerr := os.RemoveAll(b.dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("pgcluster: %w", rerr))
	}
	if err == nil {
		b.logf("%s: closed", b)
	}
	return err
}

// Repoint points the bouncer at node (another node, or the same one on a new
// port) and reloads its configuration. Server connections to the old address
// are closed once released (PgBouncer's RELOAD); new ones go to node. A
// stopped bouncer uses node when started.
func (b *Bouncer) Repoint(ctx context.Context, node *Node) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrBouncerClosed
	}
	b.node = node
	return b.reloadLocked(ctx)
}

// Reload rewrites the configuration with the node's current address and
// makes PgBouncer reload it (RELOAD on the admin console): for a node whose
// port changed (a docker node may be published on another port after Start).
func (b *Bouncer) Reload(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrBouncerClosed
	}
	return b.reloadLocked(ctx)
}

// reloadLocked writes the files and, when the process runs, sends RELOAD.
// b.mu must be held.
func (b *Bouncer) reloadLocked(ctx context.Context) error {
	if err := b.writeFilesLocked(); err != nil {
		return err
	}
	if b.proc == nil || b.proc.exited() {
		return nil
	}
	_, err := b.Admin(ctx, "RELOAD")
	return err
}

// Pause runs PAUSE on the admin console: PgBouncer waits for every server
// connection to be released (the transaction to end in transaction mode, the
// session in session mode), closes them, and holds new queries until
// Resume. It returns once that is done or ctx ends.
func (b *Bouncer) Pause(ctx context.Context) error {
	_, err := b.Admin(ctx, "PAUSE")
	return err
}

// Resume runs RESUME on the admin console: queries held by Pause go on.
func (b *Bouncer) Resume(ctx context.Context) error {
	_, err := b.Admin(ctx, "RESUME")
	return err
}

// Admin runs one command on PgBouncer's admin console (database pgbouncer,
// user postgres, simple protocol) over a connection of its own and returns
// the rows, each a map from column name to text value (NULL as "").
// The connection counts against MaxClientConn.
func (b *Bouncer) Admin(ctx context.Context, command string) ([]map[string]string, error) {
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/pgbouncer?sslmode=disable&connect_timeout=5", b.port)
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %s: console: %w", b, err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	results, err := conn.Exec(ctx, command).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %s: %s: %w", b, command, err)
	}
	var rows []map[string]string
	for _, r := range results {
		for _, vals := range r.Rows {
			row := make(map[string]string, len(vals))
			for i, fd := range r.FieldDescriptions {
				row[fd.Name] = string(vals[i])
			}
			rows = append(rows, row)
		}
	}
	return rows, nil
}

// BouncerPool is one row of SHOW POOLS: the pool of one (database, user) pair.
type BouncerPool struct {
	Database, User string
	ClientActive   int           // cl_active: clients linked to a server or idle
	ClientWaiting  int           // cl_waiting: clients that sent a query and wait for a server
	ServerActive   int           // sv_active: server connections linked to a client
	ServerIdle     int           // sv_idle: server connections ready for use
	ServerUsed     int           // sv_used: idle longer than server_check_delay, to be checked first
	ServerTested   int           // sv_tested: running server_reset_query or server_check_query
	ServerLogin    int           // sv_login: logging in to the node
	MaxWait        time.Duration // maxwait + maxwait_us: how long the oldest waiting client has waited
	PoolMode       string
}

// ShowPools runs SHOW POOLS on the admin console.
func (b *Bouncer) ShowPools(ctx context.Context) ([]BouncerPool, error) {
	rows, err := b.Admin(ctx, "SHOW POOLS")
	if err != nil {
		return nil, err
	}
	pools := make([]BouncerPool, 0, len(rows))
	for _, r := range rows {
		pools = append(pools, BouncerPool{
			Database: r["database"], User: r["user"],
			ClientActive: atoi(r["cl_active"]), ClientWaiting: atoi(r["cl_waiting"]),
			ServerActive: atoi(r["sv_active"]), ServerIdle: atoi(r["sv_idle"]), ServerUsed: atoi(r["sv_used"]),
			ServerTested: atoi(r["sv_tested"]), ServerLogin: atoi(r["sv_login"]),
			MaxWait:  time.Duration(atoi(r["maxwait"]))*time.Second + time.Duration(atoi(r["maxwait_us"]))*time.Microsecond,
			PoolMode: r["pool_mode"],
		})
	}
	return pools, nil
}

// Pool returns the SHOW POOLS row of (database, user); ok is false when
// PgBouncer has no such pool (yet).
func (b *Bouncer) Pool(ctx context.Context, database, user string) (p BouncerPool, ok bool, err error) {
	pools, err := b.ShowPools(ctx)
	if err != nil {
		return BouncerPool{}, false, err
	}
	for _, p := range pools {
		if p.Database == database && p.User == user {
			return p, true, nil
		}
	}
	return BouncerPool{}, false, nil
}

// BouncerStats is one row of SHOW STATS: totals since the process started,
// per database.
type BouncerStats struct {
	Database        string
	XactCount       int64         // total_xact_count: transactions pooled
	QueryCount      int64         // total_query_count: queries pooled
	Received, Sent  int64         // total_received, total_sent: bytes from and to clients
	XactTime        time.Duration // total_xact_time: time connected to the node in a transaction
	QueryTime       time.Duration // total_query_time: time actively running queries
	WaitTime        time.Duration // total_wait_time: time clients waited for a server
	AvgQueryPerSec  int64         // avg_query_count over the last stats_period
	AvgXactDuration time.Duration // avg_xact_time over the last stats_period
}

// ShowStats runs SHOW STATS on the admin console.
func (b *Bouncer) ShowStats(ctx context.Context) ([]BouncerStats, error) {
	rows, err := b.Admin(ctx, "SHOW STATS")
	if err != nil {
		return nil, err
	}
	stats := make([]BouncerStats, 0, len(rows))
	for _, r := range rows {
		stats = append(stats, BouncerStats{
			Database:  r["database"],
			XactCount: atoi64(r["total_xact_count"]), QueryCount: atoi64(r["total_query_count"]),
			Received: atoi64(r["total_received"]), Sent: atoi64(r["total_sent"]),
			XactTime:        time.Duration(atoi64(r["total_xact_time"])) * time.Microsecond,
			QueryTime:       time.Duration(atoi64(r["total_query_time"])) * time.Microsecond,
			WaitTime:        time.Duration(atoi64(r["total_wait_time"])) * time.Microsecond,
			AvgQueryPerSec:  atoi64(r["avg_query_count"]),
			AvgXactDuration: time.Duration(atoi64(r["avg_xact_time"])) * time.Microsecond,
		})
	}
	return stats, nil
}

// atoi parses a console value; "" and anything else not a number give 0.
func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// atoi64 is atoi for int64 counters.
func atoi64(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }

// writeFilesLocked writes the configuration and the auth_file for the
// current node address, owned by the user pgbouncer runs as. b.mu must be held.
func (b *Bouncer) writeFilesLocked() error {
	auth := `"postgres" ""` + "\n"
	for _, u := range b.opts.Users {
		auth += fmt.Sprintf("%q \"\"\n", u.Name)
	}
	for path, content := range map[string]string{b.confPath: b.configLocked(), b.authPath: auth} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		if b.cred != nil {
			if err := os.Chown(path, int(b.cred.Uid), int(b.cred.Gid)); err != nil {
				return fmt.Errorf("pgcluster: %w", err)
			}
		}
	}
	if b.cred != nil {
		// The log and the pid file are created by pgbouncer in the temp dir.
		if err := os.Chown(b.dir, int(b.cred.Uid), int(b.cred.Gid)); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
	}
	return nil
}

// configLocked returns pgbouncer.ini for the options and the current node
// address. b.mu must be held.
func (b *Bouncer) configLocked() string {
	o := b.opts
	set := map[string]string{}
	setInt := func(k string, v int) {
		if v != 0 {
			set[k] = strconv.Itoa(v)
		}
	}
	setDur := func(k string, d time.Duration) {
		if d != 0 {
			set[k] = strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
		}
	}
	if o.PoolMode != "" {
		set["pool_mode"] = o.PoolMode
	}
	setInt("default_pool_size", o.PoolSize)
	setInt("reserve_pool_size", o.ReservePoolSize)
	setDur("reserve_pool_timeout", o.ReservePoolTimeout)
	setInt("max_client_conn", o.MaxClientConn)
	setDur("query_wait_timeout", o.QueryWaitTimeout)
	setDur("server_login_retry", o.ServerLoginRetry)
	setDur("server_check_delay", o.ServerCheckDelay)
	setDur("server_connect_timeout", o.ServerConnectTimeout)
	maps.Copy(set, o.Settings)

	var sb strings.Builder
	fmt.Fprintf(&sb, "; written by internal/pgcluster (pgbouncer.go)\n[databases]\n* = host=%s port=%d\n", b.node.host, b.node.port)
	sb.WriteString("\n[users]\n")
	for _, u := range o.Users {
		var s []string
		if u.PoolMode != "" {
			s = append(s, "pool_mode="+u.PoolMode)
		}
		if u.MaxConnections != 0 {
			s = append(s, "max_user_connections="+strconv.Itoa(u.MaxConnections))
		}
		if len(s) > 0 {
			fmt.Fprintf(&sb, "%s = %s\n", u.Name, strings.Join(s, " "))
		}
	}
	fmt.Fprintf(&sb, `
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
admin_users = postgres
logfile = %s
pidfile = %s
`, b.port, b.authPath, b.logPath, b.pidPath)
	for _, k := range slices.Sorted(maps.Keys(set)) {
		fmt.Fprintf(&sb, "%s = %s\n", k, set[k])
	}
	return sb.String()
}

// logTail returns the last lines of PgBouncer's log and of its stderr, for
// error messages.
func (b *Bouncer) logTail() string {
	const maxBytes, maxLines = 8 << 10, 30
	var out string
	for _, path := range []string{b.logPath, b.errPath} {
		log := strings.TrimRight(readFrom(path, -maxBytes), "\n")
		if log == "" {
			continue
		}
		lines := strings.Split(log, "\n")
		if len(lines) > maxLines {
			lines = lines[len(lines)-maxLines:]
		}
		out += fmt.Sprintf("\n--- tail of %s ---\n%s", path, strings.Join(lines, "\n"))
	}
	return out
}
