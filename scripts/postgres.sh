#!/usr/bin/env bash
# Makes sure the PostgreSQL server of the tests is up: installs it (Debian's package)
# when missing, starts the cluster when it is down, checks the login and creates the
# database `test`. Sourced by scripts/test.sh: it exports FLASHSALE_TEST_POSTGRES_URL.
# Fails loudly: the PostgreSQL tests must run in CI, never skip.

PG_HOST=127.0.0.1
PG_PORT=5432
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "== installing PostgreSQL (Debian package)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql postgresql-client
fi

if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
  echo "== starting PostgreSQL"
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && break
    sleep 0.5
  done
fi
pg_isready -h "$PG_HOST" -p "$PG_PORT" || { echo "PostgreSQL is not up" >&2; exit 1; }

# The machine's server trusts local TCP logins; a freshly installed one asks for a
# password, which is then set here (the server listens on localhost only).
PG_URL_BASE="postgresql://postgres@$PG_HOST:$PG_PORT"
if ! psql "$PG_URL_BASE/postgres" -Atqc "SELECT 1" >/dev/null 2>&1; then
  $SUDO runuser -u postgres -- psql -Atqc "ALTER USER postgres PASSWORD 'postgres'"
  PG_URL_BASE="postgresql://postgres:postgres@$PG_HOST:$PG_PORT"
fi
if [ "$(psql "$PG_URL_BASE/postgres" -Atqc "SELECT 1 FROM pg_database WHERE datname = 'test'")" != "1" ]; then
  psql "$PG_URL_BASE/postgres" -qc "CREATE DATABASE test"
fi
export FLASHSALE_TEST_POSTGRES_URL="${FLASHSALE_TEST_POSTGRES_URL:-$PG_URL_BASE/test}"
echo "== PostgreSQL up: $FLASHSALE_TEST_POSTGRES_URL"
