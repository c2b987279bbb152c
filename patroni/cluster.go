package patroni

// Patroni's GET /cluster answer, and the members it makes.

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/dbrouter/dbrouter"
)

// Member roles in GET /cluster.
const (
	roleLeader        = "leader"         // the primary
	roleStandbyLeader = "standby_leader" // a standby cluster's leader: a replica of another cluster
)

// clusterJSON is the part of GET /cluster that Discover reads. Patroni 3
// and 4 send the same fields.
type clusterJSON struct {
	Members []memberJSON `json:"members"`
}

// memberJSON is one member in GET /cluster.
type memberJSON struct {
	Name string `json:"name"`
	// Role is "leader", "standby_leader", "replica", "sync_standby" or
	// "quorum_standby" (Patroni 4).
	Role string `json:"role"`
	// State is "running" (a leader; a replica on Patroni 3, and on Patroni
	// 4 while its WAL receiver's state is unknown), "streaming" (a replica
	// whose WAL receiver streams, Patroni 4), "in archive recovery" (one
	// that does not stream, Patroni 4), or "stopping", "stopped",
	// "starting", "start failed", "restarting", "crashed", "creating
	// replica", …
	State string `json:"state"`
	// Host and Port are the member's postgresql.connect_address; Patroni
	// leaves out the host of a member that published none, and the port
	// when the address has none.
	Host string         `json:"host"`
	Port int            `json:"port"`
	Tags map[string]any `json:"tags"`
}

// usable reports whether a member in state serves queries: a running
// leader, a running or streaming replica.
func usable(state string) bool { return state == "running" || state == "streaming" }

// parseCluster turns a GET /cluster body into the members that serve
// queries, each with its DSN made from t. Its errors name members, never the
// DSN.
func parseCluster(body []byte, t dsnTemplate) ([]dbrouter.Member, error) {
	var c clusterJSON
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, badAnswer(ErrBadResponse, "not Patroni's JSON: %v", err)
	}
	if len(c.Members) == 0 {
		return nil, badAnswer(ErrBadResponse, "no members")
	}
	seen := make(map[string]bool, len(c.Members))
	leader := ""
	var out []dbrouter.Member
	var left []string // "name (state)" of the members left out
	for _, m := range c.Members {
		if m.Name == "" {
			return nil, badAnswer(ErrBadResponse, "a member has no name")
		}
		if seen[m.Name] {
			return nil, badAnswer(ErrBadResponse, "member %q listed twice", m.Name)
		}
		seen[m.Name] = true
		if m.Role == roleLeader || m.Role == roleStandbyLeader {
			if leader != "" {
				return nil, badAnswer(ErrBadResponse, "two leaders, %q and %q", leader, m.Name)
			}
			leader = m.Name
		}
		if m.Port < 0 || m.Port > 65535 {
			return nil, badAnswer(ErrBadResponse, "member %q: port %d out of range", m.Name, m.Port)
		}
		if m.Host != "" && !validHost(m.Host) {
			return nil, badAnswer(ErrBadResponse, "member %q: host %q is neither a host name nor an IP address", m.Name, m.Host)
		}
		if !usable(m.State) || m.Host == "" {
			state := m.State
			if m.Host == "" {
				state += ", no host"
			}
			left = append(left, fmt.Sprintf("%s (%s)", m.Name, state))
			continue
		}
		out = append(out, dbrouter.Member{
			Name:          m.Name,
			DSN:           t.forMember(m.Host, m.Port),
			Primary:       m.Role == roleLeader,
			NoLoadBalance: truthy(m.Tags["noloadbalance"]),
		})
	}
	if len(out) == 0 {
		return nil, badAnswer(ErrNoMembers, "no member running or streaming with a host: %v", left)
	}
	return out, nil
}

// truthy reports whether a tag's JSON value is true as Python's bool() sees
// it, which is how Patroni reads its noloadbalance tag (and so how its GET
// /replica health check answers for HAProxy): true, a number other than 0,
// a string other than "" (the string "false" too), a non-empty list or
// object.
func truthy(v any) bool {
	switch v := v.(type) {
	case bool:
		return v
	case float64:
		return v != 0
	case string:
		return v != ""
	case []any:
		return len(v) > 0
	case map[string]any:
		return len(v) > 0
	}
	return false // nil: null or no such tag
}

// validHost reports whether h is an IP address or a host name: letters,
// digits, '-', '_' and dots, at most 253 bytes. Anything else could change
// the meaning of the DSN it goes into.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}
