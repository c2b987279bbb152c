package pgcluster

// What Patroni says about the cluster (GET /cluster) and the waits built on it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Member roles in GET /cluster.
const (
	PatroniRoleLeader        = "leader"
	PatroniRoleStandbyLeader = "standby_leader"
	PatroniRoleReplica       = "replica"
	PatroniRoleSyncStandby   = "sync_standby"
	PatroniRoleQuorumStandby = "quorum_standby" // Patroni 4 with quorum commit
)

// PatroniState is Patroni's GET /cluster answer.
type PatroniState struct {
	// Members is sorted by name, as Patroni sends it.
	Members []PatroniMemberState `json:"members"`
	// Pause is true when the cluster is in maintenance mode.
	Pause bool `json:"pause,omitempty"`
}

// PatroniMemberState is one member in GET /cluster.
type PatroniMemberState struct {
	Name string `json:"name"`
	// Role is PatroniRoleLeader, PatroniRoleReplica, PatroniRoleSyncStandby, ...
	Role string `json:"role"`
	// State is "running" for a leader; for a replica "streaming" (Patroni 4,
	// its WAL receiver streams), "in archive recovery", or "running"
	// (Patroni 3, which does not tell); "stopped", "starting", "creating
	// replica", "crashed", ... otherwise.
	State    string `json:"state"`
	APIURL   string `json:"api_url"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Timeline int    `json:"timeline"`
	// Lag is a replica's lag behind the leader in bytes; nil for the leader
	// and when Patroni reports it "unknown".
	Lag            *int64         `json:"-"`
	PendingRestart bool           `json:"pending_restart,omitempty"`
	Tags           map[string]any `json:"tags,omitempty"`
}

// UnmarshalJSON decodes a member, whose "lag" is a number or "unknown".
func (s *PatroniMemberState) UnmarshalJSON(b []byte) error {
	type plain PatroniMemberState // without this method
	var v struct {
		plain
		Lag json.RawMessage `json:"lag"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = PatroniMemberState(v.plain)
	var lag int64
	if len(v.Lag) > 0 && json.Unmarshal(v.Lag, &lag) == nil {
		s.Lag = &lag
	}
	return nil
}

// Tag reports whether the member has tag set to true (e.g. "noloadbalance",
// "nofailover").
func (s PatroniMemberState) Tag(name string) bool {
	v, _ := s.Tags[name].(bool)
	return v
}

// IsReplica reports whether the role is one of a replica's.
func (s PatroniMemberState) IsReplica() bool {
	switch s.Role {
	case PatroniRoleReplica, PatroniRoleSyncStandby, PatroniRoleQuorumStandby:
		return true
	}
	return false
}

// Leader returns the leader (or standby leader) and whether there is one.
func (st PatroniState) Leader() (PatroniMemberState, bool) {
	for _, m := range st.Members {
		if m.Role == PatroniRoleLeader || m.Role == PatroniRoleStandbyLeader {
			return m, true
		}
	}
	return PatroniMemberState{}, false
}

// Member returns the member named name and whether it is listed.
func (st PatroniState) Member(name string) (PatroniMemberState, bool) {
	for _, m := range st.Members {
		if m.Name == name {
			return m, true
		}
	}
	return PatroniMemberState{}, false
}

// getJSON GETs url with the request timeout and decodes a 200 answer into v.
func (pc *PatroniCluster) getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, patroniRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	res, err := pc.http.Do(req)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("pgcluster: GET %s: %w", url, err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("pgcluster: GET %s: %s: %s", url, res.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("pgcluster: GET %s: %w", url, err)
	}
	return nil
}

// ClusterState returns GET /cluster as the first member to answer tells it.
// It asks the members whose Patroni runs and is not frozen, one after the
// other, each with a 2 s timeout.
func (pc *PatroniCluster) ClusterState(ctx context.Context) (PatroniState, error) {
	var errs []error
	asked := 0
	for _, m := range pc.Members() {
		m.mu.Lock()
		up := m.d != nil && !m.d.exited() && len(m.stopped) == 0
		m.mu.Unlock()
		if !up {
			continue
		}
		asked++
		var st PatroniState
		err := pc.getJSON(ctx, m.RESTURL()+"/cluster", &st)
		if err == nil {
			return st, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if asked == 0 {
		return PatroniState{}, errors.New("pgcluster: no Patroni member runs to ask for /cluster")
	}
	return PatroniState{}, errors.Join(errs...)
}

// Leader returns the member that GET /cluster names leader, or an error when
// there is none now.
func (pc *PatroniCluster) Leader(ctx context.Context) (*PatroniMember, error) {
	st, err := pc.ClusterState(ctx)
	if err != nil {
		return nil, err
	}
	l, ok := st.Leader()
	if !ok {
		return nil, errors.New("pgcluster: /cluster shows no leader")
	}
	return pc.member(l.Name)
}

// WaitHealthy polls until GET /cluster shows a running leader and every
// other member whose Patroni runs (not killed, not removed) as a replica on
// the leader's timeline whose WAL receiver streams from the leader (asked of
// its server: Patroni 3 reports a replica "running" whether it streams or
// not). It fails
// at once when a member's Patroni exits, and when ctx ends.
func (pc *PatroniCluster) WaitHealthy(ctx context.Context) error {
	return pollCond(ctx, "healthy", func(ctx context.Context) error {
		var want []*PatroniMember
		for _, m := range pc.Members() {
			m.mu.Lock()
			d := m.d
			m.mu.Unlock()
			if d == nil {
				continue
			}
			if d.exited() {
				return permanent(fmt.Errorf("pgcluster: %s: Patroni exited (%v)%s", m.name, d.err, tailOf(m.logPath)))
			}
			want = append(want, m)
		}
		st, err := pc.ClusterState(ctx)
		if err != nil {
			return err
		}
		leader, ok := st.Leader()
		if !ok {
			return errors.New("no leader")
		}
		if leader.State != "running" {
			return fmt.Errorf("leader %s is %q", leader.Name, leader.State)
		}
		for _, m := range want {
			if m.name == leader.Name {
				continue
			}
			if err := pc.streamsFrom(ctx, st, m, leader); err != nil {
				return err
			}
		}
		return nil
	})
}

// streamsFrom returns nil when st shows m as a replica on leader's timeline
// and m's WAL receiver streams from leader's port.
func (pc *PatroniCluster) streamsFrom(ctx context.Context, st PatroniState, m *PatroniMember, leader PatroniMemberState) error {
	ms, ok := st.Member(m.name)
	if !ok {
		return fmt.Errorf("%s not in /cluster", m.name)
	}
	if !ms.IsReplica() || (ms.State != "streaming" && ms.State != "running") {
		return fmt.Errorf("%s is %s %q", m.name, ms.Role, ms.State)
	}
	if ms.Timeline != leader.Timeline {
		return fmt.Errorf("%s on timeline %d, leader %s on %d", m.name, ms.Timeline, leader.Name, leader.Timeline)
	}
	qctx, cancel := context.WithTimeout(ctx, patroniQueryTimeout)
	defer cancel()
	var port int
	if err := m.QueryRow(qctx, "SELECT coalesce(max(sender_port), 0) FROM pg_stat_wal_receiver WHERE status = 'streaming'", &port); err != nil {
		return err
	}
	if port == 0 {
		return fmt.Errorf("%s: WAL receiver not streaming", m.name)
	}
	if port != leader.Port {
		return fmt.Errorf("%s streams from port %d, leader %s is on %d", m.name, port, leader.Name, leader.Port)
	}
	return nil
}

// WaitLeader polls until GET /cluster names a running leader other than
// except ("" for any) and that leader's server accepts writes, and returns
// it. A new leader's key shows in /cluster a little before its server is
// promoted.
func (pc *PatroniCluster) WaitLeader(ctx context.Context, except string) (*PatroniMember, error) {
	var got *PatroniMember
	err := pollCond(ctx, "led by a member other than "+except, func(ctx context.Context) error {
		st, err := pc.ClusterState(ctx)
		if err != nil {
			return err
		}
		l, ok := st.Leader()
		if !ok {
			return errors.New("no leader")
		}
		if l.Name == except || l.State != "running" {
			return fmt.Errorf("leader %s is %q", l.Name, l.State)
		}
		m, err := pc.member(l.Name)
		if err != nil {
			return permanent(err)
		}
		if err := m.acceptsWrites(ctx); err != nil {
			return err
		}
		got = m
		return nil
	})
	return got, err
}

// acceptsWrites returns nil when the member's server assigns a transaction
// id, which a server in recovery refuses.
func (m *PatroniMember) acceptsWrites(ctx context.Context) error {
	qctx, cancel := context.WithTimeout(ctx, patroniQueryTimeout)
	defer cancel()
	var xid string
	return m.QueryRow(qctx, "SELECT pg_current_xact_id()::text", &xid)
}

// slotCount returns how many replication slots named after member the
// member's server has (Patroni names a member's slot after it).
func (m *PatroniMember) slotCount(ctx context.Context, member string) (int, error) {
	qctx, cancel := context.WithTimeout(ctx, patroniQueryTimeout)
	defer cancel()
	var n int
	// Member names are m0, m1, ...: nothing to quote.
	err := m.QueryRow(qctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '"+member+"'", &n)
	return n, err
}

// waitMember polls until m leads the cluster or streams from its leader (as
// WaitHealthy judges a replica).
func (pc *PatroniCluster) waitMember(ctx context.Context, m *PatroniMember) error {
	return pollCond(ctx, m.name+" streaming", func(ctx context.Context) error {
		m.mu.Lock()
		d := m.d
		m.mu.Unlock()
		if d == nil || d.exited() {
			return permanent(fmt.Errorf("pgcluster: %s: Patroni not running%s", m.name, tailOf(m.logPath)))
		}
		st, err := pc.ClusterState(ctx)
		if err != nil {
			return err
		}
		leader, ok := st.Leader()
		if !ok {
			return errors.New("no leader")
		}
		if leader.Name == m.name {
			if leader.State != "running" {
				return fmt.Errorf("leader %s is %q", leader.Name, leader.State)
			}
			return nil
		}
		return pc.streamsFrom(ctx, st, m, leader)
	})
}

// permanentError marks an error that ends a poll at once.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// permanent wraps err so that poll gives up at once.
func permanent(err error) error { return permanentError{err} }

// pollCond calls cond every patroniPollInterval until it returns nil,
// returns a permanent error, or ctx ends (the error then names what was
// awaited and the last reason it was not so).
func pollCond(ctx context.Context, what string, cond func(context.Context) error) error {
	var last error
	for {
		err := cond(ctx)
		if err == nil {
			return nil
		}
		if p, ok := errors.AsType[permanentError](err); ok {
			return p.err
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: patroni cluster not %s: %w (last: %v)", what, ctx.Err(), last)
		case <-time.After(patroniPollInterval):
		}
	}
}
