package pgcluster

// Changes and faults of a PatroniCluster: switchover, crash, restart, frozen
// Patroni, hung member, new and removed members, a removed member's server
// started by hand, tags.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// Switchover asks Patroni (POST /switchover) to hand leadership from the
// current leader to the member named to ("" lets Patroni choose), and
// returns the new leader once its server accepts writes. The old leader
// rejoins as a replica afterwards; WaitHealthy waits for that.
func (pc *PatroniCluster) Switchover(ctx context.Context, to string) (*PatroniMember, error) {
	leader, err := pc.Leader(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: switchover: %w", err)
	}
	if to == leader.name {
		return nil, fmt.Errorf("pgcluster: switchover: %s already leads", to)
	}
	req := map[string]string{"leader": leader.name}
	if to != "" {
		if _, err := pc.member(to); err != nil {
			return nil, fmt.Errorf("pgcluster: switchover: %w", err)
		}
		req["candidate"] = to
	}
	if err := pc.post(ctx, leader, "/switchover", req, time.Minute); err != nil {
		return nil, fmt.Errorf("pgcluster: switchover from %s: %w", leader.name, err)
	}
	got, err := pc.WaitLeader(ctx, leader.name)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: switchover from %s: %w", leader.name, err)
	}
	if to != "" && got.name != to {
		return nil, fmt.Errorf("pgcluster: switchover from %s: %s leads, not %s", leader.name, got.name, to)
	}
	return got, nil
}

// post POSTs body as JSON to the member's REST API and returns an error
// carrying Patroni's answer unless it is 200.
func (pc *PatroniCluster) post(ctx context.Context, m *PatroniMember, path string, body any, timeout time.Duration) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.RESTURL()+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := pc.http.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	answer, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s: %s", path, res.Status, bytes.TrimSpace(answer))
	}
	return nil
}

// KillLeader kills the member that GET /cluster names leader (see Kill) and
// returns it.
func (pc *PatroniCluster) KillLeader(ctx context.Context) (*PatroniMember, error) {
	leader, err := pc.Leader(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: kill leader: %w", err)
	}
	return leader, pc.Kill(ctx, leader.name)
}

// Kill kills the member with SIGKILL, as a crash of its machine would: its
// Patroni, its postmaster and every process of its server (a hung or frozen
// member too). Its leader key, if it held it, expires after TTL. Restart
// starts it again.
func (pc *PatroniCluster) Kill(ctx context.Context, name string) error {
	m, err := pc.member(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.d
	m.d, m.stopped = nil, nil
	if err := killNaming(ctx, m.dir+"/"); err != nil {
		return fmt.Errorf("pgcluster: kill %s: %w", name, err)
	}
	if d != nil {
		if err := d.kill(ctx); err != nil {
			return fmt.Errorf("pgcluster: kill %s: %w", name, err)
		}
	}
	pc.logf("%s: killed", name)
	return nil
}

// Restart starts the Patroni of a killed member again, with its data, and
// returns once it streams from the leader (or leads). A member that led
// before its crash is rewound (pg_rewind) onto the new leader's timeline, or
// cloned again when that fails.
func (pc *PatroniCluster) Restart(ctx context.Context, name string) error {
	m, err := pc.member(name)
	if err != nil {
		return err
	}
	began := time.Now()
	if err := m.restart(ctx); err != nil {
		return fmt.Errorf("pgcluster: restart %s: %w", name, err)
	}
	if err := pc.waitMember(ctx, m); err != nil {
		return fmt.Errorf("pgcluster: restart %s: %w", name, err)
	}
	pc.logf("%s: back and streaming in %v", name, since(began))
	return nil
}

// FreezePatroni stops the member's Patroni daemon (SIGSTOP); its PostgreSQL
// server keeps running. The REST API then accepts connections and answers
// nothing, so clients need short timeouts; a frozen leader loses its key
// after TTL while its server still takes writes. Thaw resumes it.
func (pc *PatroniCluster) FreezePatroni(ctx context.Context, name string) error {
	m, err := pc.member(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.d == nil || m.d.exited() {
		return fmt.Errorf("pgcluster: freeze %s: its Patroni is not running", name)
	}
	stopped, err := stopProcs(ctx, []int{m.d.pid()})
	m.stopped = append(m.stopped, stopped...)
	if err != nil {
		return fmt.Errorf("pgcluster: freeze %s: %w", name, err)
	}
	pc.logf("%s: Patroni frozen", name)
	return nil
}

// Hang stops the member's Patroni and every process of its PostgreSQL server
// (SIGSTOP): both accept TCP connections and answer nothing, as a machine
// that hangs. Thaw resumes them.
func (pc *PatroniCluster) Hang(ctx context.Context, name string) error {
	m, err := pc.member(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.d == nil || m.d.exited() {
		return fmt.Errorf("pgcluster: hang %s: its Patroni is not running", name)
	}
	pm, ok := livePostmasterOf(m.dataDir())
	if !ok {
		return fmt.Errorf("pgcluster: hang %s: its PostgreSQL is not running", name)
	}
	// Patroni first (it would react), then the postmaster's children, the
	// postmaster (it forks no more), and children forked meanwhile.
	for _, pids := range []func() []int{
		func() []int { return []int{m.d.pid()} },
		func() []int { return childrenOf(pm) },
		func() []int { return []int{pm} },
		func() []int { return childrenOf(pm) },
	} {
		var todo []int
		for _, pid := range pids() {
			if !slices.Contains(m.stopped, pid) {
				todo = append(todo, pid)
			}
		}
		stopped, err := stopProcs(ctx, todo)
		m.stopped = append(m.stopped, stopped...)
		if err != nil {
			return fmt.Errorf("pgcluster: hang %s: %w", name, err)
		}
	}
	pc.logf("%s: hung (%d processes stopped)", name, len(m.stopped))
	return nil
}

// Thaw resumes what FreezePatroni or Hang stopped: the server first, its
// Patroni last. It does nothing on a member that is not stopped.
func (pc *PatroniCluster) Thaw(ctx context.Context, name string) error {
	m, err := pc.member(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.stopped) == 0 {
		return nil
	}
	order := slices.Clone(m.stopped)
	slices.Reverse(order)
	resumeProcs(order)
	m.stopped = nil
	pc.logf("%s: thawed", name)
	return nil
}

// AddMember starts a new member, which clones the leader (pg_basebackup),
// and returns it once it streams from the leader.
func (pc *PatroniCluster) AddMember(ctx context.Context) (*PatroniMember, error) {
	began := time.Now()
	m, err := pc.newMember()
	if err != nil {
		return nil, err
	}
	if err := m.firstStart(ctx); err != nil {
		return nil, fmt.Errorf("pgcluster: add member %s: %w", m.name, err)
	}
	if err := pc.waitMember(ctx, m); err != nil {
		return nil, fmt.Errorf("pgcluster: add member %s: %w", m.name, err)
	}
	pc.logf("%s: added, streaming in %v", m.name, since(began))
	return m, nil
}

// RemoveMember stops the member's Patroni cleanly (which stops its server),
// deletes its key from etcd (a stopped member's key would otherwise linger,
// as "stopped", until its lease runs out), and returns once GET /cluster no
// longer lists it, a leader is named (another member, when it led) and the
// leader dropped the member's replication slot. It stays in Member but not
// in Members, and never starts again (but see StartPostgresByHand).
func (pc *PatroniCluster) RemoveMember(ctx context.Context, name string) error {
	m, err := pc.member(name)
	if err != nil {
		return err
	}
	began := time.Now()
	m.mu.Lock()
	if m.removed {
		m.mu.Unlock()
		return fmt.Errorf("pgcluster: remove %s: already removed", name)
	}
	m.removed = true
	resumeProcs(m.stopped)
	d := m.d
	m.d, m.stopped = nil, nil
	m.mu.Unlock()

	if d != nil && !d.exited() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(patroniStopTimeout):
			pc.logf("%s: Patroni did not stop within %v, killing it", name, patroniStopTimeout)
		case <-ctx.Done():
		}
	}
	// Whatever is left of it (nothing after a clean stop).
	if err := killNaming(ctx, m.dir+"/"); err != nil {
		return fmt.Errorf("pgcluster: remove %s: %w", name, err)
	}
	if d != nil {
		if err := d.kill(ctx); err != nil {
			return fmt.Errorf("pgcluster: remove %s: %w", name, err)
		}
	}
	key := "/service/" + PatroniScope + "/members/" + name
	if _, err := pc.etcdDelete(ctx, key); err != nil {
		return fmt.Errorf("pgcluster: remove %s: %w", name, err)
	}
	err = pollCond(ctx, "rid of "+name, func(ctx context.Context) error {
		if ok, err := pc.etcdExists(ctx, key); err != nil || ok {
			return fmt.Errorf("key %s still there (%v)", key, err)
		}
		if len(pc.Members()) == 0 {
			return nil // the last one: no one left to ask
		}
		st, err := pc.ClusterState(ctx)
		if err != nil {
			return err
		}
		if _, ok := st.Member(name); ok {
			return fmt.Errorf("/cluster still lists %s", name)
		}
		l, ok := st.Leader()
		if !ok {
			return errors.New("no leader")
		}
		leader, err := pc.member(l.Name)
		if err != nil {
			return err
		}
		if n, err := leader.slotCount(ctx, name); err != nil || n > 0 {
			return fmt.Errorf("leader %s still has a slot for %s (%v)", l.Name, name, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pgcluster: remove %s: %w", name, err)
	}
	pc.logf("%s: removed in %v", name, since(began))
	return nil
}

// StartPostgresByHand starts the PostgreSQL server of a member whose Patroni
// does not run (a removed or killed member) with pg_ctl, outside Patroni, on
// its port, and returns once it answers queries. A removed replica comes back
// as a replica that cannot stream (RemoveMember waited until the leader
// dropped its slot): a server that still answers, with stale data, that a
// Patroni discovery source must never use again. Close stops it.
func (pc *PatroniCluster) StartPostgresByHand(ctx context.Context, name string) error {
	m, err := pc.member(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.d != nil && !m.d.exited() {
		return fmt.Errorf("pgcluster: start %s by hand: its Patroni runs", name)
	}
	if _, ok := livePostmasterOf(m.dataDir()); ok {
		return fmt.Errorf("pgcluster: start %s by hand: its server already runs", name)
	}
	logPath := filepath.Join(pc.base, name+".byhand.log")
	out, err := pc.command(ctx, filepath.Join(pc.pgBinDir, "pg_ctl"), "start", "-D", m.dataDir(), "-l", logPath,
		"-w", "-t", localCmdWaitSecs,
		"-o", "-p "+strconv.Itoa(m.port)+" -c cluster_name="+name+" -c listen_addresses=127.0.0.1").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgcluster: start %s by hand: pg_ctl start: %w: %s%s", name, err, bytes.TrimSpace(out), tailOf(logPath))
	}
	err = pollCond(ctx, name+" answering", func(ctx context.Context) error {
		qctx, cancel := context.WithTimeout(ctx, patroniQueryTimeout)
		defer cancel()
		var one int
		return m.QueryRow(qctx, "SELECT 1", &one)
	})
	if err != nil {
		return fmt.Errorf("pgcluster: start %s by hand: %w%s", name, err, tailOf(logPath))
	}
	pc.logf("%s: PostgreSQL started by hand on %s", name, m.Addr())
	return nil
}

// SetTags replaces the member's Patroni tags (e.g. {"noloadbalance": true},
// {"nofailover": true}), reloads its Patroni (SIGHUP) and returns once
// GET /cluster shows them. Patroni leaves out its boolean tags that are
// false.
func (pc *PatroniCluster) SetTags(ctx context.Context, name string, tags map[string]any) error {
	m, err := pc.member(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	if m.d == nil || m.d.exited() {
		m.mu.Unlock()
		return fmt.Errorf("pgcluster: set tags of %s: its Patroni is not running", name)
	}
	m.tags = maps.Clone(tags)
	err = m.writeConfigLocked()
	if err == nil {
		err = m.d.cmd.Process.Signal(syscall.SIGHUP)
	}
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("pgcluster: set tags of %s: %w", name, err)
	}
	want, err := normalTags(tags)
	if err != nil {
		return fmt.Errorf("pgcluster: set tags of %s: %w", name, err)
	}
	return pollCond(ctx, "showing the tags of "+name, func(ctx context.Context) error {
		st, err := pc.ClusterState(ctx)
		if err != nil {
			return err
		}
		ms, ok := st.Member(name)
		if !ok {
			return fmt.Errorf("%s not in /cluster", name)
		}
		got, err := normalTags(ms.Tags)
		if err != nil {
			return permanent(err)
		}
		if !reflect.DeepEqual(got, want) {
			return fmt.Errorf("%s has tags %v, want %v", name, got, want)
		}
		return nil
	})
}

// normalTags returns tags as they come back from JSON, without the false
// ones (Patroni drops those it knows).
func normalTags(tags map[string]any) (map[string]any, error) {
	b, err := json.Marshal(tags)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	for k, v := range out {
		if v == false || v == nil {
			delete(out, k)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}
