package statuspage

import (
	"fmt"
	"time"

	"github.com/dbrouter/dbrouter"
)

// report is the snapshot served as status.json; the package doc lists its
// keys.
type report struct {
	Primary string        `json:"primary"`
	Nodes   []nodeReport  `json:"nodes"`
	Events  []eventReport `json:"events"`
}

type nodeReport struct {
	Name       string  `json:"name"`
	Role       string  `json:"role"`
	State      string  `json:"state"`
	Readable   bool    `json:"readable"`
	Timeline   uint32  `json:"timeline"`
	LSN        string  `json:"lsn"`
	LagBytes   int64   `json:"lag_bytes"`
	LagSeconds float64 `json:"lag_seconds"`
	Reads      uint64  `json:"reads"`
	Writes     uint64  `json:"writes"`
	Errors     uint64  `json:"errors"`
	Misroutes  uint64  `json:"misroutes"`
	Retries    uint64  `json:"retries"`
	LatencyMS  float64 `json:"latency_ms"`
	LastError  string  `json:"last_error"`
}

type eventReport struct {
	At     string `json:"at"`
	Kind   string `json:"kind"`
	Node   string `json:"node"`
	Detail string `json:"detail"`
}

// eventTime is how events' times are written: RFC 3339 in UTC, with
// milliseconds.
const eventTime = "2006-01-02T15:04:05.000Z"

// newReport turns a Status into the snapshot. Empty lists stay lists, never
// null.
func newReport(s dbrouter.Status) report {
	r := report{
		Primary: s.Primary,
		Nodes:   make([]nodeReport, 0, len(s.Nodes)),
		Events:  make([]eventReport, 0, len(s.Events)),
	}
	for _, n := range s.Nodes {
		nr := nodeReport{
			Name:       n.Name,
			Role:       n.Role.String(),
			State:      n.State.String(),
			Readable:   n.Readable,
			Timeline:   n.Timeline,
			LSN:        formatLSN(n.LSN),
			LagBytes:   n.LagBytes,
			LagSeconds: n.LagTime.Seconds(),
			Reads:      n.Reads,
			Writes:     n.Writes,
			Errors:     n.Errors,
			Misroutes:  n.Misroutes,
			Retries:    n.Retries,
			LatencyMS:  float64(n.Latency) / float64(time.Millisecond),
		}
		if n.LastError != nil {
			nr.LastError = n.LastError.Error()
		}
		r.Nodes = append(r.Nodes, nr)
	}
	for _, e := range s.Events {
		r.Events = append(r.Events, eventReport{
			At:     e.Time.UTC().Format(eventTime),
			Kind:   e.Kind.Code(),
			Node:   e.Node,
			Detail: e.Detail,
		})
	}
	return r
}

// formatLSN formats a WAL position as PostgreSQL prints a pg_lsn: the upper
// 32 bits and the lower 32 bits in uppercase hexadecimal, without leading
// zeros, split by a slash ("0/16B3748").
func formatLSN(lsn uint64) string {
	return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn))
}
