#!/usr/bin/env bash
# docker-setup.sh makes a Docker engine answer on this machine and builds the
# local PostgreSQL image that the docker backend of internal/pgcluster runs.
#
# No image registry is reachable here, so the image is made from the host's
# PostgreSQL 15 server binaries: /usr/lib/postgresql/15 and
# /usr/share/postgresql/15, every shared library they load, the dynamic loader,
# a static busybox for /bin/sh and a few applets, /etc/passwd and /etc/group
# with a postgres user (uid/gid 999), and the zoneinfo that initdb reads. The
# JIT provider (llvmjit, which pulls in libLLVM) is left out: PostgreSQL then
# runs without JIT and says nothing.
#
# Idempotent: on a fresh machine it installs docker.io, busybox-static and
# postgresql-15, starts dockerd and builds the image; run again, it finds all
# of that and returns in about a second. Afterwards run the tests with
#
#   DBROUTER_TEST_BACKEND=docker DBROUTER_PG_IMAGE=dbrouter-pg:15 go test ...
#
# DBROUTER_REBUILD_IMAGE=1 rebuilds the image even when it exists (e.g. after
# the host's PostgreSQL was upgraded).
set -euo pipefail

PGVER=15
IMAGE=dbrouter-pg:$PGVER
PGLIB=/usr/lib/postgresql/$PGVER
PGSHARE=/usr/share/postgresql/$PGVER
PG_UID=999
PG_GID=999

began=$(date +%s.%N)
log() { printf 'docker-setup: %s\n' "$*"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

# 1. Packages.
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
[ -x "$PGLIB/bin/postgres" ] || need+=("postgresql-$PGVER")
if [ ${#need[@]} -gt 0 ]; then
	t=$(date +%s.%N)
	log "installing ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/tmp/docker-setup-apt.log 2>&1 ||
		{ tail -n 30 /tmp/docker-setup-apt.log; exit 1; }
	log "installed in $(elapsed "$t")"
else
	log "docker.io, busybox-static and postgresql-$PGVER already installed"
fi

# 2. The engine.
if docker info >/dev/null 2>&1; then
	log "docker engine already answers"
else
	t=$(date +%s.%N)
	log "starting dockerd (log: /tmp/dockerd.log)"
	nohup dockerd >/tmp/dockerd.log 2>&1 &
	for _ in $(seq 1 120); do
		docker info >/dev/null 2>&1 && break
		sleep 0.5
	done
	if ! docker info >/dev/null 2>&1; then
		log "dockerd did not answer within 60s; last lines of /tmp/dockerd.log:"
		tail -n 30 /tmp/dockerd.log >&2
		exit 1
	fi
	log "dockerd ready in $(elapsed "$t")"
fi

# 3. The image.
if [ "${DBROUTER_REBUILD_IMAGE:-}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
	log "image $IMAGE already exists"
else
	t=$(date +%s.%N)
	log "building image $IMAGE from the host's PostgreSQL $PGVER"
	root=$(mktemp -d /tmp/dbrouter-pg-rootfs.XXXXXX)
	trap 'rm -rf "$root" "$root.tar"' EXIT

	# Mirror the host's merged-/usr links (bin -> usr/bin, lib -> usr/lib, ...)
	# so libraries copied with their paths land where the loader looks.
	for d in bin sbin lib lib64; do
		if [ -L "/$d" ]; then
			target=$(readlink "/$d")
			mkdir -p "$root/$(dirname "$d")" "$root/${target#/}"
			ln -s "$target" "$root/$d"
		elif [ -d "/$d" ]; then
			mkdir -p "$root/$d"
		fi
	done
	mkdir -p "$root/usr/bin" "$root/usr/lib" "$root/etc"

	# copy_path copies one file with its path; a symlink is copied as a link
	# and then its target, step by step, so every link name survives.
	copy_path() {
		local p=$1 n=0
		while :; do
			[ -e "$root$p" ] || [ -L "$root$p" ] || {
				mkdir -p "$root$(dirname "$p")"
				cp -a "$p" "$root$p"
			}
			[ -L "$p" ] || break
			local l
			l=$(readlink "$p")
			case $l in
			/*) p=$l ;;
			*) p=$(dirname "$p")/$l ;;
			esac
			n=$((n + 1))
			[ $n -lt 40 ] || { log "symlink loop at $1"; exit 1; }
		done
	}

	# The server tree, less JIT and build files.
	tar -C / -cf - \
		--exclude="${PGLIB#/}/lib/llvmjit.so" \
		--exclude="${PGLIB#/}/lib/llvmjit_types.bc" \
		--exclude="${PGLIB#/}/lib/bitcode" \
		--exclude="${PGLIB#/}/lib/pgxs" \
		"${PGLIB#/}" "${PGSHARE#/}" usr/share/zoneinfo | tar -C "$root" -xf -

	# Every library that ldd lists for every binary and module we ship, and
	# the loader (ldd prints nothing useful for files that are not ELF).
	libs=$(
		find "$root$PGLIB" -type f \( -perm -u+x -o -name '*.so*' \) -print |
			sed "s|^$root||" |
			while read -r f; do
				{ ldd "$f" 2>/dev/null || true; } | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
			done | sort -u
	)
	for l in $libs; do
		copy_path "$l"
	done
	nlibs=$(printf '%s\n' "$libs" | grep -c . || true)

	# A static shell and the applets the node command uses.
	cp /bin/busybox "$root/usr/bin/busybox"
	for a in sh mkdir cat sleep chmod chown id ls rm cp mv echo test [ tail head ps kill env hostname grep sed true false date; do
		ln -sf busybox "$root/usr/bin/$a"
	done
	# initdb runs `locale -a` to list locales; answer for the C locales the
	# image has, so it does not warn "no usable system locales were found".
	printf '#!/bin/sh\n[ "$1" = -a ] && printf "C\\nC.utf8\\nPOSIX\\n"\nexit 0\n' >"$root/usr/bin/locale"
	chmod 755 "$root/usr/bin/locale"

	# Users, name service, dirs.
	cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/bin/sh
postgres:x:$PG_UID:$PG_GID:PostgreSQL administrator:/var/lib/postgresql:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
	cat >"$root/etc/group" <<EOF
root:x:0:
postgres:x:$PG_GID:
nogroup:x:65534:
EOF
	printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
	mkdir -p "$root/tmp" "$root/root" "$root/var/lib/postgresql" "$root/var/run/postgresql" "$root/dev" "$root/proc" "$root/sys"
	chmod 1777 "$root/tmp"
	chmod 700 "$root/root"
	chown "$PG_UID:$PG_GID" "$root/var/lib/postgresql" "$root/var/run/postgresql"
	chmod 2775 "$root/var/run/postgresql"
	cp -L /etc/localtime "$root/etc/localtime" 2>/dev/null || true

	old_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
	tar -C "$root" --numeric-owner -cf "$root.tar" .
	size_tar=$(du -h "$root.tar" | cut -f1)
	docker import \
		--change "ENV PATH=$PGLIB/bin:/bin:/usr/bin" \
		--change 'ENV PGDATA=/var/lib/postgresql/data' \
		--change 'USER postgres' \
		--change 'WORKDIR /var/lib/postgresql' \
		--change 'EXPOSE 5432/tcp' \
		--change 'CMD ["postgres", "--version"]' \
		--message "dbrouter: PostgreSQL $PGVER from the host's binaries" \
		"$root.tar" "$IMAGE" >/dev/null
	rm -f "$root.tar"
	if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]; then
		docker image rm "$old_id" >/dev/null 2>&1 || true # still used by a container: leave it
	fi
	log "imported $IMAGE ($nlibs shared libraries, tar $size_tar) in $(elapsed "$t")"
fi

# 4. Check it runs.
version=$(docker run --rm "$IMAGE" postgres --version)
size=$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')
log "$IMAGE: $version, $size"
log "done in $(elapsed "$began"); run the tests with DBROUTER_TEST_BACKEND=docker DBROUTER_PG_IMAGE=$IMAGE"
