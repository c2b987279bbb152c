// Package dbrouter is a replication-aware router for database/sql.
package dbrouter
