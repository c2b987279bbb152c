package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	bxresolver "github.com/bxcodec/dbresolver/v2"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	gormresolver "gorm.io/plugin/dbresolver"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

// contender is one way of spreading reads and writes over a primary and its
// replicas, set up the way its README recommends, with its defaults.
type contender struct {
	key, title string
	modules    []string // module paths whose versions the report names
	usage      string   // how it is set up, for the report
	baseline   bool     // not a router: the plain *sql.DB

	// open connects to a running cluster.
	open func(primary *pgcluster.Node, replicas []*pgcluster.Node) (client, error)

	// wrap puts the contender over *sql.DB handles (scenario 1); nil when it
	// cannot wrap handles, and wrapNote says why.
	wrap     func(primary *sql.DB, replicas []*sql.DB) (caller, func() error, error)
	wrapNote string

	// ryw names the contender's read-your-writes feature ("" for none) and
	// newRYW starts one (a session for one user) for scenario 6.
	ryw     string
	rywNote string
	newRYW  func() func(context.Context) context.Context
}

// client is what the load and the trials do through a contender.
type client interface {
	// write inserts a row and returns the node that took it, by the server's own account.
	write(ctx context.Context, v int64) (node string, err error)
	// read returns the node that served a read.
	read(ctx context.Context) (node string, err error)
	// put inserts key k (scenario 6).
	put(ctx context.Context, k int64) error
	// get reads key k back: the node that served the read and whether k was there.
	get(ctx context.Context, k int64) (node string, found bool, err error)
	close() error
}

// The statements of the load and the trials. Every node runs with
// cluster_name set to its name (pgcluster), and the node column defaults to
// it, so each statement learns, server-side, where it ran.
const (
	loadTable = "peers_load"
	rwTable   = "peers_rw"
	markTable = "peers_mark"

	writeSQL = "INSERT INTO " + loadTable + " (v) VALUES ($1) RETURNING node"
	readSQL  = "SELECT current_setting('cluster_name')"
	putSQL   = "INSERT INTO " + rwTable + " (k) VALUES ($1)"
	getSQL   = "SELECT current_setting('cluster_name'), EXISTS (SELECT 1 FROM " + rwTable + " WHERE k = $1)"
)

// gormSQL is q with GORM's "?" placeholders.
func gormSQL(q string) string { return strings.NewReplacer("$1", "?", "$2", "?").Replace(q) }

// querier is what *sql.DB, *dbrouter.DB and bxcodec's dbresolver.DB share.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

var (
	_ querier = (*sql.DB)(nil)
	_ querier = (*dbrouter.DB)(nil)
	_ querier = bxresolver.DB(nil)
)

// contenders, in the order of the report.
var contenders = []*contender{
	{
		key: "dbrouter", title: "dbrouter",
		modules: []string{"github.com/dbrouter/dbrouter"},
		usage:   "`dbrouter.Open(\"pgx\", primary, replicas)`, default options",
		open: func(p *pgcluster.Node, rs []*pgcluster.Node) (client, error) {
			db, err := dbrouter.Open("pgx", p.DSN(), dsns(rs))
			if err != nil {
				return nil, err
			}
			return &sqlClient{rd: db, wr: db, closeFn: db.Close}, nil
		},
		wrap: func(p *sql.DB, rs []*sql.DB) (caller, func() error, error) {
			db, err := dbrouter.New(p, rs, dbrouter.WithDialect(dbrouter.Generic()))
			if err != nil {
				return nil, nil, err
			}
			return sqlCaller(db), db.Close, nil
		},
		ryw:     "sessions (`NewSession` + `WithSession`, default `SessionCausal(0)`)",
		rywNote: "one session for the trials",
		newRYW: func() func(context.Context) context.Context {
			s := dbrouter.NewSession()
			return func(ctx context.Context) context.Context { return dbrouter.WithSession(ctx, s) }
		},
	},
	{
		key: "bxcodec", title: "bxcodec/dbresolver",
		modules: []string{"github.com/bxcodec/dbresolver/v2"},
		usage:   "`dbresolver.New(WithPrimaryDBs(p), WithReplicaDBs(r1, r2), WithLoadBalancer(RoundRobinLB))` over `sql.Open(\"pgx\", …)` handles",
		open: func(p *pgcluster.Node, rs []*pgcluster.Node) (client, error) {
			hs, err := openAll(append([]*pgcluster.Node{p}, rs...))
			if err != nil {
				return nil, err
			}
			db := bxresolver.New(bxresolver.WithPrimaryDBs(hs[0]), bxresolver.WithReplicaDBs(hs[1:]...),
				bxresolver.WithLoadBalancer(bxresolver.RoundRobinLB))
			return &sqlClient{rd: db, wr: db, closeFn: db.Close}, nil
		},
		wrap: func(p *sql.DB, rs []*sql.DB) (caller, func() error, error) {
			db := bxresolver.New(bxresolver.WithPrimaryDBs(p), bxresolver.WithReplicaDBs(rs...),
				bxresolver.WithLoadBalancer(bxresolver.RoundRobinLB))
			return sqlCaller(db), func() error { return nil }, nil // the handles are the caller's
		},
		ryw: "",
	},
	{
		key: "gorm", title: "gorm + dbresolver",
		modules: []string{"gorm.io/gorm", "gorm.io/plugin/dbresolver", "gorm.io/driver/postgres"},
		usage: "`gorm.Open(postgres.Open(primary))` + `Use(dbresolver.Register(Config{Sources: [primary], Replicas: [r1, r2]}))`, " +
			"default policy (random); `Logger: logger.Discard` so its log does not mix with the report",
		open: func(p *pgcluster.Node, rs []*pgcluster.Node) (client, error) {
			var replicas []gorm.Dialector
			for _, r := range rs {
				replicas = append(replicas, postgres.Open(r.DSN()))
			}
			return openGorm(postgres.Open(p.DSN()), []gorm.Dialector{postgres.Open(p.DSN())}, replicas)
		},
		wrap: func(p *sql.DB, rs []*sql.DB) (caller, func() error, error) {
			var replicas []gorm.Dialector
			for _, r := range rs {
				replicas = append(replicas, postgres.New(postgres.Config{Conn: r}))
			}
			g, err := openGorm(postgres.New(postgres.Config{Conn: p}), []gorm.Dialector{postgres.New(postgres.Config{Conn: p})}, replicas)
			if err != nil {
				return nil, nil, err
			}
			return gormCaller(g.db), func() error { return nil }, nil // the handles are the caller's
		},
		ryw:     "",
		rywNote: "none: `Clauses(dbresolver.Write)` is documented as manual connection switching (every read so marked goes to the sources), not read-your-writes",
	},
	{
		key: "pgx-multihost", title: "pgx multi-host DSN",
		modules: []string{"github.com/jackc/pgx/v5"},
		usage: "two `sql.Open(\"pgx\", \"host=h0,h1,h2 port=p0,p1,p2 … target_session_attrs=read-write\")` pools: " +
			"writes on it, reads on one with `prefer-standby`",
		open: func(p *pgcluster.Node, rs []*pgcluster.Node) (client, error) {
			nodes := append([]*pgcluster.Node{p}, rs...)
			wr, err := sql.Open("pgx", multiHostDSN(nodes, "read-write"))
			if err != nil {
				return nil, err
			}
			rd, err := sql.Open("pgx", multiHostDSN(nodes, "prefer-standby"))
			if err != nil {
				wr.Close()
				return nil, err
			}
			return &sqlClient{rd: rd, wr: wr, closeFn: func() error { return errors.Join(wr.Close(), rd.Close()) }}, nil
		},
		wrapNote: "n/a: a DSN, not a wrapper of `*sql.DB` handles (one pool per DSN; the host is chosen when a connection opens)",
	},
	{
		key: "plain", title: "plain `*sql.DB`", baseline: true,
		modules: []string{"github.com/jackc/pgx/v5"},
		usage:   "one `sql.Open(\"pgx\", primary)`: no router, the baseline",
		open: func(p *pgcluster.Node, _ []*pgcluster.Node) (client, error) {
			db, err := p.Open()
			if err != nil {
				return nil, err
			}
			return &sqlClient{rd: db, wr: db, closeFn: db.Close}, nil
		},
		wrap: func(p *sql.DB, _ []*sql.DB) (caller, func() error, error) {
			return sqlCaller(p), func() error { return nil }, nil
		},
	},
}

func findContender(key string) *contender {
	for _, c := range contenders {
		if c.key == key {
			return c
		}
	}
	return nil
}

func dsns(nodes []*pgcluster.Node) []string {
	var s []string
	for _, n := range nodes {
		s = append(s, n.DSN())
	}
	return s
}

// openAll opens a *sql.DB per node, closing those opened when one fails.
func openAll(nodes []*pgcluster.Node) ([]*sql.DB, error) {
	var hs []*sql.DB
	for _, n := range nodes {
		h, err := n.Open()
		if err != nil {
			for _, h := range hs {
				h.Close()
			}
			return nil, err
		}
		hs = append(hs, h)
	}
	return hs, nil
}

// multiHostDSN is pgx's multi-host keyword/value DSN over nodes, with the
// same user, database and connect_timeout as the harness's per-node DSNs.
func multiHostDSN(nodes []*pgcluster.Node, attrs string) string {
	var hosts, ports []string
	for _, n := range nodes {
		hosts = append(hosts, "127.0.0.1")
		ports = append(ports, strconv.Itoa(n.Port()))
	}
	return fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable connect_timeout=5 target_session_attrs=%s",
		strings.Join(hosts, ","), strings.Join(ports, ","), attrs)
}

// sqlClient runs the load on queriers: one for reads, one for writes (the
// same one but for pgx multi-host).
type sqlClient struct {
	rd, wr  querier
	closeFn func() error
}

func (c *sqlClient) write(ctx context.Context, v int64) (string, error) {
	var node string
	err := c.wr.QueryRowContext(ctx, writeSQL, v).Scan(&node)
	return node, err
}

func (c *sqlClient) read(ctx context.Context) (string, error) {
	var node string
	err := c.rd.QueryRowContext(ctx, readSQL).Scan(&node)
	return node, err
}

func (c *sqlClient) put(ctx context.Context, k int64) error {
	_, err := c.wr.ExecContext(ctx, putSQL, k)
	return err
}

func (c *sqlClient) get(ctx context.Context, k int64) (string, bool, error) {
	var node string
	var found bool
	err := c.rd.QueryRowContext(ctx, getSQL, k).Scan(&node, &found)
	return node, found, err
}

func (c *sqlClient) close() error { return c.closeFn() }

// gormClient runs the load through GORM with the dbresolver plugin.
type gormClient struct {
	db *gorm.DB
	dr *gormresolver.DBResolver
}

// openGorm opens GORM on main with the dbresolver plugin over sources and replicas.
func openGorm(main gorm.Dialector, sources, replicas []gorm.Dialector) (*gormClient, error) {
	db, err := gorm.Open(main, &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return nil, err
	}
	dr := gormresolver.Register(gormresolver.Config{Sources: sources, Replicas: replicas})
	c := &gormClient{db: db, dr: dr}
	if err := db.Use(dr); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *gormClient) write(ctx context.Context, v int64) (string, error) {
	var node string
	err := c.db.WithContext(ctx).Raw(gormSQL(writeSQL), v).Scan(&node).Error
	return node, err
}

func (c *gormClient) read(ctx context.Context) (string, error) {
	var node string
	err := c.db.WithContext(ctx).Raw(readSQL).Scan(&node).Error
	return node, err
}

func (c *gormClient) put(ctx context.Context, k int64) error {
	return c.db.WithContext(ctx).Exec(gormSQL(putSQL), k).Error
}

func (c *gormClient) get(ctx context.Context, k int64) (string, bool, error) {
	var node string
	var found bool
	err := c.db.WithContext(ctx).Raw(gormSQL(getSQL), k).Row().Scan(&node, &found)
	return node, found, err
}

// close closes the pools the plugin opened for its sources and replicas and GORM's own.
func (c *gormClient) close() error {
	var errs []error
	if c.dr != nil && c.dr.DB != nil {
		errs = append(errs, c.dr.Call(func(p gorm.ConnPool) error {
			if cl, ok := p.(io.Closer); ok {
				return cl.Close()
			}
			return nil
		}))
	}
	if h, err := c.db.DB(); err == nil {
		errs = append(errs, h.Close())
	}
	return errors.Join(errs...)
}
