#!/usr/bin/env bash
# pgbouncer-setup.sh installs PgBouncer (Debian bookworm's pgbouncer package,
# 1.18) for the PgBouncer harness of internal/pgcluster (pgbouncer.go), which
# starts its own pgbouncer processes as the postgres user, one per node, each
# with its own config, port and temp dir.
#
# The package ships a systemd unit and an init script that would start a
# pgbouncer on 127.0.0.1:6432 from /etc/pgbouncer/pgbouncer.ini. The harness
# never uses it, so after installing, this script makes sure none is left
# running: containers normally have a policy-rc.d that refuses to start
# services during apt-get install, but a machine without one would start it.
#
# Idempotent: on a fresh machine it installs the package; run again, it finds
# it and returns in well under a second. The tests find the binary on PATH or
# at /usr/sbin/pgbouncer (DBROUTER_PGBOUNCER overrides).
set -euo pipefail

began=$(date +%s.%N)
log() { printf 'pgbouncer-setup: %s\n' "$*"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

# 1. The package.
if dpkg -s pgbouncer >/dev/null 2>&1 && [ -x /usr/sbin/pgbouncer ]; then
	log "pgbouncer already installed"
else
	t=$(date +%s.%N)
	log "installing pgbouncer"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/tmp/pgbouncer-setup-apt.log 2>&1 ||
		{ tail -n 30 /tmp/pgbouncer-setup-apt.log; exit 1; }
	log "installed in $(elapsed "$t")"
fi

# 2. No packaged service left running. Only the packaged instance is
# stopped: it runs from /etc/pgbouncer/pgbouncer.ini, while the harness's
# instances each run from a config in their own temp dir.
# /proc is read directly, so this does not depend on procps being installed.
packaged_pids() {
	local d cmd
	for d in /proc/[0-9]*; do
		[ "$(cat "$d/comm" 2>/dev/null)" = pgbouncer ] || continue
		cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) || continue
		case $cmd in
		*/etc/pgbouncer/*) echo "${d#/proc/}" ;;
		esac
	done
}
pids=$(packaged_pids)
if [ -n "$pids" ]; then
	log "the packaged pgbouncer service runs (pids $(echo $pids)); stopping it"
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet pgbouncer 2>/dev/null; then
		systemctl stop pgbouncer || true
		systemctl disable pgbouncer >/dev/null 2>&1 || true
	fi
	if [ -n "$(packaged_pids)" ] && [ -x /etc/init.d/pgbouncer ]; then
		/etc/init.d/pgbouncer stop >/dev/null 2>&1 || true
	fi
	for pid in $(packaged_pids); do
		kill "$pid" 2>/dev/null || true
	done
	for _ in $(seq 1 50); do
		[ -z "$(packaged_pids)" ] && break
		sleep 0.1
	done
	if [ -n "$(packaged_pids)" ]; then
		log "the packaged pgbouncer did not stop: $(packaged_pids)"
		exit 1
	fi
	log "stopped"
else
	log "no packaged pgbouncer service running"
fi

# 3. Check it runs.
version=$(/usr/sbin/pgbouncer --version | head -n 1)
log "$version; done in $(elapsed "$began")"
