#!/usr/bin/env bash
# The whole test suite on a fresh Debian/Ubuntu machine, as root:
# installs the Debian packages the lab needs, a virtual environment with
# the project and its test tools, starts the services the tests use, and
# runs every test (unit, lab, collector). Extra pytest arguments pass through.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "tests/run.sh: the lab builds network namespaces and needs root (use sudo)" >&2
  exit 2
fi

bash packaging/dev-setup.sh --test

# Services the collector tests use.
if command -v pg_ctlcluster >/dev/null 2>&1; then
  bash tests/services/postgres.sh
fi

exec .venv/bin/python -m pytest -p no:cacheprovider -q "$@"
