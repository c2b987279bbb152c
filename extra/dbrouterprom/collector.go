package dbrouterprom

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dbrouter/dbrouter"
)

// NewCollector returns a collector that exports db's Status at each scrape:
// per node, its health, role, lag, probe latency, statement counters and
// pool; for the DB, its events by kind. The package doc lists the metrics.
// It is safe for concurrent use.
func NewCollector(db *dbrouter.DB) prometheus.Collector {
	if db == nil {
		return &collector{}
	}
	return &collector{status: db.Status}
}

// collector exports one DB's Status.
type collector struct {
	status func() dbrouter.Status // nil: NewCollector was given no DB
}

var _ prometheus.Collector = (*collector)(nil)

// errNilDB is what a scrape of a collector made from a nil DB reports.
var errNilDB = errors.New("dbrouterprom: NewCollector was given a nil *dbrouter.DB")

var (
	nodeLabel  = []string{"node"}
	routeLabel = []string{"node", "route"}

	nodeUpDesc = prometheus.NewDesc("dbrouter_node_up",
		"1 while the node answers its probes (state up or fenced), 0 while it is down or not probed yet.", nodeLabel, nil)
	nodePrimaryDesc = prometheus.NewDesc("dbrouter_node_primary",
		"1 for the node that takes writes now, else 0.", nodeLabel, nil)
	nodeReadableDesc = prometheus.NewDesc("dbrouter_node_readable",
		"1 while the node serves reads (a replica that is up, on the primary's timeline and within the lag limit), else 0.", nodeLabel, nil)
	nodeFencedDesc = prometheus.NewDesc("dbrouter_node_fenced",
		"1 while the node is fenced: it says it is a primary but lost to a higher timeline, and serves nothing.", nodeLabel, nil)
	lagBytesDesc = prometheus.NewDesc("dbrouter_replica_lag_bytes",
		"WAL bytes the node has not replayed yet, behind the primary; 0 on the primary.", nodeLabel, nil)
	lagSecondsDesc = prometheus.NewDesc("dbrouter_replica_lag_seconds",
		"How long ago the primary was where the node has replayed to; 0 on the primary.", nodeLabel, nil)
	probeDurationDesc = prometheus.NewDesc("dbrouter_probe_duration_seconds",
		"How long the node's last probe took.", nodeLabel, nil)
	statementsDesc = prometheus.NewDesc("dbrouter_statements_total",
		"Statements routed to the node, as reads (queries, read-only transactions) or as writes (Exec, write queries, transactions, Conn).", routeLabel, nil)
	statementErrorsDesc = prometheus.NewDesc("dbrouter_statement_errors_total",
		"Statements routed to the node that failed.", nodeLabel, nil)
	misroutesDesc = prometheus.NewDesc("dbrouter_misroutes_total",
		"Reads the node refused as writes (SQLSTATE 25006), run again on the primary.", nodeLabel, nil)
	retriesDesc = prometheus.NewDesc("dbrouter_retries_total",
		"Reads whose connection failed on the node, run again on another node.", nodeLabel, nil)
	eventsDesc = prometheus.NewDesc("dbrouter_events_total",
		"Router events since the DB was opened, by kind (node_down, primary_changed, fenced, …).", []string{"kind"}, nil)
)

// The pool's metrics, as client_golang's collectors.NewDBStatsCollector
// names and describes them, with db_name a variable label: the node's name.
var (
	dbNameLabel = []string{"db_name"}

	maxOpenDesc = prometheus.NewDesc("go_sql_max_open_connections",
		"Maximum number of open connections to the database.", dbNameLabel, nil)
	openDesc = prometheus.NewDesc("go_sql_open_connections",
		"The number of established connections both in use and idle.", dbNameLabel, nil)
	inUseDesc = prometheus.NewDesc("go_sql_in_use_connections",
		"The number of connections currently in use.", dbNameLabel, nil)
	idleDesc = prometheus.NewDesc("go_sql_idle_connections",
		"The number of idle connections.", dbNameLabel, nil)
	waitCountDesc = prometheus.NewDesc("go_sql_wait_count_total",
		"The total number of connections waited for.", dbNameLabel, nil)
	waitDurationDesc = prometheus.NewDesc("go_sql_wait_duration_seconds_total",
		"The total time blocked waiting for a new connection.", dbNameLabel, nil)
	maxIdleClosedDesc = prometheus.NewDesc("go_sql_max_idle_closed_total",
		"The total number of connections closed due to SetMaxIdleConns.", dbNameLabel, nil)
	maxIdleTimeClosedDesc = prometheus.NewDesc("go_sql_max_idle_time_closed_total",
		"The total number of connections closed due to SetConnMaxIdleTime.", dbNameLabel, nil)
	maxLifetimeClosedDesc = prometheus.NewDesc("go_sql_max_lifetime_closed_total",
		"The total number of connections closed due to SetConnMaxLifetime.", dbNameLabel, nil)
)

var descs = []*prometheus.Desc{
	nodeUpDesc, nodePrimaryDesc, nodeReadableDesc, nodeFencedDesc, lagBytesDesc, lagSecondsDesc, probeDurationDesc,
	statementsDesc, statementErrorsDesc, misroutesDesc, retriesDesc, eventsDesc,
	maxOpenDesc, openDesc, inUseDesc, idleDesc, waitCountDesc, waitDurationDesc,
	maxIdleClosedDesc, maxIdleTimeClosedDesc, maxLifetimeClosedDesc,
}

// eventKinds are the kinds exported (at 0) before they first happen, so a
// rate over them starts from the first one. Kinds a newer dbrouter adds are
// exported once they happen.
var eventKinds = []dbrouter.EventKind{
	dbrouter.EventNodeDown, dbrouter.EventNodeUp, dbrouter.EventRoleChanged, dbrouter.EventPrimaryChanged,
	dbrouter.EventNoPrimary, dbrouter.EventFenced, dbrouter.EventUnfenced, dbrouter.EventReplicaExcluded,
	dbrouter.EventReplicaIncluded, dbrouter.EventPromoted, dbrouter.EventPromoteFailed, dbrouter.EventMissingGrant,
	dbrouter.EventMemberJoined, dbrouter.EventMemberLeft, dbrouter.EventSourceUnreachable, dbrouter.EventSourceReachable,
	dbrouter.EventStatementClash,
}

// Describe sends the descriptions of every metric Collect sends.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range descs {
		ch <- d
	}
}

// Collect sends the metrics of one Status, taken now.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if c.status == nil {
		ch <- prometheus.NewInvalidMetric(nodeUpDesc, errNilDB)
		return
	}
	s := c.status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) { send(ch, d, prometheus.GaugeValue, v, labels) }
	counter := func(d *prometheus.Desc, v float64, labels ...string) { send(ch, d, prometheus.CounterValue, v, labels) }
	for _, n := range s.Nodes {
		gauge(nodeUpDesc, bit(n.State == dbrouter.StateUp || n.State == dbrouter.StateFenced), n.Name)
		gauge(nodePrimaryDesc, bit(s.Primary != "" && n.Name == s.Primary), n.Name)
		gauge(nodeReadableDesc, bit(n.Readable), n.Name)
		gauge(nodeFencedDesc, bit(n.State == dbrouter.StateFenced), n.Name)
		gauge(lagBytesDesc, float64(n.LagBytes), n.Name)
		gauge(lagSecondsDesc, n.LagTime.Seconds(), n.Name)
		gauge(probeDurationDesc, n.Latency.Seconds(), n.Name)
		counter(statementsDesc, float64(n.Reads), n.Name, "read")
		counter(statementsDesc, float64(n.Writes), n.Name, "write")
		counter(statementErrorsDesc, float64(n.Errors), n.Name)
		counter(misroutesDesc, float64(n.Misroutes), n.Name)
		counter(retriesDesc, float64(n.Retries), n.Name)

		p := n.Pool
		gauge(maxOpenDesc, float64(p.MaxOpenConnections), n.Name)
		gauge(openDesc, float64(p.OpenConnections), n.Name)
		gauge(inUseDesc, float64(p.InUse), n.Name)
		gauge(idleDesc, float64(p.Idle), n.Name)
		counter(waitCountDesc, float64(p.WaitCount), n.Name)
		counter(waitDurationDesc, p.WaitDuration.Seconds(), n.Name)
		counter(maxIdleClosedDesc, float64(p.MaxIdleClosed), n.Name)
		counter(maxIdleTimeClosedDesc, float64(p.MaxIdleTimeClosed), n.Name)
		counter(maxLifetimeClosedDesc, float64(p.MaxLifetimeClosed), n.Name)
	}
	// By Code: kinds a newer dbrouter adds, unknown to this one, may share
	// one ("unknown"), and a label set must be sent once.
	events := make(map[string]uint64, len(eventKinds)+len(s.EventCounts))
	for _, k := range eventKinds {
		events[k.Code()] = 0
	}
	for k, n := range s.EventCounts {
		events[k.Code()] += n
	}
	for kind, n := range events {
		counter(eventsDesc, float64(n), kind)
	}
}

// send sends one metric, or, when a label value is refused (a node name that
// is not valid UTF-8), an invalid metric saying so: the scrape reports the
// error rather than the process panicking.
func send(ch chan<- prometheus.Metric, d *prometheus.Desc, t prometheus.ValueType, v float64, labels []string) {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	ch <- m
}

func bit(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
