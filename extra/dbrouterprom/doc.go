// Package dbrouterprom exports a dbrouter.DB's state to Prometheus: a
// collector that reads dbrouter.DB.Status at each scrape, and an opt-in
// histogram of statement durations fed by dbrouter.WithStatementHook. It is
// a module of its own, so dbrouter itself never requires client_golang.
//
// # Registering
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(dbrouterprom.NewCollector(db))
//	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// To time every statement, make the histogram first and hand its Observe to
// the DB:
//
//	h, err := dbrouterprom.NewStatementHistogram()
//	db, err := dbrouter.Open("pgx", primaryDSN, replicaDSNs, dbrouter.WithStatementHook(h.Observe))
//	reg.MustRegister(dbrouterprom.NewCollector(db), h)
//
// Two DBs in one process export the same metric names; register each under
// a label of its own with prometheus.WrapRegistererWith.
//
// # Metrics
//
// From Status, per node (label node: the node's name as in
// dbrouter.NodeStatus, host:port/dbname or as set with dbrouter.WithNames;
// never a password):
//
//	dbrouter_node_up                 gauge    1 while the node answers its probes (state up or fenced)
//	dbrouter_node_primary            gauge    1 for the node that takes writes now
//	dbrouter_node_readable           gauge    1 while the node serves reads
//	dbrouter_node_fenced             gauge    1 while the node is fenced
//	dbrouter_replica_lag_bytes       gauge    WAL bytes behind the primary (0 on the primary)
//	dbrouter_replica_lag_seconds     gauge    how long ago the primary was where the node is (0 on the primary)
//	dbrouter_probe_duration_seconds  gauge    how long the last probe took
//	dbrouter_statements_total        counter  statements routed to the node; label route: "read" or "write"
//	dbrouter_statement_errors_total  counter  of those, the ones that failed
//	dbrouter_misroutes_total         counter  reads the node refused as writes, run again on the primary
//	dbrouter_retries_total           counter  reads whose connection failed on the node, run again elsewhere
//
// Per node, the node's connection pool (dbrouter.NodeStatus.Pool), with the
// names, help texts, types and db_name label (the node's name) of
// client_golang's collectors.NewDBStatsCollector, so dashboards made for it
// work unchanged: go_sql_max_open_connections, go_sql_open_connections,
// go_sql_in_use_connections, go_sql_idle_connections,
// go_sql_wait_count_total, go_sql_wait_duration_seconds_total,
// go_sql_max_idle_closed_total, go_sql_max_idle_time_closed_total and
// go_sql_max_lifetime_closed_total.
//
// For the whole DB:
//
//	dbrouter_events_total            counter  events since the DB was opened; label kind: dbrouter.EventKind.Code()
//	                                          ("node_down", "primary_changed", …; every kind is exported, 0 until it happens)
//
// From a StatementHistogram:
//
//	dbrouter_statement_duration_seconds  histogram  labels node and route ("read" or "write", by dbrouter.Statement.Write)
package dbrouterprom
