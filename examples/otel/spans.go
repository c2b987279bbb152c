package main

import (
	"context"
	"strings"
	"time"
	"unicode"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/dbrouter/dbrouter"
)

// statementSpans returns a statement hook, for dbrouter.WithStatementHook,
// that records every routed statement as a span of tracer, after the fact:
// started at Statement.Start (trace.WithTimestamp) and ended at
// Start+Duration, of kind client, with the attributes
//
//	db.system       "postgresql"
//	db.query.text   the statement's SQL ("" for BEGIN)
//	dbrouter.node   the node that ran it ("" when none could)
//	dbrouter.reason why it went there: "read", "write", "session", …
//	dbrouter.write  whether it may write
//
// A failed statement's span has status Error and records the error.
//
// Each span is a child of the span in the statement's context
// (Statement.Context: the context the application passed to QueryContext,
// ExecContext, BeginTx, …), so a request's statements appear under the
// request's span; without one, the span is a root.
//
// The hook runs on the goroutine of the statement, and must not block:
// give the tracer provider a batching span processor (sdktrace.WithBatcher).
func statementSpans(tracer trace.Tracer) func(dbrouter.Statement) {
	return func(s dbrouter.Statement) {
		ctx := s.Context
		if ctx == nil {
			ctx = context.Background()
		}
		_, span := tracer.Start(ctx, spanName(s.Query),
			trace.WithSpanKind(trace.SpanKindClient),
			trace.WithTimestamp(s.Start),
			trace.WithAttributes(
				attribute.String("db.system", "postgresql"),
				attribute.String("db.query.text", s.Query),
				attribute.String("dbrouter.node", s.Node),
				attribute.String("dbrouter.reason", s.Reason.String()),
				attribute.Bool("dbrouter.write", s.Write),
			))
		end := s.Start.Add(s.Duration)
		if s.Err != nil {
			span.RecordError(s.Err, trace.WithTimestamp(end))
			span.SetStatus(codes.Error, s.Err.Error())
		}
		span.End(trace.WithTimestamp(end))
	}
}

// spanName names a statement's span by its first keyword ("SELECT",
// "INSERT", …; "BEGIN" for a transaction's start), skipping leading
// comments, as the OpenTelemetry database conventions suggest.
func spanName(query string) string {
	if query == "" {
		return "BEGIN"
	}
	q := strings.TrimSpace(query)
	for strings.HasPrefix(q, "/*") {
		_, rest, ok := strings.Cut(q, "*/")
		if !ok {
			return "postgresql"
		}
		q = strings.TrimSpace(rest)
	}
	n := strings.IndexFunc(q, func(r rune) bool { return !unicode.IsLetter(r) })
	if n < 0 {
		n = len(q)
	}
	if n == 0 || n > 16 {
		return "postgresql"
	}
	return strings.ToUpper(q[:n])
}

// spanTime formats a span's time for the example's output.
func spanTime(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }
