package fakedriver

// SQLSTATE codes of the ready-made errors.
const (
	CodeReadOnlySQLTransaction = "25006" // read_only_sql_transaction
	CodeAdminShutdown          = "57P01" // admin_shutdown
)

// Error is a server error with a PostgreSQL SQLSTATE, like pgconn.PgError or
// pq.Error. Code classifiers that look for an interface{ SQLState() string }
// with errors.As find it, wrapped or not.
type Error struct {
	Code    string // SQLSTATE, e.g. "25006"
	Message string
}

// Error returns "fakedriver: ERROR: <message> (SQLSTATE <code>)".
func (e *Error) Error() string {
	return "fakedriver: ERROR: " + e.Message + " (SQLSTATE " + e.Code + ")"
}

// SQLState returns e.Code.
func (e *Error) SQLState() string { return e.Code }

// ReadOnlyError returns a new *Error with SQLSTATE 25006, what a standby or a
// read-only transaction answers to a write. Exec inside a read-only
// transaction returns it.
func ReadOnlyError() error {
	return &Error{Code: CodeReadOnlySQLTransaction, Message: "cannot execute INSERT in a read-only transaction"}
}

// AdminShutdownError returns a new *Error with SQLSTATE 57P01, what a server
// answers on the connections it terminates when it shuts down.
func AdminShutdownError() error {
	return &Error{Code: CodeAdminShutdown, Message: "terminating connection due to administrator command"}
}
