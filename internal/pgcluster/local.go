package pgcluster

// The local backend: PostgreSQL server binaries run on this machine, one temp
// dir per cluster, one data dir and one server log per node inside it:
//
//	/tmp/pgcluster-XXXX/node0       data dir of the primary
//	/tmp/pgcluster-XXXX/node0.log   its server log (pg_ctl -l)
//	/tmp/pgcluster-XXXX/node1       data dir of a replica (pg_basebackup -R)
//	...
//
// As root every server binary runs as the postgres user (initdb refuses
// root), and the temp dir is owned by it. Each node listens on 127.0.0.1 only,
// on a free port, with no Unix socket; port and cluster_name are passed on the
// command line (pg_ctl -o), so they win over postgresql.conf copied from the
// primary by pg_basebackup and leave postgresql.auto.conf to ALTER SYSTEM
// (Repoint, SetApplyDelay).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// pgBinaries are the absolute paths of the server binaries the local backend runs.
type pgBinaries struct {
	initdb, pgCtl, pgBasebackup, postgres string
}

// pgBinDirGlob is where distribution packages (Debian, Ubuntu) install the
// server binaries of each major version.
const pgBinDirGlob = "/usr/lib/postgresql/*/bin"

// findBinaries returns the server binaries: all four on PATH if they are
// there, else those of the highest version under pgBinDirGlob that has them
// all. It is computed once.
var findBinaries = sync.OnceValues(func() (pgBinaries, error) {
	var b pgBinaries
	lookPath := func(name string) string {
		p, err := exec.LookPath(name)
		if err != nil {
			return ""
		}
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
		return p
	}
	b = pgBinaries{lookPath("initdb"), lookPath("pg_ctl"), lookPath("pg_basebackup"), lookPath("postgres")}
	if b.complete() {
		return b, nil
	}
	dirs, _ := filepath.Glob(pgBinDirGlob)
	slices.SortFunc(dirs, func(a, b string) int { return compareVersions(versionOfBinDir(a), versionOfBinDir(b)) })
	for _, dir := range slices.Backward(dirs) {
		b = pgBinaries{
			initdb:       filepath.Join(dir, "initdb"),
			pgCtl:        filepath.Join(dir, "pg_ctl"),
			pgBasebackup: filepath.Join(dir, "pg_basebackup"),
			postgres:     filepath.Join(dir, "postgres"),
		}
		if b.complete() {
			return b, nil
		}
	}
	return pgBinaries{}, fmt.Errorf("%w (looked on PATH and under %s)", ErrNoBackend, pgBinDirGlob)
})

// complete reports whether every binary exists and is executable.
func (b pgBinaries) complete() bool {
	for _, p := range []string{b.initdb, b.pgCtl, b.pgBasebackup, b.postgres} {
		if p == "" {
			return false
		}
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// versionOfBinDir returns "15" for "/usr/lib/postgresql/15/bin".
func versionOfBinDir(dir string) string { return filepath.Base(filepath.Dir(dir)) }

// compareVersions compares dotted numeric versions ("9.6" < "10" < "15");
// a part that is not a number compares as 0.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return 0
}

// localAvailable reports whether the PostgreSQL server binaries are installed.
func localAvailable() bool {
	_, err := findBinaries()
	return err == nil
}

// Timeouts of the local backend's commands.
const (
	localCmdWaitSecs   = "60"             // pg_ctl -t: how long start/stop may take
	localCmdWaitDelay  = 10 * time.Second // exec.Cmd.WaitDelay: output pipes held by a stray child
	localFreezeTimeout = 5 * time.Second  // how long freeze waits for SIGSTOP to take hold
	localStartAttempts = 5                // first start of a node: tries on another port after a bind failure
)

// localConf is appended to the primary's postgresql.conf before its first
// start; replicas copy it with pg_basebackup. %d is max_wal_senders and
// max_replication_slots. Port and cluster_name are on the command line.
//
// fsync=off is safe against Crash (a killed process, not a power cut: the OS
// page cache survives) and makes initdb, checkpoints and commits cheap.
// synchronous_commit stays on, so a commit that returned survives Crash.
// full_page_writes stays on and wal_log_hints is on for pg_rewind.
const localConf = `
# --- pgcluster ---
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = replica
max_wal_senders = %d
max_replication_slots = %d
hot_standby = on
hot_standby_feedback = on
wal_keep_size = '256MB'
wal_log_hints = on
wal_retrieve_retry_interval = '500ms'
fsync = off
shared_buffers = '32MB'
max_connections = 100
logging_collector = off
`

// localHBA replaces pg_hba.conf: trust for everything from 127.0.0.1.
const localHBA = `# pgcluster: trust on 127.0.0.1 only
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
`

// localCluster implements clusterImpl for the local backend.
type localCluster struct {
	c    *Cluster
	bin  pgBinaries
	cred *syscall.Credential // run server binaries as this user; nil: as ourselves
	env  []string            // environment of every command

	mu     sync.Mutex // protects following fields
	base   string     // temp dir holding every node's data dir and log; "" before created
	nodes  []*localNode
	closed bool
}

// localNode implements nodeImpl for the local backend.
type localNode struct {
	lc      *localCluster
	n       *Node
	dir     string // data dir
	logPath string // server log (pg_ctl -l)

	mu     sync.Mutex // protects following fields
	frozen []int      // pids stopped by freeze, in the order stopped; nil: not frozen
}

var (
	_ clusterImpl = (*localCluster)(nil)
	_ nodeImpl    = (*localNode)(nil)
)

// startLocal starts a primary and opts.Replicas replicas from local binaries.
// It sets c.impl first, so Start can clean up after a failure half-way.
func startLocal(ctx context.Context, c *Cluster, opts Options) error {
	bin, err := findBinaries()
	if err != nil {
		return err
	}
	lc := &localCluster{c: c, bin: bin}
	c.impl = lc

	if lc.cred, err = postgresCredential("the server binaries"); err != nil {
		return err
	}

	base, err := os.MkdirTemp("", "pgcluster-")
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	lc.mu.Lock()
	lc.base = base
	lc.mu.Unlock()
	if lc.cred != nil {
		if err := os.Chown(base, int(lc.cred.Uid), int(lc.cred.Gid)); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
	}
	lc.env = localEnv(base, lc.cred != nil)

	nodes := make([]*Node, 1+opts.Replicas)
	lnodes := make([]*localNode, len(nodes))
	for i := range nodes {
		name := fmt.Sprintf("node%d", i)
		ln := &localNode{lc: lc, dir: filepath.Join(base, name), logPath: filepath.Join(base, name+".log")}
		nodes[i] = &Node{c: c, name: name, host: "127.0.0.1", impl: ln}
		ln.n = nodes[i]
		lnodes[i] = ln
	}
	c.nodes = nodes
	lc.mu.Lock()
	lc.nodes = lnodes
	lc.mu.Unlock()

	primary := lnodes[0]
	began := time.Now()
	if err := primary.initdb(ctx, opts.Replicas); err != nil {
		return err
	}
	c.logf("%s: initdb done in %v", primary.n.name, since(began))
	if err := primary.firstStart(ctx); err != nil {
		return err
	}

	// Replicas in parallel: pg_basebackup, start, wait until ready.
	errs := make([]error, len(lnodes))
	var wg sync.WaitGroup
	for i, r := range lnodes[1:] {
		wg.Go(func() {
			began := time.Now()
			if err := r.basebackup(ctx, primary); err != nil {
				errs[i] = err
				return
			}
			c.logf("%s: pg_basebackup from %s done in %v", r.n.name, primary.n.name, since(began))
			errs[i] = r.firstStart(ctx)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// postgresCredential returns the postgres user's credential when we run as
// root (initdb and pgbouncer refuse root), nil otherwise. what names the
// programs, for the error.
func postgresCredential(what string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: running as root, %s must run as the postgres user: %w", what, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: uid of the postgres user: %w", err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: gid of the postgres user: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// localEnv returns the environment of every command: ours without PG*
// variables (PGDATA, PGPORT, PGHOST... would redirect the tools), with the C
// locale (English messages, a database in the C locale) and, when running as
// another user, HOME set to the temp dir.
func localEnv(base string, otherUser bool) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || k == "LC_ALL" || (otherUser && k == "HOME") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "LC_ALL=C")
	if otherUser {
		env = append(env, "HOME="+base)
	}
	return env
}

// since returns the time since t, rounded for logs.
func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

// initdb creates the primary's data dir and configures it for replicas.
func (ln *localNode) initdb(ctx context.Context, replicas int) error {
	if _, err := ln.run(ctx, ln.lc.bin.initdb, "-D", ln.dir, "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return err
	}
	senders := max(10, 3*replicas+4) // 2 per parallel pg_basebackup -X stream, 1 per streaming replica
	f, err := os.OpenFile(filepath.Join(ln.dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	_, err = fmt.Fprintf(f, localConf, senders, senders)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	// Written as root this stays owned by postgres: WriteFile truncates an existing file.
	if err := os.WriteFile(filepath.Join(ln.dir, "pg_hba.conf"), []byte(localHBA), 0o600); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	return nil
}

// basebackup makes the node's data dir a streaming replica of primary
// (standby.signal and primary_conninfo in postgresql.auto.conf, from -R).
func (ln *localNode) basebackup(ctx context.Context, primary *localNode) error {
	_, err := ln.run(ctx, ln.lc.bin.pgBasebackup, "-h", primary.n.host, "-p", strconv.Itoa(primary.n.port),
		"-U", "postgres", "-D", ln.dir, "-R", "-X", "stream", "-c", "fast", "--no-sync")
	return err
}

// firstStart starts the node on a free port, trying another one when the
// server could not bind, and waits until it answers queries.
func (ln *localNode) firstStart(ctx context.Context) error {
	began := time.Now()
	var err error
	for attempt := 1; attempt <= localStartAttempts; attempt++ {
		var port int
		if port, err = freePort(); err != nil {
			return fmt.Errorf("pgcluster: %s: %w", ln.n.name, err)
		}
		ln.n.port = port
		var logOff int64
		if fi, serr := os.Stat(ln.logPath); serr == nil {
			logOff = fi.Size()
		}
		if err = ln.pgCtlStart(ctx); err == nil {
			break
		}
		if !bindFailed(readFrom(ln.logPath, logOff)) {
			return err
		}
		ln.lc.c.logf("%s: could not bind port %d, trying another one", ln.n.name, port)
	}
	if err != nil {
		return err
	}
	if err := ln.n.WaitReady(ctx); err != nil {
		return fmt.Errorf("%w%s", err, ln.logTail())
	}
	ln.lc.c.logf("%s: up on %s in %v", ln.n.name, ln.n.Addr(), since(began))
	return nil
}

// bindFailed reports whether a server log says the postmaster could not listen.
func bindFailed(log string) bool {
	return strings.Contains(log, "could not bind") ||
		strings.Contains(log, "could not create any TCP/IP sockets") ||
		strings.Contains(log, "Address already in use")
}

// pgCtlStart runs pg_ctl start -w on the node's port with its cluster_name.
// pg_ctl -w returns once postmaster.pid says "ready" (for a replica: accepting
// read-only connections) or the postmaster exited.
func (ln *localNode) pgCtlStart(ctx context.Context) error {
	_, err := ln.run(ctx, ln.lc.bin.pgCtl, "start", "-D", ln.dir, "-l", ln.logPath, "-w", "-t", localCmdWaitSecs,
		"-o", fmt.Sprintf("-p %d -c cluster_name=%s", ln.n.port, ln.n.name))
	return err
}

// pgCtlStop runs pg_ctl stop -w in mode "immediate" or "fast".
func (ln *localNode) pgCtlStop(ctx context.Context, mode string) error {
	_, err := ln.run(ctx, ln.lc.bin.pgCtl, "stop", "-D", ln.dir, "-m", mode, "-w", "-t", localCmdWaitSecs)
	return err
}

// run runs a server binary (as the postgres user when we are root). Its error
// carries the command, its combined output and the tail of the node's server log.
func (ln *localNode) run(ctx context.Context, path string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = ln.lc.base // a dir the postgres user can enter: the tools resolve the cwd
	cmd.Env = ln.lc.env
	cmd.WaitDelay = localCmdWaitDelay
	if ln.lc.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: ln.lc.cred}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("pgcluster: %s: %s %s: %w\n--- output ---\n%s%s",
			ln.n.name, filepath.Base(path), strings.Join(args, " "), err, bytes.TrimSpace(out), ln.logTail())
	}
	return out, nil
}

// logTail returns the last lines of the node's server log, for error messages.
func (ln *localNode) logTail() string { return tailOf(ln.logPath) }

// tailOf returns the last lines of a log file, headed by its path, for error
// messages; "" when it is empty or cannot be read.
func tailOf(path string) string {
	const maxBytes, maxLines = 8 << 10, 40
	log := readFrom(path, -maxBytes)
	if log == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return fmt.Sprintf("\n--- tail of %s ---\n%s", path, strings.Join(lines, "\n"))
}

// readFrom returns a file's content from offset off, or the last -off bytes
// when off is negative; "" when it cannot be read.
func readFrom(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	if off < 0 {
		off = max(0, fi.Size()+off)
	}
	if off >= fi.Size() {
		return ""
	}
	buf := make([]byte, fi.Size()-off)
	n, _ := f.ReadAt(buf, off)
	return string(buf[:n])
}

// crash stops the node at once (pg_ctl stop -m immediate): no shutdown
// checkpoint, crash recovery on the next start. A frozen node is thawed first;
// a node that is not running is left as it is.
func (ln *localNode) crash(ctx context.Context) error {
	if err := ln.thaw(ctx); err != nil {
		return err
	}
	if _, ok := ln.livePostmaster(); !ok {
		return nil
	}
	return ln.pgCtlStop(ctx, "immediate")
}

// localKillGrace is how long Kill waits for a killed postmaster's children
// to exit by themselves before it kills them.
const localKillGrace = 5 * time.Second

// kill9 sends SIGKILL to the postmaster and waits until it and its children
// are gone; the children exit when they see the postmaster die, and are
// killed after localKillGrace. Its children are the processes it had when
// it was killed and any process still working in the data directory (one
// forked as the kill landed, or one the first look at /proc missed: CI once
// found a child alive after Kill had returned). It waits for the postmaster
// to be reaped too (by init, to which pg_ctl left it): until then its pid
// still answers kill(pid, 0), and a new postmaster would take
// postmaster.pid for a live one's. A frozen node is thawed first; a node
// that is not running is left as it is.
func (ln *localNode) kill9(ctx context.Context) error {
	if err := ln.thaw(ctx); err != nil {
		return err
	}
	pm, ok := ln.livePostmaster()
	if !ok {
		return nil
	}
	pmProc, _ := procOf(pm)
	var kids []proc // by pid and start time: a busy machine soon reuses an exited child's pid
	for _, pid := range childrenOf(pm) {
		if p, ok := procOf(pid); ok {
			kids = append(kids, p)
		}
	}
	if err := syscall.Kill(pm, syscall.SIGKILL); err != nil {
		return fmt.Errorf("SIGKILL postmaster %d: %w", pm, err)
	}
	gone := func() bool {
		if p, ok := procOf(pm); ok && p == pmProc {
			return false // running, or a zombie not reaped yet (its pid taken since is another process)
		}
		for _, p := range kids {
			if p.alive() {
				return false
			}
		}
		return len(procsWorkingIn(ln.dir)) == 0
	}
	deadline := time.Now().Add(localKillGrace)
	for !gone() {
		if time.Now().After(deadline) {
			for _, p := range kids {
				if p.alive() {
					_ = syscall.Kill(p.pid, syscall.SIGKILL)
				}
			}
			for _, pid := range procsWorkingIn(ln.dir) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			deadline = time.Now().Add(localKillGrace)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("processes of %s still running after SIGKILL: %w", ln.n.name, ctx.Err())
		case <-time.After(procPollInterval):
		}
	}
	return nil
}

// stop shuts the node down cleanly (pg_ctl stop -m fast). A frozen node is thawed first.
func (ln *localNode) stop(ctx context.Context) error {
	if err := ln.thaw(ctx); err != nil {
		return err
	}
	return ln.pgCtlStop(ctx, "fast")
}

// start starts the node again on its port with its data and waits until it
// answers queries. A replica (standby.signal) comes back as a replica; a
// crashed primary as a primary on its old timeline.
func (ln *localNode) start(ctx context.Context) error {
	if err := ln.pgCtlStart(ctx); err != nil {
		return err
	}
	if err := ln.n.WaitReady(ctx); err != nil {
		return fmt.Errorf("%w%s", err, ln.logTail())
	}
	return nil
}

// conninfo is how another node streams from this one.
func (ln *localNode) conninfo() string {
	return fmt.Sprintf("host=%s port=%d user=postgres", ln.n.host, ln.n.port)
}

// postmasterPID reads the first line of postmaster.pid.
func (ln *localNode) postmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(ln.dir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("bad postmaster.pid in %s: %q", ln.dir, first)
	}
	return pid, nil
}

// livePostmaster returns the pid of the node's postmaster and whether it
// runs: false when the node never started or stopped (postmaster.pid is
// removed on exit), or when postmaster.pid is stale (its pid is gone or now
// another process's).
func (ln *localNode) livePostmaster() (int, bool) {
	pm, err := ln.postmasterPID()
	if err != nil {
		return 0, false
	}
	return pm, alive(pm) && strings.Contains(procCmdline(pm), ln.dir)
}

// freeze sends SIGSTOP to the postmaster's children, then to the postmaster
// (so it forks nothing more), then to any child forked meanwhile, and waits
// until all of them are stopped. The node still accepts TCP connections (the
// kernel queues them) but answers nothing.
func (ln *localNode) freeze(ctx context.Context) error {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if ln.frozen != nil {
		return nil
	}
	pm, err := ln.postmasterPID()
	if err != nil {
		return err
	}
	var order []int
	stopped := map[int]bool{}
	stopChildren := func() {
		for _, pid := range childrenOf(pm) {
			if !stopped[pid] && syscall.Kill(pid, syscall.SIGSTOP) == nil {
				stopped[pid] = true
				order = append(order, pid)
			}
		}
	}
	stopChildren()
	stopChildren() // children forked during the first scan
	if err := syscall.Kill(pm, syscall.SIGSTOP); err != nil {
		for _, pid := range order {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
		return fmt.Errorf("SIGSTOP postmaster %d: %w", pm, err)
	}
	stopped[pm] = true
	order = append(order, pm)
	stopChildren() // forked before the postmaster stopped
	ln.frozen = order

	// SIGSTOP is asynchronous: wait until every process shows state T.
	ctx, cancel := context.WithTimeout(ctx, localFreezeTimeout)
	defer cancel()
	for _, pid := range order {
		for {
			st, _, ok := procStat(pid)
			if !ok || st == 'T' || st == 't' || st == 'Z' || st == 'X' {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("process %d of %s not stopped (state %c): %w", pid, ln.n.name, st, ctx.Err())
			case <-time.After(time.Millisecond):
			}
		}
	}
	return nil
}

// thaw sends SIGCONT to the postmaster, then to its children (those stopped
// by freeze and any found now). It does nothing when the node is not frozen.
func (ln *localNode) thaw(context.Context) error {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if ln.frozen == nil {
		return nil
	}
	pm := ln.frozen[len(ln.frozen)-1]
	_ = syscall.Kill(pm, syscall.SIGCONT)
	for _, pid := range ln.frozen[:len(ln.frozen)-1] {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
	for _, pid := range childrenOf(pm) {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
	ln.frozen = nil
	return nil
}

// procStat returns the state and parent pid of a process from /proc/PID/stat.
func procStat(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// "PID (comm) S PPID ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) == 0 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], ppid, true
}

// childrenOf returns the live processes whose parent is pid.
func childrenOf(pid int) []int {
	var kids []int
	for _, p := range otherPIDs() {
		if st, ppid, ok := procStat(p); ok && ppid == pid && st != 'Z' && st != 'X' {
			kids = append(kids, p)
		}
	}
	return kids
}

// procCmdline returns the command line of pid, arguments separated by spaces.
func procCmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

// alive reports whether pid is a process that has not exited (zombies count as exited).
func alive(pid int) bool {
	st, _, ok := procStat(pid)
	return ok && st != 'Z' && st != 'X'
}

// close stops every node that runs (pg_ctl stop -m immediate, SIGKILL if that
// fails) and removes the temp dir. It is idempotent and works on a
// half-started cluster.
func (lc *localCluster) close(ctx context.Context) error {
	lc.mu.Lock()
	if lc.closed {
		lc.mu.Unlock()
		return nil
	}
	lc.closed = true
	base, nodes := lc.base, lc.nodes
	lc.mu.Unlock()

	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, ln := range nodes {
		wg.Go(func() { errs[i] = ln.kill(ctx) })
	}
	wg.Wait()
	if base != "" {
		if err := os.RemoveAll(base); err != nil {
			errs = append(errs, fmt.Errorf("pgcluster: %w", err))
		}
	}
	return errors.Join(errs...)
}

// kill stops the node's server if it runs, whatever its state (frozen, half
// started, stale postmaster.pid), and returns once none of its processes is left.
func (ln *localNode) kill(ctx context.Context) error {
	_ = ln.thaw(ctx)
	pm, ok := ln.livePostmaster()
	if !ok {
		return nil
	}
	pmProc, _ := procOf(pm) // by pid and start time: once it exited, its pid may soon name another test's process
	stopErr := ln.pgCtlStop(ctx, "immediate")
	if stopErr == nil && !pmProc.alive() {
		return nil
	}
	// pg_ctl failed (stale pid file: already gone) or left something
	// behind: SIGKILL what still works in the data directory, found by its
	// working directory, never by a pid seen before.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		left := procsWorkingIn(ln.dir)
		if pmProc.alive() {
			left = append(left, pm)
		}
		if len(left) == 0 {
			return nil
		}
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return errors.Join(stopErr, fmt.Errorf("pgcluster: %s: processes %v still alive after SIGKILL: %w", ln.n.name, left, ctx.Err()))
		case <-time.After(procPollInterval):
		}
	}
}
