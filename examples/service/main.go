// Service is a small bank on net/http, dbrouter and pgx: an HTTP service
// over a PostgreSQL primary and two streaming replicas that reads from the
// replicas, writes on the primary, lets each client read its own writes
// across requests (the dbrouter session token rides in a cookie), follows a
// failover, and shows the router at work: which node served each read
// (served_by), /metrics for Prometheus and the router's status page.
//
// With no arguments it starts a throwaway local cluster (PostgreSQL server
// binaries on PATH or under /usr/lib/postgresql/*/bin, else Docker), serves
// on 127.0.0.1:8080 and removes the cluster when it stops (Ctrl-C or
// SIGTERM: in-flight requests finish first):
//
//	go run ./examples/service
//	go run ./examples/service -addr 127.0.0.1:9090
//
// To use servers of your own instead (it creates the tables accounts and
// transfers on the primary when they are missing, and never drops them):
//
//	DBROUTER_PRIMARY_DSN=postgres://app:secret@db1:5432/app \
//	DBROUTER_REPLICA_DSNS=postgres://app:secret@db2:5432/app,postgres://app:secret@db3:5432/app \
//	go run ./examples/service
//
// The API:
//
//	POST /accounts      {"owner":"ann","balance":100}  -> 201 {"id":1,"owner":"ann","balance":100}
//	GET  /accounts/{id}                                -> 200 {"id":1,"owner":"ann","balance":100,"served_by":"node1"}
//	GET  /accounts      ?after=ID&limit=N              -> 200 {"accounts":[…],"served_by":"node2"}
//	POST /transfers     {"from":1,"to":2,"amount":10}  -> 201 {"id":1,"from":1,"to":2,"amount":10}
//	GET  /healthz       200 while a primary is known, else 503
//	GET  /metrics       the router's metrics and statement durations, for Prometheus
//	GET  /dbrouter/     the router's status page (its JSON at /dbrouter/status.json)
//
// Errors are {"error":"…"}: 400 for bad input, 404 for an unknown account
// (GET /accounts/{id} names the node that found none in served_by: a
// replica behind another client's write, say), 409 for insufficient funds,
// 503 (with Retry-After) while the database is unavailable, e.g. during a
// failover.
//
// A client's session token rides in the bank_session cookie, set by every
// POST: the client then reads its own accounts and transfers back at once
// (from a replica that has them, else the primary), while clients without a
// recent write read from the replicas. served_by comes from the router's
// statement hook; servedby.go says how a request finds its own statements
// among everyone's.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "service:", err)
		os.Exit(1)
	}
}

// shutdownTimeout bounds how long in-flight requests may take to finish
// once the service is told to stop.
const shutdownTimeout = 10 * time.Second

// run serves until ctx ends, then shuts the server down gracefully, closes
// the DB and removes the cluster it started, if any. It writes what it
// serves and the router's events to stdout.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("service", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addr := fs.String("addr", "127.0.0.1:8080", "address to serve on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (DSNs come from DBROUTER_PRIMARY_DSN and DBROUTER_REPLICA_DSNS)", fs.Args())
	}
	log := slog.New(slog.NewTextHandler(stdout, nil))

	srvs, err := servers(ctx, stdout)
	if err != nil {
		return err
	}
	defer srvs.cleanup()

	obs, err := newObserver()
	if err != nil {
		return err
	}
	opts := []dbrouter.Option{dbrouter.WithStatementHook(obs.observe), dbrouter.WithLogger(log)}
	if srvs.names != nil {
		opts = append(opts, dbrouter.WithNames(srvs.names[0], srvs.names[1:]...))
	}
	db, err := dbrouter.Open("pgx", srvs.primary, srvs.replicas, opts...)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(20) // per node: well under max_connections, whatever the load
	if err := createSchema(ctx, db); err != nil {
		if errors.Is(err, dbrouter.ErrNoPrimary) { // say why: what the probes saw
			for _, n := range db.Status().Nodes {
				err = fmt.Errorf("%w\n  %s: %s %s (%v)", err, n.Name, n.Role, n.State, n.LastError)
			}
		}
		return err
	}

	h, err := newServer(db, obs, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "serving on %s/ (Ctrl-C to stop)\n", base)
	for _, line := range strings.Split(strings.TrimSpace(routes), "\n") {
		method, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		path, note, _ := strings.Cut(rest, " ")
		fmt.Fprintf(stdout, "  %-4s %s%s %s\n", method, base, path, strings.TrimSpace(note))
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served: // it stopped by itself: not a shutdown
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	fmt.Fprintln(stdout, "shutting down: finishing requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// cluster is where the service's databases are.
type cluster struct {
	primary  string
	replicas []string
	names    []string // the nodes' names, primary first; nil for servers from the environment
	cleanup  func()   // removes the cluster the service started; a no-op otherwise
}

// servers returns the DSNs from the environment, or starts a local primary
// and two replicas and returns theirs and a function that removes them.
func servers(ctx context.Context, stdout io.Writer) (cluster, error) {
	if p := os.Getenv("DBROUTER_PRIMARY_DSN"); p != "" {
		var replicas []string
		if rs := os.Getenv("DBROUTER_REPLICA_DSNS"); rs != "" {
			replicas = strings.Split(rs, ",")
		}
		fmt.Fprintf(stdout, "using DBROUTER_PRIMARY_DSN and %d replica DSNs\n", len(replicas))
		return cluster{primary: p, replicas: replicas, cleanup: func() {}}, nil
	}
	fmt.Fprintln(stdout, "starting a PostgreSQL primary + 2 streaming replicas…")
	began := time.Now()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Replicas: 2})
	if err != nil {
		if errors.Is(err, pgcluster.ErrNoBackend) {
			err = fmt.Errorf("%w\n(or set DBROUTER_PRIMARY_DSN and DBROUTER_REPLICA_DSNS to use servers you run)", err)
		}
		return cluster{}, err
	}
	fmt.Fprintf(stdout, "cluster up in %v (%s backend):\n", time.Since(began).Round(10*time.Millisecond), c.Backend())
	var cl cluster
	for i, n := range c.Nodes() {
		role := "replica"
		if i == 0 {
			role = "primary"
		}
		fmt.Fprintf(stdout, "  %s %s (%s)\n", n.Name(), n.Addr(), role)
		cl.names = append(cl.names, n.Name())
	}
	cl.primary, cl.replicas = c.DSNs()
	cl.cleanup = func() {
		if err := c.Close(); err != nil {
			fmt.Fprintln(stdout, "service: removing the cluster:", err)
			return
		}
		fmt.Fprintln(stdout, "cluster removed")
	}
	return cl, nil
}
