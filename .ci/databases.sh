#!/usr/bin/env bash
# Makes sure the PostgreSQL and MariaDB servers the tests need answer on
# 127.0.0.1:5432 and 127.0.0.1:3306: starts them when they are installed but
# down, installs them from Debian packages when they are missing (and then
# sets up what the tests expect: trust for local TCP logins, a `test`
# database, root without a password), and says clearly what failed.
# Sourced by .ci/run; tests/unit/test_ci_databases.py runs it with stub commands.
set -euo pipefail

# Overridable so the logic can be tested without touching real services.
WAIT_SECONDS=${WAIT_SECONDS:-60}
MARIADBD=${MARIADBD:-/usr/sbin/mariadbd}
MYSQLD_RUN_DIR=${MYSQLD_RUN_DIR:-/run/mysqld}
PG_ETC=${PG_ETC:-/etc/postgresql}
PG_LIB=${PG_LIB:-/usr/lib/postgresql}

fail() {
  printf 'ci: %s\n' "$*" >&2
  exit 1
}

wait_for() {  # wait_for NAME COMMAND...
  local name=$1; shift
  for _ in $(seq 1 "$WAIT_SECONDS"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  return 1
}

apt_updated=""
apt_install() {  # apt_install PACKAGE...
  command -v apt-get >/dev/null 2>&1 ||
    fail "cannot install $*: apt-get not found (this script knows Debian and Ubuntu only)"
  [ "$(id -u)" = 0 ] || fail "cannot install $*: run as root (apt-get needs it)"
  echo "installing $* from Debian packages"
  if [ -z "$apt_updated" ]; then
    apt-get update -qq || fail "apt-get update failed: cannot install $*"
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" ||
    fail "apt-get install $* failed"
}

pg_up() { pg_isready -h 127.0.0.1 -p 5432; }
mariadb_up() { mysqladmin -h 127.0.0.1 -u root status; }

pg_version() { ls "$PG_ETC" 2>/dev/null | sort -V | tail -n 1; }

ensure_postgres() {
  if pg_up >/dev/null 2>&1; then echo "PostgreSQL is up"; return 0; fi
  local fresh=""
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls "$PG_LIB" 2>/dev/null)" ]; then
    apt_install postgresql
    fresh=1
  fi
  local version
  version=$(pg_version)
  if [ -z "$version" ]; then
    version=$(ls "$PG_LIB" | sort -V | tail -n 1)
    [ -n "$version" ] || fail "PostgreSQL is installed but $PG_LIB has no version"
    echo "creating PostgreSQL cluster $version/main"
    pg_createcluster "$version" main || fail "pg_createcluster $version main failed"
    fresh=1
  fi
  echo "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
    echo "pg_ctlcluster $version main start failed; waiting in case it is starting anyway"
  wait_for PostgreSQL pg_up ||
    fail "PostgreSQL $version did not answer on 127.0.0.1:5432 within ${WAIT_SECONDS}s; see /var/log/postgresql/postgresql-$version-main.log"
  if [ -n "$fresh" ]; then
    # What the tests expect from a fresh server: local TCP logins trusted,
    # a `test` database. Only ever done to a server this script installed.
    local hba="$PG_ETC/$version/main/pg_hba.conf"
    printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' |
      cat - "$hba" >"$hba.new" && mv "$hba.new" "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload || fail "reloading PostgreSQL failed"
    runuser -u postgres -- psql -qc "CREATE DATABASE test" || fail "creating the test database failed"
  fi
  echo "PostgreSQL is up"
}

ensure_mariadb() {
  if mariadb_up >/dev/null 2>&1; then echo "MariaDB is up"; return 0; fi
  local fresh=""
  if [ ! -x "$MARIADBD" ]; then
    apt_install mariadb-server
    fresh=1
    [ -x "$MARIADBD" ] || fail "mariadb-server installed but $MARIADBD is missing"
  fi
  # The socket directory lives on a tmpfs: gone after a reboot or in a
  # fresh container, and mariadbd will not create it.
  mkdir -p "$MYSQLD_RUN_DIR" || fail "cannot create $MYSQLD_RUN_DIR"
  chown mysql:mysql "$MYSQLD_RUN_DIR" 2>/dev/null || true
  echo "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec "$MARIADBD" -- --user=mysql ||
    echo "start-stop-daemon could not start $MARIADBD; waiting in case it is starting anyway"
  wait_for MariaDB mariadb_up ||
    fail "MariaDB did not answer on 127.0.0.1:3306 within ${WAIT_SECONDS}s (is $MYSQLD_RUN_DIR writable by mysql? see its error log under /var/lib/mysql)"
  if [ -n "$fresh" ]; then
    # A fresh Debian MariaDB lets root in over the unix socket only.
    mariadb -u root -e "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; CREATE DATABASE IF NOT EXISTS test" ||
      fail "setting up root and the test database in MariaDB failed"
  fi
  echo "MariaDB is up"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  ensure_postgres
  ensure_mariadb
fi
