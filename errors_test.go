package dbrouter

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
	"github.com/stretchr/testify/assert"
)

// safeToRetry is an error as pgconn's, which say whether nothing was sent
// (pgconn.SafeToRetry): "conn closed" on a connection pgx already closed.
type safeToRetry struct {
	msg  string
	safe bool
}

func (e safeToRetry) Error() string     { return e.msg }
func (e safeToRetry) SafeToRetry() bool { return e.safe }

func TestIsConnError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"bad conn", driver.ErrBadConn, true},
		{"wrapped bad conn", fmt.Errorf("x: %w", driver.ErrBadConn), true},
		{"EOF", io.EOF, true},
		{"unexpected EOF", io.ErrUnexpectedEOF, true},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"reset", syscall.ECONNRESET, true},
		{"08006", &fakedriver.Error{Code: "08006"}, true},
		{"08001", &fakedriver.Error{Code: "08001"}, true},
		{"57P01 admin shutdown", &fakedriver.Error{Code: "57P01"}, true},
		{"57P02 crash shutdown", &fakedriver.Error{Code: "57P02"}, true},
		{"57P03 cannot connect now", &fakedriver.Error{Code: "57P03"}, true},
		{"57P05 idle_session_timeout", &fakedriver.Error{Code: "57P05"}, true},
		{"53300 too many connections", &fakedriver.Error{Code: "53300"}, true},
		{"syntax error", &fakedriver.Error{Code: "42601"}, false},
		{"unique violation", &fakedriver.Error{Code: "23505"}, false},
		{"read-only", &fakedriver.Error{Code: "25006"}, false},
		{"caller canceled", context.Canceled, false},
		{"caller deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"no rows", sql.ErrNoRows, false},
		{"pgx: conn closed (nothing was sent)", fmt.Errorf("begin: %w", safeToRetry{"conn closed", true}), true},
		{"an error that is not safe to retry", safeToRetry{"x", false}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, isConnError(tt.err))
		})
	}
}
