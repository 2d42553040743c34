#!/usr/bin/env bash
# Start Debian's PostgreSQL cluster and make sure a `leakcheck` role and
# database exist for the collector tests (LEAKCHECK_TEST_PG points at it).
set -euo pipefail
version=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
[ -n "$version" ] || { echo "postgres.sh: no PostgreSQL cluster found" >&2; exit 1; }
pg_ctlcluster "$version" main start 2>/dev/null || true
for _ in $(seq 50); do pg_isready -q && break; sleep 0.1; done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='leakcheck'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE leakcheck LOGIN PASSWORD 'leakcheck'\""
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='leakcheck_test'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE DATABASE leakcheck_test OWNER leakcheck\""
