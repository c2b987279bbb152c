#!/usr/bin/env bash
# patroni-setup.sh installs what the Patroni harness of internal/pgcluster
# (StartPatroni) runs: etcd, Patroni, and the PostgreSQL 15 server binaries.
#
# 1. From bookworm: etcd-server (3.4, v3 API), postgresql-15, and patroni
#    (3.0.2), the last mostly for its Python dependencies (psycopg2, urllib3,
#    yaml, click, prettytable, dateutil, psutil, python3-etcd, ...).
# 2. Patroni 4 from Debian trixie, unpacked under /opt/patroni4 with a
#    wrapper in /opt/patroni4/bin that runs it on bookworm's python3. Patroni
#    3.0.2 gives the leader key back to a leader that hung past ttl (etcd3,
#    fixed by patroni PR 2689: writes acknowledged on the promoted member are
#    lost), so hang tests need Patroni >= 3.0.3; the harness prefers
#    /opt/patroni4/bin/patroni when it is there. The package is
#    architecture-independent (_all.deb); apt-get download fetches it
#    through a private apt configuration in /var/cache/patroni-setup (removed
#    afterwards), so the system's sources stay bookworm only. When trixie cannot be reached the
#    script says so and goes on: the harness then runs 3.0.2.
# 3. Makes sure no etcd or Patroni service is left running: the harness
#    starts its own on free ports, and nothing may hold fixed ones. (The
#    container's policy-rc.d already refuses to start services at install
#    time; the packages' services are stopped and disabled anyway.)
#
# Idempotent: run again, it finds everything and returns in about a second.
# PATRONI_SETUP_SKIP_4=1 skips step 2.
set -euo pipefail

P4_VERSION=4.0.7
P4_DIR=/opt/patroni4
P4_APT=/var/cache/patroni-setup
PGVER=15

began=$(date +%s.%N)
log() { printf 'patroni-setup: %s\n' "$*"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

# 1. bookworm packages.
need=()
[ -x /usr/bin/etcd ] || need+=(etcd-server)
[ -x /usr/bin/patroni ] || need+=(patroni)
[ -x "/usr/lib/postgresql/$PGVER/bin/postgres" ] || need+=("postgresql-$PGVER")
command -v ipcrm >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
	t=$(date +%s.%N)
	log "installing ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${need[@]}" \
		>/tmp/patroni-setup-apt.log 2>&1 || { tail -n 30 /tmp/patroni-setup-apt.log; exit 1; }
	log "installed in $(elapsed "$t")"
else
	log "etcd-server, patroni and postgresql-$PGVER already installed"
fi

# 2. Patroni 4 from trixie.
have4() { [ -x "$P4_DIR/bin/patroni" ] && "$P4_DIR/bin/patroni" --version 2>/dev/null | grep -qx "patroni $P4_VERSION"; }
if [ "${PATRONI_SETUP_SKIP_4:-}" = 1 ]; then
	log "skipping Patroni $P4_VERSION (PATRONI_SETUP_SKIP_4=1)"
elif have4; then
	log "Patroni $P4_VERSION already in $P4_DIR"
else
	t=$(date +%s.%N)
	log "fetching Patroni $P4_VERSION from Debian trixie"
	mkdir -p "$P4_APT/etc/preferences.d" "$P4_APT/etc/sources.list.d" \
		"$P4_APT/state/lists/partial" "$P4_APT/cache/archives/partial" "$P4_APT/debs"
	echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main' \
		>"$P4_APT/etc/sources.list"
	# Only trixie's Packages index: no translations, no AppStream metadata.
	apt_trixie=(
		-o "Dir::Etc::sourcelist=$P4_APT/etc/sources.list"
		-o "Dir::Etc::sourceparts=$P4_APT/etc/sources.list.d"
		-o "Dir::Etc::preferences=$P4_APT/etc/preferences"
		-o "Dir::Etc::preferencesparts=$P4_APT/etc/preferences.d"
		-o "Dir::State=$P4_APT/state"
		-o "Dir::State::status=/var/lib/dpkg/status"
		-o "Dir::Cache=$P4_APT/cache"
		-o "Acquire::Languages=none"
		-o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false"
	)
	deb=
	if apt-get "${apt_trixie[@]}" update -qq >/tmp/patroni-setup-trixie.log 2>&1; then
		version=$(apt-cache "${apt_trixie[@]}" madison patroni | awk -v v="$P4_VERSION" '$3 ~ "^" v "-" { print $3; exit }')
		if [ -n "$version" ]; then
			rm -f "$P4_APT/debs"/patroni_*.deb
			if (cd "$P4_APT/debs" && apt-get "${apt_trixie[@]}" download "patroni=$version") >>/tmp/patroni-setup-trixie.log 2>&1; then
				deb=$(ls "$P4_APT/debs"/patroni_*_all.deb 2>/dev/null | head -n 1)
			fi
		else
			echo "trixie has no patroni $P4_VERSION-*" >>/tmp/patroni-setup-trixie.log
		fi
	fi
	if [ -z "$deb" ]; then
		log "could not fetch Patroni $P4_VERSION from trixie (see /tmp/patroni-setup-trixie.log); the harness will run $(/usr/bin/patroni --version)"
		tail -n 5 /tmp/patroni-setup-trixie.log | sed 's/^/patroni-setup:   /'
	else
		rm -rf "$P4_DIR.new"
		mkdir -p "$P4_DIR.new/bin"
		dpkg-deb -x "$deb" "$P4_DIR.new"
		for cmd in patroni patronictl; do
			cat >"$P4_DIR.new/bin/$cmd" <<EOF
#!/bin/sh
# $cmd $P4_VERSION (Debian trixie's $(basename "$deb")) on this machine's python3.
PYTHONPATH=$P4_DIR/usr/lib/python3/dist-packages\${PYTHONPATH:+:\$PYTHONPATH} exec /usr/bin/python3 $P4_DIR/usr/bin/$cmd "\$@"
EOF
			chmod 755 "$P4_DIR.new/bin/$cmd"
		done
		rm -rf "$P4_DIR"
		mv "$P4_DIR.new" "$P4_DIR"
		if ! have4; then
			log "Patroni $P4_VERSION unpacked in $P4_DIR does not run:"
			"$P4_DIR/bin/patroni" --version || true
			exit 1
		fi
		rm -rf "$P4_APT"
		log "Patroni $P4_VERSION in $P4_DIR in $(elapsed "$t")"
	fi
fi

# 3. No service of theirs may run.
for svc in etcd patroni; do
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl disable --now "$svc" >/dev/null 2>&1 || true
	elif [ -x "/etc/init.d/$svc" ]; then
		"/etc/init.d/$svc" stop >/dev/null 2>&1 || true
	fi
done
# The packages' own daemons: etcd as user etcd, Patroni on a config under
# /etc/patroni. (The harness's run as postgres from /tmp/pgpatroni-* dirs
# and are left alone, as is any other etcd.)
strays=$(ps -eo pid=,user=,args= | awk '
	$2 == "etcd" && $3 ~ /(^|\/)etcd$/ { print $1 }
	$0 ~ /[p]atroni/ && $0 ~ /\/etc\/patroni\// { print $1 }')
if [ -n "$strays" ]; then
	log "stopping etcd/Patroni services left running by the install: $strays"
	kill $strays 2>/dev/null || true
fi

log "etcd $(/usr/bin/etcd --version | awk '/^etcd Version/ { print $3 }'), $(/usr/bin/patroni --version) in /usr/bin$(
	have4 && printf ', patroni %s in %s' "$P4_VERSION" "$P4_DIR/bin")"
log "done in $(elapsed "$began")"
