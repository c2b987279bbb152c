// Otel turns dbrouter's statement hook into OpenTelemetry spans: one span
// per routed statement, backdated to when the router sent it, with the node
// that ran it and why (see statementSpans). It runs a few statements, some
// under a request span whose trace they carry in a SQL comment, and prints
// each span as it ends.
//
// With no arguments it starts a throwaway local cluster (PostgreSQL server
// binaries on PATH or under /usr/lib/postgresql/*/bin, else Docker) and
// removes it on exit:
//
//	go run ./examples/otel
//
// To use servers of your own instead (it runs only reads and a
// transaction it rolls back):
//
//	DBROUTER_PRIMARY_DSN=postgres://app:secret@db1:5432/app \
//	DBROUTER_REPLICA_DSNS=postgres://app:secret@db2:5432/app \
//	go run ./examples/otel
//
// A real program exports to a collector (go.opentelemetry.io/otel/exporters/
// otlp/…) through a batching span processor; this one prints.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "otel:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) error {
	primary, replicas, cleanup, err := servers(ctx, out)
	if err != nil {
		return err
	}
	defer cleanup()

	// WithSyncer prints each span as it ends, in order; a real program
	// uses sdktrace.WithBatcher(exporter), so that the hook never waits.
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(&lineExporter{w: out}))
	defer tp.Shutdown(context.Background())
	tracer := tp.Tracer("github.com/dbrouter/dbrouter/examples/otel")

	db, err := dbrouter.Open("pgx", primary, replicas, dbrouter.WithStatementHook(statementSpans(tracer)))
	if err != nil {
		return err
	}
	defer db.Close()

	fmt.Fprintln(out, "\nspans, as they end (name, trace/span/parent ids, duration, attributes):")
	// Statements outside any request: root spans.
	var one int
	if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return err
	}
	// A request: its statements run with its context, so their spans are
	// its children.
	rctx, req := tracer.Start(ctx, "GET /report")
	var now time.Time
	if err := db.QueryRowContext(rctx, "SELECT now()").Scan(&now); err != nil {
		return err
	}
	tx, err := db.BeginTx(rctx, nil)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(rctx, "SELECT pg_current_wal_lsn()"); err != nil {
		tx.Rollback()
		return err
	}
	tx.Rollback()
	// A failing statement: its span has status Error.
	if _, err := db.ExecContext(rctx, "SELECT * FROM no_such_table"); err == nil {
		return errors.New("a query of a missing table succeeded")
	}
	req.End()
	return nil
}

// lineExporter prints each span on a line.
type lineExporter struct {
	mu sync.Mutex // serializes writes to w
	w  io.Writer
}

var _ sdktrace.SpanExporter = (*lineExporter)(nil)

func (e *lineExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range spans {
		var attrs []string
		for _, kv := range s.Attributes() {
			if v := kv.Value.Emit(); v != "" {
				attrs = append(attrs, fmt.Sprintf("%s=%q", kv.Key, v))
			}
		}
		parent := "-"
		if p := s.Parent(); p.IsValid() {
			parent = p.SpanID().String()[:8]
		}
		status := ""
		if s.Status().Code == codes.Error {
			status = " ERROR " + s.Status().Description
		}
		fmt.Fprintf(e.w, "  %-8s trace %s span %s parent %-8s %9s %s%s\n", s.Name(),
			s.SpanContext().TraceID().String()[:8], s.SpanContext().SpanID().String()[:8], parent,
			spanTime(s.EndTime().Sub(s.StartTime())), strings.Join(attrs, " "), status)
	}
	return nil
}

func (e *lineExporter) Shutdown(context.Context) error { return nil }

// servers returns the DSNs from the environment, or starts a local cluster
// and returns its DSNs and a function that removes it.
func servers(ctx context.Context, out io.Writer) (primary string, replicas []string, cleanup func(), err error) {
	if p := os.Getenv("DBROUTER_PRIMARY_DSN"); p != "" {
		if rs := os.Getenv("DBROUTER_REPLICA_DSNS"); rs != "" {
			replicas = strings.Split(rs, ",")
		}
		fmt.Fprintf(out, "using DBROUTER_PRIMARY_DSN and %d replica DSNs\n", len(replicas))
		return p, replicas, func() {}, nil
	}
	fmt.Fprintln(out, "starting a PostgreSQL primary + 2 streaming replicas…")
	c, err := pgcluster.Start(ctx, pgcluster.Options{Replicas: 2})
	if err != nil {
		return "", nil, nil, err
	}
	primary, replicas = c.DSNs()
	return primary, replicas, func() {
		if err := c.Close(); err != nil {
			fmt.Fprintln(out, "otel: removing the cluster:", err)
		}
	}, nil
}
