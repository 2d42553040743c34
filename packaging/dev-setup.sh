#!/usr/bin/env bash
# Set up a working copy on Debian/Ubuntu, as root: the Debian packages
# leakcheck uses at run time (and, with --test, those the lab and the
# collector tests need), then a virtual environment in .venv with leakcheck
# installed in editable mode. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

runtime=(python3 python3-venv python3-dev build-essential iproute2 nftables wireguard-tools)
# chromium: the collector's web page is tested in a real headless browser.
lab=(wireguard-go tcpdump postgresql chromium)
# Package tests (tests/packaging): a clean Debian root made with debootstrap,
# `systemd-analyze verify|security` on the units, the units started by a real
# systemd in a container (systemd-nspawn), dpkg-deb to build the .debs.
packaging=(debootstrap systemd systemd-container dpkg)
packages=("${runtime[@]}")
if [ "${1:-}" = "--test" ]; then
  packages+=("${lab[@]}" "${packaging[@]}")
  # Each lab area lists its own Debian packages (real VPN clients and
  # servers, resolvers) in packaging/test-packages.d/AREA.list, one per line.
  for list in packaging/test-packages.d/*.list; do
    [ -e "$list" ] || continue
    while read -r pkg _; do
      case "$pkg" in ''|'#'*) continue ;; esac
      packages+=("$pkg")
    done < "$list"
  done
fi

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Several working copies may set up at once: one apt at a time.
  exec 9>/run/lock/leakcheck-apt.lock
  flock 9
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=900 --no-install-recommends "${missing[@]}" >/dev/null
  exec 9>&-
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
.venv/bin/pip install -q --disable-pip-version-check -e ".${extras}"
