package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/internal/pgcluster"
)

// TestQuickstart runs the example as `go run ./examples/quickstart` does:
// with no DSNs it starts, uses and removes a cluster of its own.
func TestQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster: skipped under -short")
	}
	t.Setenv("DBROUTER_PRIMARY_DSN", "")
	t.Setenv("DBROUTER_REPLICA_DSNS", "")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := run(ctx); err != nil {
		t.Fatalf("quickstart: %v", err)
	}
}

// TestQuickstartWithDSNs runs it against servers given in the environment.
func TestQuickstartWithDSNs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster: skipped under -short")
	}
	c := pgcluster.StartT(t, pgcluster.Options{Replicas: 2})
	primary, replicas := c.DSNs()
	t.Setenv("DBROUTER_PRIMARY_DSN", primary)
	t.Setenv("DBROUTER_REPLICA_DSNS", strings.Join(replicas, ","))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := run(ctx); err != nil {
		t.Fatalf("quickstart: %v", err)
	}
	var tables int
	if err := c.Primary().QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'dbrouter_quickstart'", &tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("the quickstart left its table behind")
	}
}
