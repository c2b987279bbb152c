package dbrouter

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// A Dialect knows how to probe a node. PostgreSQL() learns role, WAL position
// and timeline in one round trip; Generic() only pings.
type Dialect interface {
	probe(ctx context.Context, q querier, args []any) probeResult
	knowsRoles() bool
}

// querier is what a probe runs on: the node's probe pool.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	PingContext(ctx context.Context) error
}

// simpleArgs returns the arguments that make h's driver send a query
// without a server-side prepared statement, whatever exec mode its DSN sets:
// for pgx (its stdlib driver), pgx.QueryExecModeSimpleProtocol, which pgx
// takes from a query's first argument; for other drivers, none. The probes
// and the router's own queries use them: behind a transaction pooler
// (PgBouncer before 1.21), a named prepared statement of one client
// collides with another's on the server ("prepared statement
// \"stmtcache_…\" already exists", 42P05), and probes failing that way
// once marked a whole healthy cluster down.
func simpleArgs(h *sql.DB) []any {
	if t := reflect.TypeOf(h.Driver()); t != nil && t.Kind() == reflect.Pointer &&
		t.Elem().PkgPath() == "github.com/jackc/pgx/v5/stdlib" && t.Elem().Name() == "Driver" {
		return []any{pgx.QueryExecModeSimpleProtocol}
	}
	return nil
}

// PostgreSQL returns the dialect for PostgreSQL streaming replication (the
// default). Any role can probe; with pg_monitor (or pg_read_all_stats) it
// also sees the WAL receiver's state, which WithAutoPromote needs.
func PostgreSQL() Dialect { return postgresDialect{} }

// Generic returns a dialect for any driver: probes only ping, so roles stay
// as configured and there is no failover, fencing or lag limit.
func Generic() Dialect { return genericDialect{} }

// probeResult is what one probe learned.
type probeResult struct {
	err        error
	inRecovery bool
	lsn        uint64 // current WAL position on a primary, replayed on a replica
	timeline   uint32 // a primary's current timeline; the one a replica's receiver streams; 0 when unknown
	restartTL  uint32 // a replica's last restartpoint's timeline (a lower bound of its own); 0 on a primary
	receiver   string // a replica's WAL receiver: "streaming", "none", "hidden", …; "" on a primary
	sysid      uint64 // the cluster's system identifier, shared by a primary and its replicas; 0 when unknown
	started    int64  // when the server's postmaster started (µs since 1970): two DSNs of one server share it; 0 when unknown
	seq        uint64 // which probe of its node it is, in the order they ran (see node.probeSeq); 0 when not a probe's
}

type genericDialect struct{}

func (genericDialect) knowsRoles() bool { return false }
func (genericDialect) probe(ctx context.Context, q querier, _ []any) probeResult {
	return probeResult{err: q.PingContext(ctx)}
}

type postgresDialect struct{}

func (postgresDialect) knowsRoles() bool { return true }

// postgresProbe learns, in one round trip, whether the node is in recovery,
// its WAL position, its timeline and the state of its WAL receiver ("none"
// when it runs none; "hidden" when the probing role lacks pg_read_all_stats
// and sees no details).
//
// The current timeline of a primary is the first 8 hex digits of its current
// WAL file name: (pg_control_checkpoint()).timeline_id lags after a
// promotion until the next checkpoint. A replica's is the one its receiver
// streams (NULL when it streams nothing, or the role may not see it); the
// timeline of its last restartpoint comes beside it, a lower bound that
// stays old for up to checkpoint_timeout after a promotion. The system
// identifier, which initdb draws and every replica copies, tells a node of
// another cluster (a DSN pointing at the wrong server) from a member; the
// postmaster's start time tells two servers from two DSNs of one server.
const postgresProbe = `SELECT r,
	(CASE WHEN r THEN COALESCE(pg_last_wal_replay_lsn(), '0/0') ELSE pg_current_wal_lsn() END - '0/0')::text,
	CASE WHEN r THEN (SELECT received_tli FROM pg_stat_wal_receiver)
		ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
	CASE WHEN r THEN (pg_control_checkpoint()).timeline_id ELSE 0 END,
	CASE WHEN r THEN COALESCE((SELECT COALESCE(status, 'hidden') FROM pg_stat_wal_receiver), 'none') ELSE '' END,
	(pg_control_system()).system_identifier::text,
	(extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint
FROM pg_is_in_recovery() AS r`

func (postgresDialect) probe(ctx context.Context, q querier, args []any) probeResult {
	var (
		r          probeResult
		lsn, sysid string
		tl, cptTL  sql.NullInt64
	)
	r.err = q.QueryRowContext(ctx, postgresProbe, args...).Scan(&r.inRecovery, &lsn, &tl, &cptTL, &r.receiver, &sysid, &r.started)
	if r.err != nil {
		return r
	}
	v, err := strconv.ParseUint(lsn, 10, 64)
	if err != nil {
		r.err = fmt.Errorf("probe: bad WAL position %q: %w", lsn, err)
		return r
	}
	if r.sysid, r.err = parseSystemID(sysid); r.err != nil {
		return r
	}
	r.lsn, r.timeline, r.restartTL = v, uint32(tl.Int64), uint32(cptTL.Int64)
	return r
}

// parseSystemID parses (pg_control_system()).system_identifier, sent as
// text: a bigint, which initdb never draws negative.
func parseSystemID(s string) (uint64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("probe: bad system identifier %q: %w", s, err)
	}
	return uint64(id), nil
}
