#!/usr/bin/env bash
# chromium-setup.sh installs Debian's chromium for the browser tests (the
# status page, driven headless). Idempotent: returns at once when it is
# there. No browser is downloaded at test time.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
	echo "chromium-setup: $(chromium --version 2>/dev/null | head -1) already installed"
	exit 0
fi
echo "chromium-setup: installing chromium"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/tmp/chromium-setup-apt.log 2>&1 ||
	{ tail -n 30 /tmp/chromium-setup-apt.log; exit 1; }
echo "chromium-setup: $(chromium --version 2>/dev/null | head -1)"
