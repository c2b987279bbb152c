package patroni

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter"
)

// sample returns a GET /cluster answer captured from the real harness
// (internal/pgcluster) under testdata/patroni-VERSION/NAME.json.
func sample(t testing.TB, version, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "patroni-"+version, name+".json"))
	require.NoError(t, err)
	return b
}

// brief writes members as "m0* m1- m2": * marks the Primary, - NoLoadBalance.
func brief(ms []dbrouter.Member) string {
	var parts []string
	for _, m := range ms {
		s := m.Name
		if m.Primary {
			s += "*"
		}
		if m.NoLoadBalance {
			s += "-"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// ports returns each member's port as the JSON says it, read on its own
// (not through clusterJSON).
func ports(t testing.TB, body []byte) map[string]int {
	t.Helper()
	var v struct {
		Members []map[string]any `json:"members"`
	}
	require.NoError(t, json.Unmarshal(body, &v))
	out := map[string]int{}
	for _, m := range v.Members {
		if p, ok := m["port"].(float64); ok {
			out[m["name"].(string)] = int(p)
		}
	}
	return out
}

// TestParseClusterSamples reads every answer captured from Patroni 4.0.7
// and 3.0.2: a healthy cluster, tags, the moments of a switchover,
// synchronous and quorum commit, a replica restarting, maintenance mode.
func TestParseClusterSamples(t *testing.T) {
	tmpl, err := parseDSN(testDSN)
	require.NoError(t, err)
	for _, tc := range []struct {
		version, name, want string
	}{
		{"4.0.7", "healthy", "m0* m1 m2"},
		{"4.0.7", "tags", "m0* m1- m2"},
		{"4.0.7", "switchover-leader-stopping", "m1- m2"}, // the old leader stopping: no primary
		{"4.0.7", "switchover-no-leader", "m1- m2"},
		{"4.0.7", "switchover-old-leader-stopped", "m1- m2*"},
		{"4.0.7", "after-switchover", "m0 m1- m2*"},
		{"4.0.7", "sync", "m0 m1- m2*"},   // m0 is sync_standby
		{"4.0.7", "quorum", "m0 m1- m2*"}, // m0 is quorum_standby
		{"4.0.7", "replica-starting", "m0 m2*"},
		{"4.0.7", "replica-start-failed", "m0 m2*"},
		{"4.0.7", "paused", "m0 m1- m2*"},
		{"3.0.2", "healthy", "m0 m1 m2*"},
		{"3.0.2", "tags", "m0- m1 m2*"},
		{"3.0.2", "switchover-leader-stopping", "m0- m1"},
		{"3.0.2", "switchover-no-leader", "m0- m1"},
		{"3.0.2", "switchover-old-leader-stopped", "m0- m1*"},
		{"3.0.2", "after-switchover", "m0- m1* m2"},
		{"3.0.2", "sync", "m0- m1* m2"}, // m2 is sync_standby
		{"3.0.2", "replica-starting", "m0- m1*"},
		{"3.0.2", "replica-stopped", "m1* m2"},
		{"3.0.2", "paused", "m0- m1* m2"},
	} {
		t.Run(tc.version+"/"+tc.name, func(t *testing.T) {
			body := sample(t, tc.version, tc.name)
			ms, err := parseCluster(body, tmpl)
			require.NoError(t, err)
			assert.Equal(t, tc.want, brief(ms))
			port := ports(t, body)
			for _, m := range ms {
				assert.Equal(t, fmt.Sprintf("postgres://app:s3cr3t-pw@127.0.0.1:%d/app?sslmode=require", port[m.Name]), m.DSN, m.Name)
			}
		})
	}
}

// TestParseCluster covers what the samples do not: roles and states seen
// elsewhere, tag values, addresses, and answers that are not Patroni's.
func TestParseCluster(t *testing.T) {
	tmpl, err := parseDSN(testDSN)
	require.NoError(t, err)
	member := func(name, role, state string, extra string) string {
		return fmt.Sprintf(`{"name": %q, "role": %q, "state": %q, "host": "127.0.0.1", "port": 5432%s}`, name, role, state, extra)
	}
	cluster := func(ms ...string) string { return `{"members": [` + strings.Join(ms, ", ") + `], "scope": "c"}` }

	for _, tc := range []struct {
		name, body, want string
	}{
		{"standby cluster: its leader is no primary", cluster(
			member("s0", "standby_leader", "running", ""),
			member("s1", "replica", "streaming", "")), "s0 s1"},
		{"in archive recovery is left out", cluster(
			member("m0", "leader", "running", ""),
			member("m1", "replica", "in archive recovery", `, "lag": "unknown"`)), "m0*"},
		{"crashed and creating replica are left out", cluster(
			member("m0", "leader", "running", ""),
			member("m1", "replica", "crashed", ""),
			member("m2", "replica", "creating replica", "")), "m0*"},
		{"a leader not running is left out", cluster(
			member("m0", "leader", "starting", ""),
			member("m1", "replica", "streaming", "")), "m1"},
		{"noloadbalance true", cluster(member("m0", "leader", "running", `, "tags": {"noloadbalance": true}`)), "m0*-"},
		{`noloadbalance "true"`, cluster(member("m0", "replica", "running", `, "tags": {"noloadbalance": "true"}`)), "m0-"},
		{"noloadbalance 1", cluster(member("m0", "replica", "running", `, "tags": {"noloadbalance": 1}`)), "m0-"},
		{`noloadbalance "false", as Patroni's bool() reads it`, cluster(member("m0", "replica", "running", `, "tags": {"noloadbalance": "false"}`)), "m0-"},
		{"noloadbalance false", cluster(member("m0", "replica", "running", `, "tags": {"noloadbalance": false}`)), "m0"},
		{"noloadbalance 0", cluster(member("m0", "replica", "running", `, "tags": {"noloadbalance": 0}`)), "m0"},
		{`noloadbalance ""`, cluster(member("m0", "replica", "running", `, "tags": {"noloadbalance": ""}`)), "m0"},
		{"noloadbalance null", cluster(member("m0", "replica", "running", `, "tags": {"noloadbalance": null}`)), "m0"},
		{"other tags only", cluster(member("m0", "replica", "running", `, "tags": {"nofailover": true, "zone": "a"}`)), "m0"},
		{"a member without a host is left out", cluster(
			member("m0", "leader", "running", ""),
			`{"name": "m1", "role": "replica", "state": "running"}`), "m0*"},
		{"unknown fields and roles", cluster(
			member("m0", "leader", "running", `, "xlog": {"a": 1}, "new_field": [1, 2]`),
			member("m1", "some_future_role", "streaming", "")), "m0* m1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := parseCluster([]byte(tc.body), tmpl)
			require.NoError(t, err)
			assert.Equal(t, tc.want, brief(ms))
		})
	}

	t.Run("addresses", func(t *testing.T) {
		for _, tc := range []struct{ host, port, want string }{
			{"10.0.0.7", `, "port": 5433`, "postgres://app:s3cr3t-pw@10.0.0.7:5433/app?sslmode=require"},
			{"pg-1.db.internal", `, "port": 5432`, "postgres://app:s3cr3t-pw@pg-1.db.internal:5432/app?sslmode=require"},
			{"::1", `, "port": 5432`, "postgres://app:s3cr3t-pw@[::1]:5432/app?sslmode=require"},
			{"::1", "", "postgres://app:s3cr3t-pw@[::1]/app?sslmode=require"},
			{"db1", "", "postgres://app:s3cr3t-pw@db1/app?sslmode=require"},
		} {
			body := fmt.Sprintf(`{"members": [{"name": "m0", "role": "leader", "state": "running", "host": %q%s}]}`, tc.host, tc.port)
			ms, err := parseCluster([]byte(body), tmpl)
			require.NoError(t, err, tc.host)
			require.Len(t, ms, 1)
			assert.Equal(t, tc.want, ms[0].DSN)
		}
	})

	for _, tc := range []struct {
		name, body string
		is         error
		says       string
	}{
		{"not JSON", `<html>hello</html>`, ErrBadResponse, "not Patroni's JSON"},
		{"JSON of another shape", `{"members": {"m0": 1}}`, ErrBadResponse, "not Patroni's JSON"},
		{"a string port", cluster(`{"name": "m0", "role": "leader", "state": "running", "host": "h", "port": "5432"}`), ErrBadResponse, "not Patroni's JSON"},
		{"no members key", `{"scope": "c"}`, ErrBadResponse, "no members"},
		{"no members", `{"members": []}`, ErrBadResponse, "no members"},
		{"a member without a name", cluster(member("", "leader", "running", "")), ErrBadResponse, "no name"},
		{"a name twice", cluster(member("m0", "leader", "running", ""), member("m0", "replica", "running", "")), ErrBadResponse, `"m0" listed twice`},
		{"two leaders", cluster(member("m0", "leader", "running", ""), member("m1", "leader", "running", "")), ErrBadResponse, "two leaders"},
		{"a port out of range", cluster(`{"name": "m0", "role": "leader", "state": "running", "host": "h", "port": 70000}`), ErrBadResponse, `"m0": port 70000`},
		{"a host with a slash", cluster(`{"name": "m0", "role": "leader", "state": "running", "host": "h/x?host=evil", "port": 5432}`), ErrBadResponse, `member "m0": host`},
		{"a host with a space", cluster(`{"name": "m0", "role": "leader", "state": "running", "host": "h port=1", "port": 5432}`), ErrBadResponse, `member "m0": host`},
		{"every member down", cluster(member("m0", "leader", "stopped", ""), member("m1", "replica", "starting", "")), ErrNoMembers, "[m0 (stopped) m1 (starting)]"},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			ms, err := parseCluster([]byte(tc.body), tmpl)
			require.Error(t, err)
			assert.Nil(t, ms)
			assert.ErrorIs(t, err, tc.is)
			assert.Contains(t, err.Error(), tc.says)
			assert.NotContains(t, err.Error(), testPassword)
		})
	}
}

// TestTruthy pins down the noloadbalance reading against Python's bool().
func TestTruthy(t *testing.T) {
	for in, want := range map[string]bool{
		`true`: true, `false`: false, `1`: true, `0`: false, `0.0`: false, `2.5`: true,
		`"true"`: true, `"false"`: true, `"on"`: true, `""`: false,
		`[]`: false, `[0]`: true, `{}`: false, `{"a": 1}`: true, `null`: false,
	} {
		var v any
		require.NoError(t, json.Unmarshal([]byte(in), &v))
		assert.Equal(t, want, truthy(v), in)
	}
	assert.False(t, truthy(nil))
}

func TestValidHost(t *testing.T) {
	for _, h := range []string{"127.0.0.1", "::1", "fe80::1%eth0", "db1", "pg-1.db.internal", "pg_1"} {
		assert.True(t, validHost(h), h)
	}
	for _, h := range []string{"", "a b", "a/b", "a@b", "a:b", "[::1]", "h,i", "h'", strings.Repeat("a", 254)} {
		assert.False(t, validHost(h), h)
	}
}
