// Package integration holds dbrouter's tests on real PostgreSQL clusters:
// routing, transactions, sessions, lag limits and failover (crash, hang,
// network cut, a returning old primary, auto-promotion), black-box through
// the public API. The clusters come from internal/pgcluster (local server
// binaries or Docker). It is a module of its own, so that the library's
// go.mod lists only what the library imports.
package integration
