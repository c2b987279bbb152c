#!/usr/bin/env bash
# deps-check.sh: a fresh module that imports only dbrouter and pgx must not
# pull in the test harness's dependencies (Docker, testcontainers,
# OpenTelemetry): the library's go.mod requires only what the library
# imports. Prints the module list; fails when one of those is in it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/go.mod" <<MOD
module example.com/app

go 1.26.8

require github.com/dbrouter/dbrouter v0.0.0

replace github.com/dbrouter/dbrouter => $root
MOD
cat >"$tmp/main.go" <<'GO'
package main

import (
	"github.com/dbrouter/dbrouter"
	_ "github.com/jackc/pgx/v5/stdlib"
)

func main() { _, _ = dbrouter.Open("pgx", "postgres://app@db1/app", nil) }
GO
cd "$tmp"
export GOWORK=off GOFLAGS=-mod=mod
go get -d github.com/jackc/pgx/v5@v5.12.0 >/dev/null 2>&1 || go get github.com/jackc/pgx/v5@v5.12.0 >/dev/null
go mod tidy >/dev/null
go build ./...
mods=$(go list -m all)
echo "go list -m all of a module importing dbrouter and pgx:"
echo "$mods" | sed 's/^/  /'
if echo "$mods" | grep -iqE 'docker|testcontainers|opentelemetry|moby|containerd'; then
	echo "deps-check: the library pulls in harness dependencies" >&2
	exit 1
fi
