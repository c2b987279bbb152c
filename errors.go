package dbrouter

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
)

var (
	// ErrClosed is returned, once DB.Close has been called, by the methods
	// that run statements: those of the DB (Query…, Exec…, BeginTx,
	// Prepare…, PrepareRouted, Conn, Ping…, PrimaryContext) and of a Stmt
	// prepared through it.
	ErrClosed = errors.New("dbrouter: database is closed")

	// ErrInvalidArgument is wrapped by the errors Open and New return for bad
	// arguments: an empty driver name or DSN, an unknown driver, a nil or
	// repeated handle.
	ErrInvalidArgument = errors.New("dbrouter: invalid argument")

	// ErrInvalidOption is wrapped by every *OptionError: Open and New return
	// them (joined, when there are several) for option values they refuse.
	ErrInvalidOption = errors.New("dbrouter: invalid option")

	// ErrNoPrimary is returned by writes (ExecContext, BeginTx, Conn, a write
	// through QueryContext) when no node is known to be the primary and none
	// became known within the primary wait (WithPrimaryWait) or before the
	// context ended.
	ErrNoPrimary = errors.New("dbrouter: no primary available")

	// ErrNoReplica is returned by reads when no replica is eligible (all are
	// down, fenced, on an older timeline or over the lag limit) and replica
	// fallback is off (WithReplicaFallback(false)).
	ErrNoReplica = errors.New("dbrouter: no replica available")

	// ErrPrimaryLost is returned by a write (Exec, a transaction's Commit,
	// a writing query such as INSERT … RETURNING through QueryContext or
	// QueryRowContext when its rows come back) that a node ran after the
	// router had seen that node stop being the primary: another node
	// became the primary, or it was fenced. The node may have committed it
	// on a history the cluster no longer follows (behind a pooler, a write
	// queued while the primary was down can commit on it when it restarts,
	// after a failover; a leader that hung past its key's ttl commits what
	// it was running when it resumes, before its HA manager demotes it), so
	// the router does not report it as done: it may be lost. The error
	// wraps the node's.
	ErrPrimaryLost = errors.New("dbrouter: the node stopped being the primary before the write returned: its outcome is unknown")

	// ErrInvalidToken is returned by ResumeSession for a token it cannot
	// parse.
	ErrInvalidToken = errors.New("dbrouter: invalid session token")
)

// argError is a bad argument to Open or New; it unwraps to
// ErrInvalidArgument.
type argError struct{ msg string }

func (e *argError) Error() string { return "dbrouter: " + e.msg }
func (e *argError) Unwrap() error { return ErrInvalidArgument }

func badArg(format string, args ...any) error { return &argError{fmt.Sprintf(format, args...)} }

// OptionError is an option value that Open or New refused. It unwraps to
// ErrInvalidOption; use errors.As to learn which option it was.
type OptionError struct {
	Option string // the option: "WithProbeInterval", "WithNames", …; "Option" for a nil Option
	Value  string // the value refused, as Go prints it: "0s", "nil", …
	Reason string // what is wrong with it, e.g. "must be > 0"
}

// Error returns e.g. "dbrouter: WithProbeInterval(0s): must be > 0".
func (e *OptionError) Error() string {
	return "dbrouter: " + e.Option + "(" + e.Value + "): " + e.Reason
}

// Unwrap returns ErrInvalidOption.
func (e *OptionError) Unwrap() error { return ErrInvalidOption }

// NodeError is an error from one node. It names the node (host:port/dbname
// or the name given with WithNames; never a password) and the operation, and
// unwraps to the driver's error, so errors.Is and errors.As see through it.
type NodeError struct {
	Node string // the node's name
	Op   string // "query", "exec", "begin", "commit", "rollback", "prepare", "conn", "ping", "probe", "close", "promote"
	Err  error
}

func (e *NodeError) Error() string {
	return "dbrouter: " + e.Op + " on " + e.Node + ": " + e.Err.Error()
}

func (e *NodeError) Unwrap() error { return e.Err }

func nodeErr(n *node, op string, err error) error {
	if err == nil {
		return nil
	}
	return &NodeError{Node: n.name, Op: op, Err: err}
}

// sqlStater is implemented by the error types of pgx (*pgconn.PgError) and
// lib/pq (*pq.Error).
type sqlStater interface{ SQLState() string }

// sqlState returns the SQLSTATE of err, or "".
func sqlState(err error) string {
	var s sqlStater
	if errors.As(err, &s) {
		return s.SQLState()
	}
	return ""
}

const (
	stateReadOnlyTx       = "25006" // read_only_sql_transaction
	stateNotInPrereqState = "55000" // object_not_in_prerequisite_state: "recovery is in progress"
	stateNotSupported     = "0A000" // feature_not_supported: "cannot access temporary or unlogged relations during recovery"

	stateSerializationFailure = "40001" // serialization_failure: on a standby, a conflict with recovery
	stateDeadlockDetected     = "40P01" // deadlock_detected: on a standby, a buffer pin deadlock with recovery
)

// isReadOnlyError reports whether err says the server refused a write
// because it is read-only (a hot standby).
func isReadOnlyError(err error) bool { return sqlState(err) == stateReadOnlyTx }

// refusedByStandby reports whether err, from a replica, says the statement
// can only run on a primary: a write (25006), a function that needs one,
// such as pg_current_wal_lsn() (55000, "recovery is in progress"), or an
// unlogged table (0A000).
func refusedByStandby(err error) bool {
	switch sqlState(err) {
	case stateReadOnlyTx, stateNotInPrereqState, stateNotSupported:
		return true
	}
	return false
}

// recoveryConflict reports whether err, from a replica, is a hot standby
// cancelling a statement that conflicted with the WAL it replays: 40001,
// "canceling statement due to conflict with recovery" (the primary removed
// rows the statement's snapshot still needed, or took a lock it held), or
// 40P01 with that message (a deadlock with recovery over a buffer pin; a
// 40P01 of its own, "deadlock detected", is a deadlock between sessions,
// e.g. over advisory locks a function takes, and not one). Outside a
// transaction, it says nothing of the node, and nothing ran.
func recoveryConflict(err error) bool {
	switch sqlState(err) {
	case stateSerializationFailure:
		return true
	case stateDeadlockDetected:
		return strings.Contains(err.Error(), "conflict with recovery")
	}
	return false
}

// poolerLostServer reports whether err is a connection pooler saying that
// the server behind it cannot be reached: PgBouncer's 08P01 "server login has
// been failing, try again later (server_login_retry)" and "pgbouncer cannot
// connect to server". (Its query_wait_timeout, 08P01 too, says only that the
// pooler's pool was full.) PgBouncer sends no other code for these, so the
// message decides.
func poolerLostServer(err error) bool {
	if sqlState(err) != "08P01" {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "server login has been failing") || strings.Contains(msg, "cannot connect to server")
}

// poolerQueueFull reports whether err is PgBouncer's query_wait_timeout: a
// client waited in the pooler's queue for a server connection too long.
func poolerQueueFull(err error) bool {
	return sqlState(err) == "08P01" && strings.Contains(err.Error(), "query_wait_timeout")
}

// isConnError reports whether err says the connection or the server failed,
// rather than the statement: the passive signal that triggers a probe, and
// the class of read error that is retried on another node.
func isConnError(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// The caller's context ended; that says nothing about the node.
		return false
	}
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	// pgconn's errors say when nothing was sent (pgconn.SafeToRetry), as
	// "conn closed" on a connection the driver already closed does.
	var retryable interface{ SafeToRetry() bool }
	if errors.As(err, &retryable) && retryable.SafeToRetry() {
		return true
	}
	switch s := sqlState(err); {
	case strings.HasPrefix(s, "08"): // connection_exception
		return true
	case s == "57P01", s == "57P02", s == "57P03": // admin_shutdown, crash_shutdown, cannot_connect_now
		return true
	case s == "57P05": // idle_session_timeout: the server closed the connection as it idled
		return true
	case s == "53300": // too_many_connections: the server is full, sent only as a connection starts
		return true
	}
	return false
}
