package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/dbrouter/dbrouter"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// recorder returns a tracer whose spans sr records.
func recorder(t *testing.T) (trace.Tracer, *tracetest.SpanRecorder) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return tp.Tracer("test"), sr
}

// TestStatementSpans feeds the hook statements as the router reports them
// and reads the spans back.
func TestStatementSpans(t *testing.T) {
	tracer, sr := recorder(t)
	hook := statementSpans(tracer)
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	boom := errors.New("boom")
	hook(dbrouter.Statement{Node: "node1", Reason: dbrouter.ReasonRead, Query: "SELECT 1", Start: start, Duration: 3 * time.Millisecond})
	hook(dbrouter.Statement{Node: "node0", Reason: dbrouter.ReasonWrite, Write: true, Query: "/* app */ insert into t values (1)", Start: start, Duration: time.Millisecond, Err: boom})
	hook(dbrouter.Statement{Reason: dbrouter.ReasonTransaction, Write: true, Start: start, Err: dbrouter.ErrNoPrimary})

	spans := sr.Ended()
	require.Len(t, spans, 3)
	read, write, begin := spans[0], spans[1], spans[2]

	assert.Equal(t, "SELECT", read.Name())
	assert.Equal(t, trace.SpanKindClient, read.SpanKind())
	assert.Equal(t, start, read.StartTime(), "backdated to when the router sent it")
	assert.Equal(t, start.Add(3*time.Millisecond), read.EndTime())
	assert.ElementsMatch(t, []attribute.KeyValue{
		attribute.String("db.system", "postgresql"),
		attribute.String("db.query.text", "SELECT 1"),
		attribute.String("dbrouter.node", "node1"),
		attribute.String("dbrouter.reason", "read"),
		attribute.Bool("dbrouter.write", false),
	}, read.Attributes())
	assert.Equal(t, codes.Unset, read.Status().Code)
	assert.False(t, read.Parent().IsValid(), "no context: a root span")

	assert.Equal(t, "INSERT", write.Name())
	assert.Equal(t, codes.Error, write.Status().Code)
	assert.Equal(t, "boom", write.Status().Description)
	require.Len(t, write.Events(), 1, "the error is recorded")
	assert.Equal(t, "exception", write.Events()[0].Name)
	assert.Contains(t, write.Attributes(), attribute.Bool("dbrouter.write", true))

	assert.Equal(t, "BEGIN", begin.Name())
	assert.Contains(t, begin.Attributes(), attribute.String("dbrouter.node", ""))
	assert.Equal(t, codes.Error, begin.Status().Code)
}

// TestParent: a statement run with a request's context gets a span under
// the request's.
func TestParent(t *testing.T) {
	tracer, sr := recorder(t)
	hook := statementSpans(tracer)
	ctx, req := tracer.Start(context.Background(), "request")
	hook(dbrouter.Statement{Node: "node2", Reason: dbrouter.ReasonRead, Query: "SELECT 1", Start: time.Now(), Context: ctx})
	req.End()

	spans := sr.Ended()
	require.Len(t, spans, 2)
	stmt := spans[0]
	assert.Equal(t, "SELECT", stmt.Name())
	assert.Equal(t, req.SpanContext().TraceID(), stmt.SpanContext().TraceID(), "in the request's trace")
	assert.Equal(t, req.SpanContext().SpanID(), stmt.Parent().SpanID(), "a child of the request's span")

	hook(dbrouter.Statement{Query: "SELECT 1", Start: time.Now(), Context: context.Background()})
	assert.False(t, sr.Ended()[2].Parent().IsValid(), "no span in the context: a root")
}

func TestSpanName(t *testing.T) {
	for q, want := range map[string]string{
		"":                               "BEGIN",
		"select 1":                       "SELECT",
		"  /* a */ /* b */ UPDATE t SET": "UPDATE",
		"WITH x AS (SELECT 1) SELECT":    "WITH",
		"SELECT(1)":                      "SELECT",
		"/* unterminated":                "postgresql",
		"   ":                            "postgresql",
	} {
		assert.Equal(t, want, spanName(q), "%q", q)
	}
}

// TestRun runs the example against a cluster of its own.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster: skipped under -short")
	}
	t.Setenv("DBROUTER_PRIMARY_DSN", "")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out strings.Builder
	require.NoError(t, run(ctx, &out), "output:\n%s", out.String())
	text := out.String()
	t.Logf("output:\n%s", text)
	assert.Contains(t, text, `dbrouter.reason="read"`)
	assert.Contains(t, text, `dbrouter.reason="transaction"`)
	assert.Contains(t, text, "ERROR")
	assert.Regexp(t, `SELECT\s+trace \w+ span \w+ parent [0-9a-f]{8}`, text, "a statement under the request")
}
