package patroni

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidConfig is wrapped by every *ConfigError: New and
	// NewWithOptions return them (joined, when there are several) for a DSN,
	// a REST URL or an option value they refuse.
	ErrInvalidConfig = errors.New("patroni: invalid configuration")

	// ErrUnreachable is returned by Source.Discover when no REST URL gave a
	// usable answer within its request timeout. It is joined with one
	// *URLError per URL tried, which says what that URL did.
	ErrUnreachable = errors.New("patroni: no REST API gave a usable GET /cluster answer")

	// ErrBadResponse is wrapped by the *URLError of a REST API that answered,
	// but not with a GET /cluster that Discover can use: a status other than
	// 200, a body that is not Patroni's JSON or is too large, no members,
	// members that are not what Patroni sends (no name, the same name twice,
	// two leaders, a host that is not a host name or IP address, a port out
	// of range).
	ErrBadResponse = errors.New("patroni: bad GET /cluster answer")

	// ErrNoMembers is wrapped by the *URLError of a REST API whose GET
	// /cluster lists members but none that is running or streaming with a
	// host to connect to: every PostgreSQL server of the cluster is down,
	// starting or stopping.
	ErrNoMembers = errors.New("patroni: no member running")
)

// ConfigError is a DSN, REST URL or option value that New or NewWithOptions
// refused. It unwraps to ErrInvalidConfig; use errors.As to learn which one
// it was. It never holds the DSN's password.
type ConfigError struct {
	// Field is what was refused: "dsn", "restURLs", "restURLs[1]",
	// "WithRequestTimeout", "WithBasicAuth", …
	Field string
	// Reason says what is wrong with it, e.g. "sets host: leave it out,
	// Patroni says where each member is".
	Reason string
}

// Error returns e.g. "patroni: restURLs[0]: carries a user: use
// WithBasicAuth".
func (e *ConfigError) Error() string { return "patroni: " + e.Field + ": " + e.Reason }

// Unwrap returns ErrInvalidConfig.
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// answerError is an answer that Discover cannot use: it reads as the
// problem ("503 Service Unavailable", "no members") and unwraps to
// ErrBadResponse or ErrNoMembers.
type answerError struct {
	kind error
	msg  string
}

func (e *answerError) Error() string { return e.msg }
func (e *answerError) Unwrap() error { return e.kind }

// badAnswer returns an *answerError of that kind.
func badAnswer(kind error, format string, args ...any) error {
	return &answerError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// URLError is what one REST URL did when Discover asked it for GET
// /cluster: it could not be reached, did not answer within the request
// timeout, or answered something unusable (ErrBadResponse, ErrNoMembers).
// It names the URL, never the DSN, and unwraps to the cause, so errors.Is
// sees context.DeadlineExceeded, syscall.ECONNREFUSED, ErrBadResponse and
// the like through it.
type URLError struct {
	URL string // the URL asked, e.g. "http://10.0.0.1:8008/cluster"
	Err error
}

// Error returns e.g. "patroni: GET http://10.0.0.1:8008/cluster: no answer
// within 1s: context deadline exceeded".
func (e *URLError) Error() string { return "patroni: GET " + e.URL + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *URLError) Unwrap() error { return e.Err }
