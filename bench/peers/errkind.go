package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dbrouter/dbrouter"
)

// errKinds counts errors by kind, for the report's "errors seen" columns.
type errKinds map[string]int

func (k errKinds) add(err error) { k[errKind(err)]++ }

func (k errKinds) merge(o errKinds) {
	for kind, n := range o {
		k[kind] += n
	}
}

// String lists the three most frequent kinds: "connection refused ×12, deadline exceeded ×3".
func (k errKinds) String() string {
	type kv struct {
		kind string
		n    int
	}
	var all []kv
	for kind, n := range k {
		all = append(all, kv{kind, n})
	}
	slices.SortFunc(all, func(a, b kv) int {
		if a.n != b.n {
			return b.n - a.n
		}
		return strings.Compare(a.kind, b.kind)
	})
	var parts []string
	for i, e := range all {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("%d other kinds", len(all)-3))
			break
		}
		parts = append(parts, fmt.Sprintf("%s ×%d", e.kind, e.n))
	}
	return strings.Join(parts, ", ")
}

var portRE = regexp.MustCompile(`:\d{2,5}\b`)

// errKind names what an error says, shortly and without ports.
func errKind(err error) string {
	var pe *pgconn.PgError
	msg := err.Error()
	switch {
	case errors.Is(err, dbrouter.ErrNoPrimary):
		return "dbrouter.ErrNoPrimary"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(msg, "deadline exceeded"), strings.Contains(msg, "timeout"):
		return "deadline exceeded"
	case strings.Contains(msg, "read only connection"):
		return "no read-write host (target_session_attrs)"
	case errors.As(err, &pe) && pe.Code == "25006":
		return "read-only transaction (25006)"
	case errors.As(err, &pe) && (pe.Code == "57P01" || pe.Code == "57P02"):
		return "server terminated the connection (" + pe.Code + ")"
	case errors.As(err, &pe) && pe.Code == "57P03":
		return "server starting or shutting down (57P03)"
	case errors.As(err, &pe) && strings.HasPrefix(pe.Code, "08"):
		return "connection failure (" + pe.Code + ")"
	case strings.Contains(msg, "connection refused"):
		return "connection refused"
	case strings.Contains(msg, "EOF"), strings.Contains(msg, "broken pipe"), strings.Contains(msg, "connection reset"),
		strings.Contains(msg, "conn closed"), strings.Contains(msg, "bad connection"):
		return "connection lost"
	}
	msg = portRE.ReplaceAllString(msg, ":PORT")
	if len(msg) > 60 {
		msg = msg[:60] + "…"
	}
	return msg
}
