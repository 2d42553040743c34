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

# Services the collector tests use: a real PostgreSQL (the tests fail, not
# skip, without it), reached through LEAKCHECK_TEST_PG.
bash tests/services/postgres.sh
export LEAKCHECK_TEST_PG="${LEAKCHECK_TEST_PG:-postgresql://leakcheck:leakcheck@localhost/leakcheck_test}"

exec .venv/bin/python -m pytest -p no:cacheprovider -q "$@"
