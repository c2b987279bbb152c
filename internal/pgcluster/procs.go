package pgcluster

// Process helpers of the Patroni harness: daemons it starts and reaps, and
// the processes it finds in /proc by the directory their command line names
// (a postmaster that Patroni started is not our child: Patroni starts it
// through a short-lived process, as pg_ctl does, so it is reparented).

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procPollInterval is how often the process helpers look at /proc while they
// wait for a process to stop or to exit.
const procPollInterval = 5 * time.Millisecond

// daemon is a long-running process that we started (etcd, a Patroni) with
// its output appended to a log file. A goroutine reaps it.
type daemon struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process exited and was reaped
	err  error         // how it exited; read only after done is closed
}

// spawnDaemon starts path with args as cred (nil: as ourselves), in its own
// process group, its stdout and stderr appended to logPath. It dies with us
// (SIGKILL on our death), so a test binary killed by -timeout leaves no
// etcd or Patroni behind.
func spawnDaemon(dir string, env []string, cred *syscall.Credential, logPath, path string, args ...string) (*daemon, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	defer log.Close() // the child holds its own copy
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("pgcluster: start %s: %w", path, err)
	}
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// pid returns the daemon's process id.
func (d *daemon) pid() int { return d.cmd.Process.Pid }

// exited reports whether the daemon has exited.
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL (it also ends a stopped process) and waits until the
// daemon is reaped or ctx ends.
func (d *daemon) kill(ctx context.Context) error {
	if d.exited() {
		return nil
	}
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-d.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("pgcluster: pid %d not gone after SIGKILL: %w", d.pid(), ctx.Err())
	}
}

// otherPIDs returns the pids in /proc other than ours, alive or not.
func otherPIDs() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != self {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procsNaming returns the live processes, other than ourselves, whose command
// line contains s, and all their live descendants.
func procsNaming(s string) []int {
	parent := map[int]int{}
	var found []int
	for _, pid := range otherPIDs() {
		st, ppid, ok := procStat(pid)
		if !ok || st == 'Z' || st == 'X' {
			continue
		}
		parent[pid] = ppid
		if strings.Contains(procCmdline(pid), s) {
			found = append(found, pid)
		}
	}
	// Descendants: repeat until no new process joins.
	in := map[int]bool{}
	for _, pid := range found {
		in[pid] = true
	}
	for grew := true; grew; {
		grew = false
		for pid, ppid := range parent {
			if in[ppid] && !in[pid] {
				in[pid] = true
				found = append(found, pid)
				grew = true
			}
		}
	}
	slices.Sort(found)
	return found
}

// procsWorkingIn returns the live processes, other than ourselves, whose
// working directory is dir: every process of a postmaster, which chdirs into
// its data directory before it forks, whatever its parent is now and
// whenever it was forked.
func procsWorkingIn(dir string) []int {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	var found []int
	for _, pid := range otherPIDs() {
		if cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd"); err == nil && cwd == dir && alive(pid) {
			found = append(found, pid)
		}
	}
	return found
}

// killNaming SIGKILLs every process procsNaming(s) finds, again and again
// until none is left (a dying Patroni may have forked), and returns an error
// naming the survivors when ctx ends first.
func killNaming(ctx context.Context, s string) error {
	for {
		pids := procsNaming(s)
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: processes naming %s left after SIGKILL: %s: %w", s, describePIDs(pids), ctx.Err())
		case <-time.After(procPollInterval):
		}
	}
}

// waitGone polls until none of pids is alive, or ctx ends.
func waitGone(ctx context.Context, pids []int) error {
	for {
		var left []int
		for _, pid := range pids {
			if alive(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: processes still alive: %s: %w", describePIDs(left), ctx.Err())
		case <-time.After(procPollInterval):
		}
	}
}

// stopProcs sends SIGSTOP to pids in order and waits until each shows state
// T (SIGSTOP is asynchronous), or ctx ends. It returns the pids it stopped, in
// order, also on error, so the caller can resume them.
func stopProcs(ctx context.Context, pids []int) ([]int, error) {
	var stopped []int
	for _, pid := range pids {
		if syscall.Kill(pid, syscall.SIGSTOP) == nil {
			stopped = append(stopped, pid)
		}
	}
	for _, pid := range stopped {
		for {
			st, _, ok := procStat(pid)
			if !ok || st == 'T' || st == 't' || st == 'Z' || st == 'X' {
				break
			}
			select {
			case <-ctx.Done():
				return stopped, fmt.Errorf("pgcluster: process %d not stopped (state %c): %w", pid, st, ctx.Err())
			case <-time.After(procPollInterval):
			}
		}
	}
	return stopped, nil
}

// resumeProcs sends SIGCONT to pids in order; gone processes are skipped.
func resumeProcs(pids []int) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
}

// describePIDs returns "PID CMDLINE" for each pid, for error messages.
func describePIDs(pids []int) string {
	var b strings.Builder
	for i, pid := range pids {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%d %q", pid, procCmdline(pid))
	}
	return b.String()
}

// proc names one process: its pid and its start time, since a busy machine
// (pid_max 32768) reuses the pid of a child that exited (an autovacuum
// worker) within seconds.
type proc struct {
	pid   int
	start uint64
}

// procOf returns the process pid names now, and false when there is none.
func procOf(pid int) (proc, bool) {
	start, ok := procStartTime(pid)
	return proc{pid, start}, ok
}

// alive reports whether p has not exited: its pid names a process started
// when p was, and that process is not a zombie.
func (p proc) alive() bool {
	start, ok := procStartTime(p.pid)
	return ok && start == p.start && alive(p.pid)
}

// procStartTime returns the start time of pid in clock ticks since boot
// (field 22 of /proc/PID/stat): with the pid it names one process, even
// after the pid is reused.
func procStartTime(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return 0, false
	}
	t, err := strconv.ParseUint(f[19], 10, 64)
	return t, err == nil
}

// removeOrphanShm removes the System V shared memory segment that a
// postmaster killed with SIGKILL leaves behind (its id is on line 7 of
// postmaster.pid), when no process is attached to it any more. PostgreSQL
// removes it itself on a clean or immediate shutdown, and on its next start
// in that data dir; this is for a data dir that is about to be deleted.
func removeOrphanShm(ctx context.Context, pidFile string) error {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return nil // never started, or shut down cleanly
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 7 {
		return nil
	}
	f := strings.Fields(lines[6])
	if len(f) != 2 {
		return nil
	}
	id := f[1]
	shm, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(shm), "\n") {
		// key shmid perms size cpid lpid nattch ...
		g := strings.Fields(line)
		if len(g) < 7 || g[1] != id || g[6] != "0" {
			continue
		}
		out, err := exec.CommandContext(ctx, "ipcrm", "-m", id).CombinedOutput()
		if err != nil {
			return fmt.Errorf("pgcluster: ipcrm -m %s (from %s): %w: %s", id, pidFile, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}
