// Package dbrouter is a replication-aware router for database/sql: one
// *dbrouter.DB stands where a *sql.DB stood, with one primary and N streaming
// replicas behind it. Reads go to replicas, writes and transactions to the
// primary; background probes learn who really is primary, who is healthy and
// how far each replica lags, and the router follows a failover without the
// application changing a line.
//
// # Creating a DB
//
// Open opens the handles from DSNs and owns them; New takes handles you
// opened and leaves them yours:
//
//	db, err := dbrouter.Open("pgx", primaryDSN, []string{replica1DSN, replica2DSN})
//	if err != nil { … }
//	defer db.Close()
//
// A DB has the *sql.DB method set with the same signatures (it satisfies
// sqlc's DBTX and GORM's ConnPool), plus Primary, Replica, Status,
// PrepareRouted and the options below. Bad input is an error, never a panic:
// errors.Is(err, ErrInvalidArgument) for nil handles, empty DSNs or unknown
// drivers, one *OptionError (errors.Is(err, ErrInvalidOption)) per invalid
// option value. Open and
// New probe every node once before they return (bounded by the probe
// timeout), so the first statements already go where the nodes say. After
// Close every method that runs statements returns ErrClosed.
//
// # Routing rules
//
//   - QueryContext, QueryRowContext: a replica chosen by the balancer
//     (RoundRobin by default; Random and LeastInFlight too) among those that
//     are up, not fenced, on the primary's timeline and within WithMaxLag.
//     With none eligible, the primary (or ErrNoReplica with
//     WithReplicaFallback(false)).
//   - A query that may write goes to the primary. A real lexer
//     (internal/sqlclass) classifies it, skipping comments, string literals,
//     dollar quotes and quoted identifiers; what it cannot prove read-only is a
//     write: INSERT/UPDATE/DELETE/MERGE, DDL, SELECT … FOR UPDATE/SHARE,
//     SELECT … INTO, data-modifying CTEs, several statements, and calls of
//     nextval, setval, pg_advisory_*lock*, pg_notify, lo_* and the like.
//   - ExecContext, Conn, BeginTx: the primary; a transaction stays on its node.
//     BeginTx with TxOptions.ReadOnly: a replica (not SERIALIZABLE ones, which
//     standbys refuse).
//   - UsePrimary(ctx): everything under ctx goes to the primary.
//   - Custom routers (WithRouter) run first, like Django's DATABASE_ROUTERS,
//     and may answer Primary, Replica or NodeNamed(name); safety holds
//     whatever they answer: a write never goes to a replica, and a down,
//     fenced or lagging node is never chosen.
//   - A read a replica refuses as a write (SQLSTATE 25006: a function the
//     lexer could not know writes) runs again on the primary and counts as a
//     misroute in Status. A read whose connection fails before any row came
//     back runs again once on another eligible node. Writes are never run
//     again by the router.
//
// PrepareContext keeps *sql.DB's signature: the statement is prepared on the
// node that serves that SQL now and stays there. PrepareRouted returns a Stmt
// that routes every call, prepares lazily on each node and follows failover.
//
// # Failover
//
// Every node is probed in the background (WithProbeInterval, default 1 s;
// WithProbeTimeout, default 1 s), all in parallel. For PostgreSQL one round
// trip learns whether the node is in recovery, its WAL position and its
// timeline; with Generic() probes only ping. A node is down after
// WithFailureThreshold (default 2) failed probes in a row and up again after
// one success; down nodes are retried with capped exponential backoff. Errors
// on real traffic that say the connection or server failed trigger an
// immediate, coalesced probe, but never mark a node down by themselves.
//
// The primary is the node that reports not being in recovery. If two do (an
// old primary came back after a promotion), the higher timeline wins and the
// other is fenced: it serves nothing until it reports being in recovery.
// Replicas on an older timeline than the primary's serve no reads. While no
// primary is known, probing runs every 100 ms, reads keep flowing to
// replicas, and writes wait up to WithPrimaryWait (and their context) before
// failing with ErrNoPrimary. WithAutoPromote makes the router promote the
// most advanced replica itself, only when the primary has been unreachable
// for the given time and every reachable replica reports that its WAL
// receiver is not streaming. Every change is an Event, logged through
// WithLogger and passed to WithEventHook.
//
// # Consistency
//
// A Session carried in the context (WithSession) reads its own writes. In
// the default causal mode (SessionCausal) a write records the primary's WAL
// insert position, and the session's reads go only to replicas that have
// replayed that far, else to the primary. In time mode (SessionTime) reads
// stay on the primary for a window after each write. Session.Token and
// ResumeSession carry the position across requests in a cookie or header.
// WithMaxLag drops replicas that are too far behind the primary, in bytes or
// in time, until they catch up.
//
// A DB is safe for concurrent use by multiple goroutines.
package dbrouter
