package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/internal/testwait"
)

// TestRunWithDSNs runs the service as `go run ./examples/service` does with
// DBROUTER_PRIMARY_DSN and DBROUTER_REPLICA_DSNS set, DSNs with a password
// (the cluster trusts 127.0.0.1, so any will do): it serves, never shows
// the password, and returns once its context ends, leaving the tables.
func TestRunWithDSNs(t *testing.T) {
	c := sharedCluster(t)
	const password = "s3cr3t-pw"
	var dsns []string
	for _, n := range c.Nodes() {
		dsns = append(dsns, strings.Replace(n.DSN(), "postgres@", "postgres:"+password+"@", 1))
	}
	t.Setenv("DBROUTER_PRIMARY_DSN", dsns[0])
	t.Setenv("DBROUTER_REPLICA_DSNS", strings.Join(dsns[1:], ","))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-addr", "127.0.0.1:0"}, out) }()
	var base string
	testwait.Until(t, time.Minute, "the service serving", func() bool {
		m := regexp.MustCompile(`serving on (http://127\.0\.0\.1:\d+)/`).FindStringSubmatch(out.String())
		if m != nil {
			base = m[1]
		}
		return m != nil
	})

	get := func(path string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	status, body := get("/healthz")
	assert.Equal(t, http.StatusOK, status, body)
	assert.Contains(t, body, c.Primary().Addr()+"/postgres", "nodes are named host:port/dbname")
	for _, path := range []string{"/accounts", "/metrics", "/dbrouter/status.json", "/"} {
		status, body := get(path)
		assert.Equal(t, http.StatusOK, status, "%s: %s\n%s", path, body, out.String())
		assert.NotContains(t, body, password, path)
	}

	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("run did not return after its context ended")
	}
	assert.Contains(t, out.String(), "using DBROUTER_PRIMARY_DSN and 2 replica DSNs")
	assert.NotContains(t, out.String(), password)
	var tables int
	require.NoError(t, c.Primary().QueryRow(context.Background(),
		"SELECT count(*) FROM pg_tables WHERE tablename IN ('accounts', 'transfers')", &tables))
	assert.Equal(t, 2, tables, "the service leaves its tables")
}

// TestRunBadArguments: a flag it does not know, or an argument, is an
// error before anything starts; -h prints the flags.
func TestRunBadArguments(t *testing.T) {
	ctx := context.Background()
	var out strings.Builder
	assert.Error(t, run(ctx, []string{"-nope"}, &out))
	assert.Error(t, run(ctx, []string{"postgres://somewhere"}, &out))
	out.Reset()
	assert.True(t, errors.Is(run(ctx, []string{"-h"}, &out), flag.ErrHelp))
	assert.Contains(t, out.String(), "-addr")
}

// TestSignalShutsDown runs the service as a process of its own with no
// DSNs, as `go run ./examples/service` does: it starts a cluster, serves,
// and on SIGTERM shuts down, exits 0 and leaves nothing running: every
// node's port is closed.
func TestSignalShutsDown(t *testing.T) {
	skipShort(t)
	ctx := testContext(t, 3*time.Minute)
	cmd := exec.CommandContext(ctx, os.Args[0], "-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), childEnv+"=1", "DBROUTER_PRIMARY_DSN=", "DBROUTER_REPLICA_DSNS=")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() }) // only if the test failed before it exited

	var mu sync.Mutex
	var lines []string
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
		}
	}()
	output := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(lines, "\n")
	}
	var base string
	testwait.Until(t, 2*time.Minute, "the service serving", func() bool {
		m := regexp.MustCompile(`serving on (http://127\.0\.0\.1:\d+)/`).FindStringSubmatch(output())
		if m != nil {
			base = m[1]
		}
		return m != nil
	})
	nodes := regexp.MustCompile(`(?m)^  (node\d) (127\.0\.0\.1:\d+) \((primary|replica)\)$`).FindAllStringSubmatch(output(), -1)
	require.Len(t, nodes, 3, "the nodes it started:\n%s", output())

	resp, err := http.Post(base+"/accounts", "application/json", strings.NewReader(`{"owner":"ann","balance":1}`))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusCreated, resp.StatusCode)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select { // its stdout closes as it exits
	case <-read:
	case <-time.After(time.Minute):
		t.Fatalf("no exit within a minute of SIGTERM:\n%s", output())
	}
	require.NoError(t, cmd.Wait(), "exit status after SIGTERM:\n%s", output())
	assert.Contains(t, output(), "shutting down")
	assert.Contains(t, output(), "cluster removed")
	for _, n := range nodes {
		conn, err := net.DialTimeout("tcp", n[2], time.Second)
		if err == nil {
			conn.Close()
		}
		assert.Error(t, err, "%s (%s) still listens after the service exited", n[1], n[2])
	}
}
