// Package fakedriver is a database/sql/driver fake for fast unit tests and
// benchmarks of the router: each fake database node is a *Connector, opened
// with sql.OpenDB.
//
// # Creating nodes
//
//	primary := fakedriver.New("primary")
//	db := sql.OpenDB(primary) // close it when done: database/sql starts a goroutine per *sql.DB
//
// A Connector is safe for concurrent use. Its settings (SetHook, SetResponder,
// SetDown, SetRecord) may be changed while queries run; each takes effect for
// operations that start after it returns. The package starts no goroutines.
//
// To reach nodes by name through sql.Open (for code that takes a driver name
// and DSNs), Register them: the DSNs are the connectors' names.
//
//	driverName, err := fakedriver.Register(primary, replica1)
//	db, err := sql.Open(driverName, "replica1")
//
// # Answers
//
// By default every query returns one row with one column, "node", whose value
// is the connector's name (a string), so a test can read back which node served
// it. Exec returns a result with RowsAffected 1 and LastInsertId 0. A Responder
// set with SetResponder replaces these answers, for example to answer a health
// probe's SQL with in-recovery, LSN and timeline columns.
//
// # Counting and recording
//
// Every operation (see Op) is counted with an atomic counter, read with Count.
// A log of every call (Op, SQL and the transaction it ran in) is kept only
// after SetRecord(true); read it with Calls. Counters and the log include
// operations that failed. Reset zeroes both.
//
// # Failure injection
//
// Each operation goes through the same steps, in this order:
//
//  1. it is counted and, when recording, logged;
//  2. while the node is down (SetDown), it fails: OpConnect with a
//     *net.OpError (connection refused), anything on an open connection with
//     driver.ErrBadConn;
//  3. on a connection that has seen driver.ErrBadConn it fails with
//     driver.ErrBadConn, as a broken connection would;
//  4. the Hook, if any, runs; a non-nil error is returned instead of running
//     the operation. An error that is (errors.Is) driver.ErrBadConn also
//     breaks the connection, so database/sql discards it;
//  5. the operation runs. Exec inside a read-only transaction fails with
//     ReadOnlyError, as on PostgreSQL; otherwise the Responder (or the default
//     answer) decides the result.
//
// Error values carrying a PostgreSQL SQLSTATE (*Error, ReadOnlyError,
// AdminShutdownError) let tests drive error classification as pgx's
// pgconn.PgError or lib/pq's pq.Error would.
package fakedriver
