package pgcluster

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// GET /cluster answers as Patroni 3.0.2 and 4.0.7 sent them here (trimmed).
const (
	patroni3Cluster = `{"members": [
		{"name": "m0", "role": "replica", "state": "running", "api_url": "http://127.0.0.1:41405/patroni",
		 "host": "127.0.0.1", "port": 38817, "timeline": 1, "lag": 0},
		{"name": "m1", "role": "replica", "state": "running", "api_url": "http://127.0.0.1:43063/patroni",
		 "host": "127.0.0.1", "port": 34455, "timeline": 1, "lag": "unknown", "tags": {"noloadbalance": true}},
		{"name": "m2", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:44219/patroni",
		 "host": "127.0.0.1", "port": 35793, "timeline": 1}]}`
	patroni4Cluster = `{"members": [
		{"name": "m0", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:39339/patroni",
		 "host": "127.0.0.1", "port": 33491, "timeline": 2},
		{"name": "m1", "role": "sync_standby", "state": "streaming", "api_url": "http://127.0.0.1:42537/patroni",
		 "host": "127.0.0.1", "port": 39057, "timeline": 2, "lag": 1234, "pending_restart": true,
		 "tags": {"nofailover": true}},
		{"name": "m2", "role": "replica", "state": "stopped", "api_url": "http://127.0.0.1:43143/patroni",
		 "host": "127.0.0.1", "port": 45031, "lag": "unknown"}],
		"scope": "pgcluster", "pause": true}`
)

func TestPatroniStateJSON(t *testing.T) {
	lag := func(n int64) *int64 { return &n }
	for _, tc := range []struct {
		name       string
		in         string
		leader     string
		pause      bool
		want       map[string]PatroniMemberState // Name, Role, State, Port, Timeline, Lag, PendingRestart
		tags       map[string]string             // member -> tag that must be set
		notReplica []string
	}{
		{
			name: "patroni 3", in: patroni3Cluster, leader: "m2",
			want: map[string]PatroniMemberState{
				"m0": {Role: "replica", State: "running", Port: 38817, Timeline: 1, Lag: lag(0)},
				"m1": {Role: "replica", State: "running", Port: 34455, Timeline: 1},
				"m2": {Role: "leader", State: "running", Port: 35793, Timeline: 1},
			},
			tags:       map[string]string{"m1": "noloadbalance"},
			notReplica: []string{"m2"},
		},
		{
			name: "patroni 4", in: patroni4Cluster, leader: "m0", pause: true,
			want: map[string]PatroniMemberState{
				"m0": {Role: "leader", State: "running", Port: 33491, Timeline: 2},
				"m1": {Role: "sync_standby", State: "streaming", Port: 39057, Timeline: 2, Lag: lag(1234), PendingRestart: true},
				"m2": {Role: "replica", State: "stopped", Port: 45031},
			},
			tags:       map[string]string{"m1": "nofailover"},
			notReplica: []string{"m0"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st PatroniState
			require.NoError(t, json.Unmarshal([]byte(tc.in), &st))
			assert.Equal(t, tc.pause, st.Pause)
			l, ok := st.Leader()
			require.True(t, ok)
			assert.Equal(t, tc.leader, l.Name)
			require.Len(t, st.Members, len(tc.want))
			for name, want := range tc.want {
				got, ok := st.Member(name)
				require.True(t, ok, name)
				assert.Equal(t, want.Role, got.Role, name)
				assert.Equal(t, want.State, got.State, name)
				assert.Equal(t, "127.0.0.1", got.Host, name)
				assert.Equal(t, want.Port, got.Port, name)
				assert.Equal(t, want.Timeline, got.Timeline, name)
				assert.Equal(t, want.Lag, got.Lag, name)
				assert.Equal(t, want.PendingRestart, got.PendingRestart, name)
				assert.Contains(t, got.APIURL, "http://127.0.0.1:", name)
				if tag, ok := tc.tags[name]; ok {
					assert.True(t, got.Tag(tag), "%s: tag %s", name, tag)
				} else {
					assert.False(t, got.Tag("noloadbalance"), name)
				}
				assert.Equal(t, !slices.Contains(tc.notReplica, name), got.IsReplica(), name)
			}
			_, ok = st.Member("nobody")
			assert.False(t, ok)
		})
	}

	t.Run("no leader", func(t *testing.T) {
		var st PatroniState
		require.NoError(t, json.Unmarshal([]byte(`{"members": [{"name": "m0", "role": "replica", "state": "running"}]}`), &st))
		_, ok := st.Leader()
		assert.False(t, ok)
	})
}

func TestPatroniVersion(t *testing.T) {
	for _, tc := range []struct {
		out     string
		version string
		major   int
		timing  patroniTiming
	}{
		{"patroni 3.0.2\n", "3.0.2", 3, patroniTiming{ttl: 10, loopWait: 1, retryTimeout: 4}},
		{"patroni 4.0.7\n", "4.0.7", 4, patroniTiming{ttl: 20, loopWait: 1, retryTimeout: 5}},
		{"patroni 4.1\n", "4.1", 4, patroniTiming{ttl: 20, loopWait: 1, retryTimeout: 5}},
	} {
		t.Run(tc.version, func(t *testing.T) {
			v, major, err := parsePatroniVersion(tc.out)
			require.NoError(t, err)
			assert.Equal(t, tc.version, v)
			assert.Equal(t, tc.major, major)
			timing := timingFor(major)
			assert.Equal(t, tc.timing, timing)
			assert.LessOrEqual(t, timing.loopWait+2*timing.retryTimeout, timing.ttl, "Patroni's rule")
		})
	}
	_, _, err := parsePatroniVersion("Traceback (most recent call last):")
	assert.Error(t, err)
}

func TestPatroniNormalTags(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   map[string]any
		want map[string]any
	}{
		{"nil", nil, nil},
		{"false dropped", map[string]any{"noloadbalance": false, "nofailover": nil}, nil},
		{"true kept", map[string]any{"noloadbalance": true, "nofailover": false}, map[string]any{"noloadbalance": true}},
		{"numbers as JSON", map[string]any{"failover_priority": 2}, map[string]any{"failover_priority": float64(2)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := normalTags(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
