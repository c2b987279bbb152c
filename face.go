package dbrouter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
)

// The SQL() face: a real *sql.DB, built on sql.OpenDB and the connector
// below, whose connections are virtual (vconn, in vconn.go). A virtual
// connection holds no server connection of its own: each statement is
// routed when database/sql hands it to the driver, that is when it is about
// to be sent, and runs on a connection taken then from the chosen node's
// pool (physConn). So nothing that waited in database/sql's pool, or for a
// node's connection, reaches a node that stopped being eligible meanwhile.
// A transaction, and a connection that left state in its server session,
// keep their node's connection for their life.

// SQL returns a *sql.DB that routes every statement by the DB's rules when
// it is about to be sent: reads to an eligible replica, writes and
// read-write transactions to the primary, read-only transactions to a
// replica (SERIALIZABLE ones to the primary), UsePrimary, custom routers and
// sessions in the context honoured, a read refused by a replica run again on
// the primary and a read whose connection failed run once more elsewhere.
// Hand it to whatever takes a *sql.DB: sqlx, bun, ent, goose, River,
// golang-migrate. It is the same *sql.DB on every call, and Close of the DB
// closes it.
//
// Its pool holds virtual connections, which hold no server connection while
// idle: SetMaxOpenConns on it bounds how many statements run at once through
// it, and the nodes' pools (the DB's SetMaxOpenConns) bound the server
// connections. Neither can deadlock the other: a virtual connection takes a
// node's connection only for one statement (until its rows are closed), a
// transaction, or, once it left state in its server session, its own life.
//
// A connection reads its own writes: after a write, its statements run on
// the write's server connection (lastval and currval see its insert) while
// that node is the primary, and its reads go to the primary, until it goes
// back to the pool. BEGIN sent as a statement pins it, as below. A statement that leaves state in
// the server session (SET, LISTEN, PREPARE, temporary tables, session
// advisory locks, …, see sqlclass.LeavesSessionState) pins the connection to
// its node, the primary, for its life: run such statements on a *sql.Conn,
// whose statements then all run on that server session. If that node stops
// being the primary, the connection's statements fail with ErrSessionMoved
// and it is discarded, never moved; a pooled connection that was pinned is
// discarded when it goes back to the pool, so session state never leaks to
// other callers. State set inside a read-only transaction, on a replica,
// pins the connection to that replica: its reads run there while it is
// eligible, and a write fails with an error that is ErrSessionMoved.
func (db *DB) SQL() *sql.DB { return db.face }

// GetDBConn returns SQL(), for GORM: it makes gormDB.DB() work when a DB is
// GORM's connection pool (gorm.Config{ConnPool: db}).
func (db *DB) GetDBConn() (*sql.DB, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	return db.face, nil
}

// connector makes the SQL() face's virtual connections.
type connector struct{ db *DB }

var (
	_ driver.Connector = (*connector)(nil)
	_ driver.Driver    = faceDriver{}
)

func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	if c.db.closed.Load() {
		return nil, ErrClosed
	}
	return &vconn{db: c.db}, nil
}

func (c *connector) Driver() driver.Driver { return faceDriver{c} }

// faceDriver is the SQL() face's driver.Driver, for sql.DB.Driver.
type faceDriver struct{ c *connector }

func (d faceDriver) Open(string) (driver.Conn, error) { return d.c.Connect(context.Background()) }

// ErrSessionMoved is returned by a statement on a connection of the SQL()
// face (or of DB.Conn) whose server session holds state (SET, LISTEN, a
// temporary table, a session advisory lock, …) on a node that is no longer
// the primary: the state cannot follow the primary, so the connection is
// discarded. Take a new connection and set the state up again. A write on a
// connection whose state was set on a replica (in a read-only transaction)
// fails with an error that is ErrSessionMoved too, for errors.Is.
var ErrSessionMoved = errors.New("dbrouter: the connection's server session is on a node that is no longer the primary")

// physConn is a connection of one node's pool, held for a statement, a
// transaction or a pinned server session. Its driver connection is used
// directly while the *sql.Conn holding it is not closed: database/sql lends
// it to nobody else meanwhile.
type physConn struct {
	n     *node
	conn  *sql.Conn
	dc    driver.Conn
	owner *vconn // when it is its owner's spare, reused statement after statement

	// Held by its vconn: how many rows opened on it are not closed yet, and
	// whether the vconn gave it up meanwhile (see vconn.drop), to be
	// released, discarded or not, as the last of them is closed.
	rows    int
	orphan  bool
	discard bool
}

// acquire takes a connection of n's pool for c.
func (c *vconn) acquire(ctx context.Context, n *node) (*physConn, error) {
	conn, err := n.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	var p *physConn
	if c.spareBusy {
		p = new(physConn)
	} else {
		c.spareBusy = true
		p = &c.spare
	}
	p.n, p.conn, p.owner = n, conn, c
	if err := conn.Raw(p.take); err != nil {
		p.release(c.db, true)
		return nil, err
	}
	return p, nil
}

// acquireAgain takes a connection of n, where a statement runs again after
// it failed elsewhere; n's failure to give one is a health signal, and the
// statement's error.
func (c *vconn) acquireAgain(ctx context.Context, n *node) (*physConn, error) {
	p, err := c.acquire(ctx, n)
	if err != nil {
		c.db.signal(n, err)
		return nil, nodeErr(n, "conn", err)
	}
	return p, nil
}

// acquireToRunAgain is acquireAgain for a statement run again outside take's
// loop: it returns no connection, and no error, when n lost the role the
// statement needs (primary, see serves) while it waited for the
// connection; nothing was sent there.
func (c *vconn) acquireToRunAgain(ctx context.Context, n *node, primary bool) (*physConn, error) {
	p, err := c.acquireAgain(ctx, n)
	if err != nil {
		return nil, err
	}
	if !c.db.serves(n, primary) {
		p.release(c.db, false)
		return nil, nil
	}
	return p, nil
}

// take is the conn.Raw callback that keeps the driver connection.
func (p *physConn) take(dc any) error {
	p.dc = dc.(driver.Conn)
	return nil
}

// release gives the connection back to its node's pool, or, when discard
// is set, makes the pool close it: it failed, holds session state no one
// else may see, or its node is no longer eligible (demoted, fenced, down).
func (p *physConn) release(db *DB, discard bool) {
	if !discard && !db.table.Load().readable(p.n) {
		discard = true
	}
	if discard {
		p.conn.Raw(badConn)
	}
	p.conn.Close()
	if c := p.owner; c != nil && p == &c.spare {
		*p = physConn{}
		c.spareBusy = false
	}
}

// badConn is the conn.Raw callback that makes database/sql discard the
// connection.
func badConn(any) error { return driver.ErrBadConn }
