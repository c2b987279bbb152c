// Quickstart puts a dbrouter.DB in front of a PostgreSQL primary and two
// streaming replicas and shows where each call runs: writes (Exec, INSERT …
// RETURNING) on the primary, reads spread over the replicas, a read-only
// transaction on a replica, a session that reads its own writes, and the
// router's Status.
//
// With no arguments it starts a throwaway local cluster (PostgreSQL server
// binaries on PATH or under /usr/lib/postgresql/*/bin, else Docker) and
// removes it on exit, Ctrl-C included:
//
//	go run ./examples/quickstart
//
// To use servers of your own instead (it creates and drops a table
// dbrouter_quickstart):
//
//	DBROUTER_PRIMARY_DSN=postgres://app:secret@db1:5432/app \
//	DBROUTER_REPLICA_DSNS=postgres://app:secret@db2:5432/app,postgres://app:secret@db3:5432/app \
//	go run ./examples/quickstart
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

// who names, server-side, the node that runs it: its address and its
// cluster_name (set on the local cluster's nodes, often empty elsewhere).
const who = `concat_ws(' ', host(inet_server_addr()) || ':' || inet_server_port(), nullif(current_setting('cluster_name'), ''))`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("interrupted: %w", err)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	primary, replicas, cleanup, err := servers(ctx)
	if err != nil {
		return err
	}
	defer cleanup()

	db, err := dbrouter.Open("pgx", primary, replicas)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		if errors.Is(err, dbrouter.ErrNoPrimary) { // say why: what the probes saw
			for _, n := range db.Status().Nodes {
				err = fmt.Errorf("%w\n  %s: %s %s (%v)", err, n.Name, n.Role, n.State, n.LastError)
			}
		}
		return err
	}

	// DDL and Exec go to the primary. The column default records, on the
	// server that inserts a row, which server that was.
	if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS dbrouter_quickstart"); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE dbrouter_quickstart (id bigserial PRIMARY KEY,
		note text NOT NULL, written_on text NOT NULL DEFAULT `+who+`)`); err != nil {
		return err
	}
	defer func() { // also after Ctrl-C, hence a context of its own
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		db.ExecContext(ctx, "DROP TABLE IF EXISTS dbrouter_quickstart")
	}()
	if _, err := db.ExecContext(ctx, "INSERT INTO dbrouter_quickstart (note) VALUES ('via Exec')"); err != nil {
		return err
	}
	var on string
	if err := db.QueryRowContext(dbrouter.UsePrimary(ctx), "SELECT written_on FROM dbrouter_quickstart WHERE note = 'via Exec'").Scan(&on); err != nil {
		return err
	}
	show("Exec INSERT (row written on)", on)

	// A query that writes goes to the primary too.
	if err := db.QueryRowContext(ctx, "INSERT INTO dbrouter_quickstart (note) VALUES ('via QueryRow') RETURNING written_on").Scan(&on); err != nil {
		return err
	}
	show("QueryRow INSERT … RETURNING", on)

	// Reads are spread over the replicas, round-robin.
	for i := 1; i <= 4; i++ {
		if err := db.QueryRowContext(ctx, "SELECT "+who).Scan(&on); err != nil {
			return err
		}
		show(fmt.Sprintf("QueryRow SELECT, read %d", i), on)
	}

	// A read-only transaction runs on a replica.
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	var standby bool
	err = tx.QueryRowContext(ctx, "SELECT "+who+", pg_is_in_recovery()").Scan(&on, &standby)
	tx.Rollback()
	if err != nil {
		return err
	}
	show("read-only transaction", fmt.Sprintf("%s (standby: %v)", on, standby))

	// A session reads its own writes: right after its write, only a replica
	// known to have replayed it (else the primary) serves its reads.
	sctx := dbrouter.WithSession(ctx, dbrouter.NewSession())
	if _, err := db.ExecContext(sctx, "INSERT INTO dbrouter_quickstart (note) VALUES ('in a session')"); err != nil {
		return err
	}
	var seen int
	if err := db.QueryRowContext(sctx, "SELECT "+who+", count(*) FROM dbrouter_quickstart WHERE note = 'in a session'").Scan(&on, &seen); err != nil {
		return err
	}
	show("session read after its write", fmt.Sprintf("%s (sees its row: %v)", on, seen == 1))

	printStatus(db.Status())
	return nil
}

// servers returns the DSNs from the environment, or starts a local cluster
// and returns its DSNs and a function that removes it.
func servers(ctx context.Context) (primary string, replicas []string, cleanup func(), err error) {
	if p := os.Getenv("DBROUTER_PRIMARY_DSN"); p != "" {
		if rs := os.Getenv("DBROUTER_REPLICA_DSNS"); rs != "" {
			replicas = strings.Split(rs, ",")
		}
		fmt.Printf("using DBROUTER_PRIMARY_DSN and %d replica DSNs\n", len(replicas))
		return p, replicas, func() {}, nil
	}
	fmt.Println("starting a PostgreSQL primary + 2 streaming replicas…")
	began := time.Now()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Replicas: 2})
	if err != nil {
		if errors.Is(err, pgcluster.ErrNoBackend) {
			err = fmt.Errorf("%w\n(or set DBROUTER_PRIMARY_DSN and DBROUTER_REPLICA_DSNS to use servers you run)", err)
		}
		return "", nil, nil, err
	}
	fmt.Printf("cluster up in %v (%s backend)\n\n", time.Since(began).Round(10*time.Millisecond), c.Backend())
	primary, replicas = c.DSNs()
	return primary, replicas, func() {
		if err := c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "quickstart: removing the cluster:", err)
		}
	}, nil
}

// show prints which server served a call.
func show(call, servedBy string) { fmt.Printf("%-30s -> %s\n", call, servedBy) }

// printStatus prints one line per node of what the router sees.
func printStatus(s dbrouter.Status) {
	fmt.Println("\ndb.Status() (positions as of the last probe, one a second):")
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tROLE\tSTATE\tREADABLE\tTIMELINE\tLSN\tLAG\tREADS\tWRITES\tMISROUTES")
	for _, n := range s.Nodes {
		fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%d\t%X/%X\t%dB\t%d\t%d\t%d\n", n.Name, n.Role, n.State, n.Readable,
			n.Timeline, n.LSN>>32, uint32(n.LSN), n.LagBytes, n.Reads, n.Writes, n.Misroutes)
	}
	w.Flush()
}
