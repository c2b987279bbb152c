package pgcluster

// The Patroni harness: one etcd and N Patroni members on 127.0.0.1, each
// member with its own REST API port and PostgreSQL port, everything run as
// the postgres user when we are root, everything kept in one temp dir:
//
//	/tmp/pgpatroni-XXXX/owner           "PID STARTTIME" of the process that owns the cluster
//	/tmp/pgpatroni-XXXX/etcd            etcd's data dir
//	/tmp/pgpatroni-XXXX/etcd.log
//	/tmp/pgpatroni-XXXX/m0/patroni.yml  member m0's configuration (JSON, which YAML reads)
//	/tmp/pgpatroni-XXXX/m0/bin          its bin_dir: the server binaries, postgres wrapped (see below)
//	/tmp/pgpatroni-XXXX/m0/data         its data dir, made by Patroni (initdb or pg_basebackup)
//	/tmp/pgpatroni-XXXX/m0.log          output of its Patroni and of the PostgreSQL it runs
//	...
//
// Patroni passes --cluster_name=SCOPE to every postmaster it starts, so
// cluster_name cannot be set in its configuration. Each member's bin_dir
// therefore holds a postgres wrapper script that swaps that argument for the
// member's name (so current_setting('cluster_name') names the server, as on
// the other backends) and symlinks to every other server binary.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultPatroniMembers is the number of members StartPatroni starts when
// PatroniOptions.Members is zero: a leader and two replicas.
const DefaultPatroniMembers = 3

// Where .ci/patroni-setup.sh puts Patroni.
const (
	// PatroniBin4 is Patroni 4 from Debian trixie, unpacked under /opt/patroni4
	// (a wrapper that sets PYTHONPATH and runs it with bookworm's python3).
	PatroniBin4 = "/opt/patroni4/bin/patroni"
	// PatroniBinDebian is Debian bookworm's patroni package (3.0.2).
	PatroniBinDebian = "/usr/bin/patroni"
)

// PatroniScope is the scope (Patroni's cluster name) of every PatroniCluster;
// its keys live under /service/pgcluster/ in etcd.
const PatroniScope = "pgcluster"

// ErrNoPatroni is returned by StartPatroni when Patroni or etcd is not installed.
var ErrNoPatroni = errors.New("pgcluster: Patroni or etcd not installed: run .ci/patroni-setup.sh " +
	"(apt-get install etcd-server patroni; Patroni 4 unpacked under /opt/patroni4)")

// Timings of the harness.
const (
	patroniPollInterval   = 100 * time.Millisecond // how often a wait asks /cluster or a server again
	patroniRequestTimeout = 2 * time.Second        // one REST or etcd request; a frozen Patroni never answers
	patroniQueryTimeout   = 2 * time.Second        // one query of a wait
	patroniStopTimeout    = 60 * time.Second       // a clean Patroni stop (RemoveMember)
	patroniStartAttempts  = 5                      // a member tries new ports when its REST API could not bind
)

// PatroniOptions configure StartPatroni.
type PatroniOptions struct {
	// Members is the number of Patroni members. Zero means
	// DefaultPatroniMembers.
	Members int
	// Bin is the patroni executable. Empty: DBROUTER_PATRONI, else
	// PatroniBin4 when it is there, else PatroniBinDebian.
	Bin string
	// Etcd is the etcd executable. Empty: DBROUTER_ETCD, else etcd on PATH.
	Etcd string
	// Logf, when set, receives progress lines (e.g. t.Logf).
	Logf func(format string, args ...any)
}

// PatroniCluster is a running etcd and the Patroni members around it, each
// running a PostgreSQL server. Its methods are safe for concurrent use, but
// faults on one member are meant to be injected one at a time.
type PatroniCluster struct {
	bin      string // patroni executable
	version  string // "4.0.7"
	timing   patroniTiming
	pgBinDir string // the real server binaries
	cred     *syscall.Credential
	env      []string
	base     string // temp dir holding everything
	logf     func(format string, args ...any)
	http     *http.Client

	mu      sync.Mutex // protects following fields
	etcd    *etcdServer
	members []*PatroniMember // every member ever added, removed ones too, in order of creation
	nextID  int              // number of the next member's name
	closed  bool
}

// patroniTiming is the DCS timing of a cluster, in seconds.
type patroniTiming struct {
	ttl, loopWait, retryTimeout int
}

// timingFor returns the shortest timing that Patroni of that major version
// accepts. Patroni 4 raises ttl to at least 20 s and wants loop_wait +
// 2*retry_timeout <= ttl; 3.0 takes a ttl of 10 s.
func timingFor(major int) patroniTiming {
	if major >= 4 {
		return patroniTiming{ttl: 20, loopWait: 1, retryTimeout: 5}
	}
	return patroniTiming{ttl: 10, loopWait: 1, retryTimeout: 4}
}

// PatroniMember is one Patroni member of a PatroniCluster and the PostgreSQL
// server it runs.
type PatroniMember struct {
	pc       *PatroniCluster
	name     string  // also its cluster_name setting
	port     int     // PostgreSQL, on 127.0.0.1
	restPort int     // Patroni's REST API, on 127.0.0.1
	dir      string  // base/NAME
	logPath  string  // base/NAME.log
	db       *sql.DB // for Exec and QueryRow (and the waits), set before the member joins the cluster

	mu      sync.Mutex // protects following fields
	d       *daemon    // its running Patroni; nil before it starts and after Kill or RemoveMember
	stopped []int      // pids that FreezePatroni or Hang stopped, in the order stopped
	tags    map[string]any
	removed bool
}

// findPatroni returns the patroni executable: bin when set, else
// DBROUTER_PATRONI, else PatroniBin4 when it is there, else PatroniBinDebian.
func findPatroni(bin string) (string, error) {
	if bin == "" {
		bin = os.Getenv("DBROUTER_PATRONI")
	}
	if bin == "" {
		bin = PatroniBinDebian
		if isExecutable(PatroniBin4) {
			bin = PatroniBin4
		}
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoPatroni, err)
	}
	return p, nil
}

// isExecutable reports whether path is a file with an execute bit.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode().Perm()&0o111 != 0
}

// patroniVersionRE finds the version in `patroni --version` ("patroni 4.0.7").
var patroniVersionRE = regexp.MustCompile(`(\d+)\.(\d+)(?:\.(\d+))?`)

// parsePatroniVersion returns the version and its major number from the
// output of `patroni --version`.
func parsePatroniVersion(out string) (version string, major int, err error) {
	m := patroniVersionRE.FindStringSubmatch(out)
	if m == nil {
		return "", 0, fmt.Errorf("pgcluster: no version in %q", strings.TrimSpace(out))
	}
	major, err = strconv.Atoi(m[1])
	if err != nil {
		return "", 0, fmt.Errorf("pgcluster: version in %q: %w", strings.TrimSpace(out), err)
	}
	return m[0], major, nil
}

// StartPatroni starts etcd and opts.Members Patroni members, and returns once
// GET /cluster shows a leader and every other member as a replica streaming
// from it on its timeline (what WaitHealthy waits for).
func StartPatroni(ctx context.Context, opts PatroniOptions) (*PatroniCluster, error) {
	n := opts.Members
	if n == 0 {
		n = DefaultPatroniMembers
	}
	if n < 1 {
		return nil, fmt.Errorf("pgcluster: Members = %d, want >= 1", opts.Members)
	}
	bin, err := findPatroni(opts.Bin)
	if err != nil {
		return nil, err
	}
	etcdBin, err := findEtcd(opts.Etcd)
	if err != nil {
		return nil, err
	}
	pgBin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	// bin_dir must hold every server binary (pg_controldata, pg_rewind...):
	// the dir of the real postgres, not of a symlink to it on PATH.
	realPostgres, err := filepath.EvalSymlinks(pgBin.postgres)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	cred, err := postgresCredential("Patroni, etcd and the server binaries")
	if err != nil {
		return nil, err
	}
	pc := &PatroniCluster{
		bin:      bin,
		pgBinDir: filepath.Dir(realPostgres),
		cred:     cred,
		logf:     opts.Logf,
		// No keep-alive: no idle connection (nor its goroutines) outlives a
		// request, and none is left waiting on a frozen Patroni.
		http: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	}
	if pc.logf == nil {
		pc.logf = func(string, ...any) {}
	}
	sweepPatroniOrphans(ctx, pc.logf)
	if err := pc.start(ctx, etcdBin, n); err != nil {
		return nil, errors.Join(err, pc.Close())
	}
	return pc, nil
}

// start does the work of StartPatroni; the caller closes pc when it fails.
func (pc *PatroniCluster) start(ctx context.Context, etcdBin string, n int) error {
	began := time.Now()
	base, err := os.MkdirTemp("", "pgpatroni-")
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	pc.mu.Lock()
	pc.base = base
	pc.mu.Unlock()
	if err := writeOwner(base); err != nil {
		return err
	}
	if err := pc.chown(base); err != nil {
		return err
	}
	pc.env = patroniEnv(base, pc.cred != nil)

	out, err := pc.command(ctx, pc.bin, "--version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgcluster: %s --version: %w: %s", pc.bin, err, strings.TrimSpace(string(out)))
	}
	version, major, err := parsePatroniVersion(string(out))
	if err != nil {
		return err
	}
	pc.version, pc.timing = version, timingFor(major)
	pc.logf("patroni %s (%s): ttl %ds, loop_wait %ds, retry_timeout %ds",
		pc.version, pc.bin, pc.timing.ttl, pc.timing.loopWait, pc.timing.retryTimeout)

	if err := pc.startEtcd(ctx, etcdBin); err != nil {
		return err
	}
	members := make([]*PatroniMember, n)
	for i := range members {
		if members[i], err = pc.newMember(); err != nil {
			return err
		}
	}
	// All at once: one wins the initialize key and bootstraps, the others
	// wait for it and clone it with pg_basebackup.
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() { errs[i] = m.firstStart(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := pc.WaitHealthy(ctx); err != nil {
		return err
	}
	st, err := pc.ClusterState(ctx)
	if err != nil {
		return err
	}
	leader, _ := st.Leader()
	pc.logf("patroni: leader %s + %d streaming replicas up in %v", leader.Name, n-1, since(began))
	return nil
}

// StartPatroniT starts a Patroni cluster for a test, fails the test loudly
// when it cannot (Patroni or etcd missing included: it never skips), and
// closes the cluster when the test ends (also when it fails).
func StartPatroniT(t testing.TB, opts PatroniOptions) *PatroniCluster {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pc, err := StartPatroni(ctx, opts)
	if err != nil {
		t.Fatalf("pgcluster: start patroni: %v", err)
	}
	t.Cleanup(func() {
		if err := pc.Close(); err != nil {
			t.Errorf("pgcluster: close patroni: %v", err)
		}
	})
	return pc
}

// patroniEnv is localEnv without the variables that would reconfigure
// Patroni or etcd behind the harness's back (PATRONI_*, ETCD_*, ETCDCTL_*).
func patroniEnv(base string, otherUser bool) []string {
	var env []string
	for _, kv := range localEnv(base, otherUser) {
		if strings.HasPrefix(kv, "PATRONI_") || strings.HasPrefix(kv, "ETCD") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// command returns a command run as the server user in the cluster's temp dir.
func (pc *PatroniCluster) command(ctx context.Context, path string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = pc.base
	cmd.Env = pc.env
	cmd.WaitDelay = localCmdWaitDelay
	if pc.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pc.cred}
	}
	return cmd
}

// chown gives path to the server user (when we run as root).
func (pc *PatroniCluster) chown(path string) error {
	if pc.cred == nil {
		return nil
	}
	if err := os.Lchown(path, int(pc.cred.Uid), int(pc.cred.Gid)); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	return nil
}

// newMember creates the next member's dir and bin dir and gives it free
// ports. It neither starts it nor adds it to the cluster (firstStart does).
func (pc *PatroniCluster) newMember() (*PatroniMember, error) {
	pc.mu.Lock()
	if pc.closed {
		pc.mu.Unlock()
		return nil, errors.New("pgcluster: patroni cluster closed")
	}
	name := fmt.Sprintf("m%d", pc.nextID)
	pc.nextID++
	pc.mu.Unlock()

	m := &PatroniMember{pc: pc, name: name, dir: filepath.Join(pc.base, name), logPath: filepath.Join(pc.base, name+".log")}
	if err := os.Mkdir(m.dir, 0o700); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if err := pc.chown(m.dir); err != nil {
		return nil, err
	}
	if err := m.writeBinDir(); err != nil {
		return nil, err
	}
	if err := m.pickPorts(); err != nil {
		return nil, err
	}
	return m, nil
}

// postgresWrapper is the member's bin_dir/postgres: it runs the real server
// with cluster_name set to the member's name instead of Patroni's scope.
// %[1]s is the member name, %[2]s the real postgres.
const postgresWrapper = `#!/bin/sh
# pgcluster: PostgreSQL with cluster_name=%[1]s (Patroni passes --cluster_name=<scope>).
for a do
	shift
	case $a in
	--cluster_name=* | --cluster-name=*) a=--cluster_name=%[1]s ;;
	esac
	set -- "$@" "$a"
done
exec %[2]s "$@"
`

// writeBinDir makes the member's bin_dir: the postgres wrapper and a symlink
// to every other server binary.
func (m *PatroniMember) writeBinDir() error {
	bin := filepath.Join(m.dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	ents, err := os.ReadDir(m.pc.pgBinDir)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	for _, e := range ents {
		if e.Name() == "postgres" {
			continue
		}
		if err := os.Symlink(filepath.Join(m.pc.pgBinDir, e.Name()), filepath.Join(bin, e.Name())); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
	}
	script := fmt.Sprintf(postgresWrapper, m.name, filepath.Join(m.pc.pgBinDir, "postgres"))
	if err := os.WriteFile(filepath.Join(bin, "postgres"), []byte(script), 0o755); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	return nil
}

// pickPorts gives the member two free ports on 127.0.0.1.
func (m *PatroniMember) pickPorts() error {
	var err error
	if m.port, err = freePort(); err != nil {
		return fmt.Errorf("pgcluster: %s: %w", m.name, err)
	}
	if m.restPort, err = freePort(); err != nil {
		return fmt.Errorf("pgcluster: %s: %w", m.name, err)
	}
	return nil
}

// configPath is the member's Patroni configuration file.
func (m *PatroniMember) configPath() string { return filepath.Join(m.dir, "patroni.yml") }

// dataDir is the member's PostgreSQL data dir.
func (m *PatroniMember) dataDir() string { return filepath.Join(m.dir, "data") }

// configLocked returns the member's Patroni configuration. The caller holds m.mu.
//
// The DCS part (bootstrap.dcs) is read only by the member that bootstraps
// the cluster; all members carry the same. fsync=off is as safe here as on
// the local backend (a killed process, not a power cut); synchronous_commit
// stays on.
func (m *PatroniMember) configLocked() map[string]any {
	pc := m.pc
	pc.mu.Lock()
	etcdURL := pc.etcd.clientURL
	pc.mu.Unlock()
	hostPort := func(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
	superuser := map[string]any{"username": "postgres"}
	tags := map[string]any{}
	for k, v := range m.tags {
		tags[k] = v
	}
	return map[string]any{
		"scope":     PatroniScope,
		"namespace": "/service/",
		"name":      m.name,
		"log":       map[string]any{"level": "INFO", "format": "%(asctime)s " + m.name + " %(levelname)s: %(message)s"},
		"restapi": map[string]any{
			"listen":          hostPort(m.restPort),
			"connect_address": hostPort(m.restPort),
		},
		"etcd3": map[string]any{"host": strings.TrimPrefix(etcdURL, "http://"), "protocol": "http"},
		"bootstrap": map[string]any{
			"dcs": map[string]any{
				"ttl":                     pc.timing.ttl,
				"loop_wait":               pc.timing.loopWait,
				"retry_timeout":           pc.timing.retryTimeout,
				"maximum_lag_on_failover": 1 << 20,
				// Patroni 4 keeps a vanished member's slot for 30 min by
				// default; a removed member must not stream again.
				"member_slots_ttl": 0,
				"postgresql": map[string]any{
					"use_pg_rewind": true,
					"use_slots":     true,
					"parameters": map[string]any{
						"wal_level":                   "replica",
						"hot_standby":                 "on",
						"hot_standby_feedback":        "on",
						"wal_log_hints":               "on",
						"max_connections":             100,
						"max_wal_senders":             20,
						"max_replication_slots":       20,
						"wal_keep_size":               "256MB",
						"wal_retrieve_retry_interval": "500ms",
						"fsync":                       "off",
						"shared_buffers":              "32MB",
					},
				},
			},
			"initdb": []any{map[string]any{"encoding": "UTF8"}, map[string]any{"locale": "C"}, "no-sync"},
		},
		"postgresql": map[string]any{
			"listen":          hostPort(m.port),
			"connect_address": hostPort(m.port),
			"data_dir":        m.dataDir(),
			"bin_dir":         filepath.Join(m.dir, "bin"),
			"pgpass":          filepath.Join(m.dir, "pgpass"),
			"authentication": map[string]any{
				"superuser":   superuser,
				"replication": superuser,
				"rewind":      superuser,
			},
			"parameters": map[string]any{"unix_socket_directories": ""},
			"pg_hba": []string{
				"host all all 127.0.0.1/32 trust",
				"host replication all 127.0.0.1/32 trust",
			},
			"basebackup":    []any{map[string]any{"checkpoint": "fast"}, "no-sync"},
			"use_pg_rewind": true,
			"remove_data_directory_on_rewind_failure":     true,
			"remove_data_directory_on_diverged_timelines": true,
		},
		"watchdog": map[string]any{"mode": "off"},
		"tags":     tags,
	}
}

// writeConfigLocked writes the member's configuration file. JSON is YAML, so
// Patroni reads it as it is. The caller holds m.mu.
func (m *PatroniMember) writeConfigLocked() error {
	b, err := json.MarshalIndent(m.configLocked(), "", "  ")
	if err != nil {
		return fmt.Errorf("pgcluster: %s: %w", m.name, err)
	}
	if err := os.WriteFile(m.configPath(), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("pgcluster: %s: %w", m.name, err)
	}
	return nil
}

// firstStart starts a new member's Patroni, returns once its REST API
// answers, and only then adds the member to the cluster: its ports are final
// by then. When the API could not bind its port, it tries again on new ports.
// On failure it kills what it started.
func (m *PatroniMember) firstStart(ctx context.Context) error {
	began := time.Now()
	var err error
	for attempt := 1; attempt <= patroniStartAttempts; attempt++ {
		var logOff int64
		if fi, serr := os.Stat(m.logPath); serr == nil {
			logOff = fi.Size()
		}
		var d *daemon
		if d, err = m.spawn(); err != nil {
			return err
		}
		if err = m.waitREST(ctx, d); err == nil {
			break
		}
		if !d.exited() || !bindFailed(readFrom(m.logPath, logOff)) {
			kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return errors.Join(err, killNaming(kctx, m.dir+"/"), d.kill(kctx))
		}
		m.pc.logf("%s: could not bind port %d, trying others", m.name, m.restPort)
		if err = m.pickPorts(); err != nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	if m.db, err = sql.Open("pgx", m.DSN()); err != nil {
		return fmt.Errorf("pgcluster: %s: %w", m.name, err)
	}
	m.db.SetMaxIdleConns(2)
	m.db.SetConnMaxIdleTime(10 * time.Second)
	m.pc.mu.Lock()
	m.pc.members = append(m.pc.members, m)
	m.pc.mu.Unlock()
	m.pc.logf("%s: Patroni answers on %s in %v (PostgreSQL port %d)", m.name, m.RESTURL(), since(began), m.port)
	return nil
}

// restart starts the Patroni of a member that ran before, on its ports, and
// returns once its REST API answers.
func (m *PatroniMember) restart(ctx context.Context) error {
	d, err := m.spawn()
	if err != nil {
		return err
	}
	return m.waitREST(ctx, d)
}

// spawn writes the member's configuration and starts its Patroni, unless it
// was removed or its Patroni runs.
func (m *PatroniMember) spawn() (*daemon, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.removed {
		return nil, fmt.Errorf("pgcluster: %s was removed", m.name)
	}
	if m.d != nil && !m.d.exited() {
		return nil, fmt.Errorf("pgcluster: %s: its Patroni is already running", m.name)
	}
	if err := m.writeConfigLocked(); err != nil {
		return nil, err
	}
	d, err := spawnDaemon(m.pc.base, m.pc.env, m.pc.cred, m.logPath, m.pc.bin, m.configPath())
	if err != nil {
		return nil, err
	}
	m.d = d
	return d, nil
}

// waitREST polls the member's REST API until it answers (any HTTP status
// will do: a starting member answers 503), its Patroni d exits, or ctx ends.
func (m *PatroniMember) waitREST(ctx context.Context, d *daemon) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for {
		rctx, rcancel := context.WithTimeout(ctx, patroniRequestTimeout)
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, m.RESTURL()+"/patroni", nil)
		if err == nil {
			var res *http.Response
			if res, err = m.pc.http.Do(req); err == nil {
				res.Body.Close()
			}
		}
		rcancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-d.done:
			return fmt.Errorf("pgcluster: %s: Patroni exited (%v)%s", m.name, d.err, tailOf(m.logPath))
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: %s: REST API not answering: %w (last error: %v)%s", m.name, ctx.Err(), last, tailOf(m.logPath))
		case <-time.After(patroniPollInterval):
		}
	}
}

// Version returns the version of Patroni in use, e.g. "4.0.7".
func (pc *PatroniCluster) Version() string { return pc.version }

// HungLeaderFixed reports whether the Patroni in use has the fix of patroni
// PR 2689 (3.0.3): before it, with etcd3, a leader that hung past ttl takes
// its key back when it resumes, and the writes acknowledged meanwhile by the
// member promoted in its place are lost.
func (pc *PatroniCluster) HungLeaderFixed() bool { return compareVersions(pc.version, "3.0.3") >= 0 }

// Bin returns the patroni executable in use.
func (pc *PatroniCluster) Bin() string { return pc.bin }

// TTL returns the leader key's time to live: how long a leader that stopped
// answering keeps the key. A crashed leader is replaced about this long after
// its last update.
func (pc *PatroniCluster) TTL() time.Duration { return time.Duration(pc.timing.ttl) * time.Second }

// LoopWait returns Patroni's loop_wait: how often each member runs its HA loop.
func (pc *PatroniCluster) LoopWait() time.Duration {
	return time.Duration(pc.timing.loopWait) * time.Second
}

// Members returns the members not removed, in the order they were added. The
// slice is a copy.
func (pc *PatroniCluster) Members() []*PatroniMember {
	pc.mu.Lock()
	all := append([]*PatroniMember(nil), pc.members...)
	pc.mu.Unlock()
	var ms []*PatroniMember
	for _, m := range all {
		m.mu.Lock()
		removed := m.removed
		m.mu.Unlock()
		if !removed {
			ms = append(ms, m)
		}
	}
	return ms
}

// Member returns the member named name, removed ones included; nil when
// there is none.
func (pc *PatroniCluster) Member(name string) *PatroniMember {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for _, m := range pc.members {
		if m.name == name {
			return m
		}
	}
	return nil
}

// member is Member for the fault methods: an error when name is unknown.
func (pc *PatroniCluster) member(name string) (*PatroniMember, error) {
	m := pc.Member(name)
	if m == nil {
		return nil, fmt.Errorf("pgcluster: no Patroni member %q", name)
	}
	return m, nil
}

// RESTURLs returns the REST API base URL of every member not removed
// ("http://127.0.0.1:PORT"), what a Patroni discovery source is given.
func (pc *PatroniCluster) RESTURLs() []string {
	var urls []string
	for _, m := range pc.Members() {
		urls = append(urls, m.RESTURL())
	}
	return urls
}

// Close stops every process the cluster started (Patroni, PostgreSQL, etcd;
// frozen ones too) and removes its temp dir. It is idempotent, works on a
// half-started cluster, and leaves nothing running.
func (pc *PatroniCluster) Close() error {
	pc.mu.Lock()
	if pc.closed {
		pc.mu.Unlock()
		return nil
	}
	pc.closed = true
	base, members, e := pc.base, append([]*PatroniMember(nil), pc.members...), pc.etcd
	pc.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var errs []error
	// 1. Patroni first, so that none starts its PostgreSQL again.
	for _, m := range members {
		m.mu.Lock()
		d := m.d
		m.d, m.stopped = nil, nil
		m.mu.Unlock()
		if d != nil {
			errs = append(errs, d.kill(ctx))
		}
	}
	// 2. Each PostgreSQL server by immediate shutdown (SIGQUIT), which also
	// removes its shared memory; resumed first in case it was hung.
	var pms []int
	for _, m := range members {
		pm, ok := livePostmasterOf(m.dataDir())
		if !ok {
			continue
		}
		resumeProcs(procsNaming(m.dir + "/"))
		_ = syscall.Kill(pm, syscall.SIGQUIT)
		pms = append(pms, pm)
	}
	qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
	_ = waitGone(qctx, pms) // what is left is killed below
	qcancel()
	// 3. etcd, then anything else that names the dir (children, leftovers).
	if e != nil {
		errs = append(errs, e.d.kill(ctx))
	}
	for _, m := range members {
		errs = append(errs, m.db.Close())
	}
	if base != "" {
		errs = append(errs, killNaming(ctx, base+"/"))
		for _, m := range members {
			errs = append(errs, removeOrphanShm(ctx, filepath.Join(m.dataDir(), "postmaster.pid")))
		}
		if err := os.RemoveAll(base); err != nil {
			errs = append(errs, fmt.Errorf("pgcluster: %w", err))
		}
	}
	return errors.Join(errs...)
}

// livePostmasterOf returns the pid of the postmaster running in dataDir, if one is.
func livePostmasterOf(dataDir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pm, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pm <= 0 {
		return 0, false
	}
	return pm, alive(pm) && strings.Contains(procCmdline(pm), dataDir)
}

// Name returns the member's name, which is also its cluster_name setting.
func (m *PatroniMember) Name() string { return m.name }

// Port returns the port of its PostgreSQL server on 127.0.0.1.
func (m *PatroniMember) Port() int { return m.port }

// Addr returns "127.0.0.1:PORT", where its PostgreSQL server listens.
func (m *PatroniMember) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port)) }

// RESTURL returns the base URL of its Patroni REST API, "http://127.0.0.1:PORT".
func (m *PatroniMember) RESTURL() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(m.restPort))
}

// DSN returns a pgx URL for its PostgreSQL server (user postgres, database
// postgres, no password), with a connect timeout of 5 s as Node.DSN.
func (m *PatroniMember) DSN() string {
	return fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable&connect_timeout=5", m.Addr())
}

// Open opens a *sql.DB on its PostgreSQL server through pgx. The caller closes it.
func (m *PatroniMember) Open() (*sql.DB, error) { return sql.Open("pgx", m.DSN()) }

// Exec runs one statement on its PostgreSQL server, over a small pool of
// the harness's own (Close closes it), so that polling the cluster does not
// fork a backend per query.
func (m *PatroniMember) Exec(ctx context.Context, query string, args ...any) error {
	if _, err := m.db.ExecContext(ctx, query, args...); err != nil {
		return fmt.Errorf("pgcluster: exec on %s: %w", m.name, err)
	}
	return nil
}

// QueryRow runs a one-row query on its PostgreSQL server (over the pool that
// Exec uses) and scans the row into dest.
func (m *PatroniMember) QueryRow(ctx context.Context, query string, dest ...any) error {
	if err := m.db.QueryRowContext(ctx, query).Scan(dest...); err != nil {
		return fmt.Errorf("pgcluster: query on %s: %w", m.name, err)
	}
	return nil
}

// writeOwner records in base who owns the cluster ("PID STARTTIME"), so that
// sweepPatroniOrphans can tell a dir whose owner died without Close.
func writeOwner(base string) error {
	st, ok := procStartTime(os.Getpid())
	if !ok {
		return errors.New("pgcluster: cannot read our own start time from /proc")
	}
	if err := os.WriteFile(filepath.Join(base, "owner"), fmt.Appendf(nil, "%d %d\n", os.Getpid(), st), 0o644); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	return nil
}

// sweepPatroniOrphans cleans up after test binaries that died without Close
// (killed by go test -timeout, say): for every pgpatroni-* dir in the temp dir
// whose owner process is gone, it kills every process naming that dir (the
// PostgreSQL servers outlive their Patroni) and removes it. Dirs of live
// owners, and dirs without an owner file yet, are left alone.
func sweepPatroniOrphans(ctx context.Context, logf func(string, ...any)) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "pgpatroni-*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner"))
		if err != nil {
			continue
		}
		var pid int
		var start uint64
		if _, err := fmt.Sscan(string(b), &pid, &start); err != nil {
			continue
		}
		if st, ok := procStartTime(pid); ok && st == start && alive(pid) {
			continue
		}
		logf("patroni: removing %s, left by pid %d that is gone", dir, pid)
		kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = killNaming(kctx, dir+"/")
		cancel()
		if err != nil {
			logf("patroni: %v", err)
			continue
		}
		shms, _ := filepath.Glob(filepath.Join(dir, "*", "data", "postmaster.pid"))
		for _, p := range shms {
			_ = removeOrphanShm(ctx, p)
		}
		_ = os.RemoveAll(dir)
	}
}
