#!/usr/bin/env bash
# A second MariaDB with the row-based binary log on, for the change-capture (CDC) tests:
# its own data directory under the repository (.mariadb-binlog/, gitignored), port
# $PLEX_ETL_BINLOG_PORT (default 3407), root without password. Idempotent: a server that
# already answers on that port is left alone. Needs only Debian's MariaDB server package
# (installed when missing and root). Waits at most $PLEX_ETL_BINLOG_TIMEOUT seconds (60).
set -euo pipefail
PORT=${PLEX_ETL_BINLOG_PORT:-3407}
TIMEOUT=${PLEX_ETL_BINLOG_TIMEOUT:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${PLEX_ETL_BINLOG_DIR:-$ROOT/.mariadb-binlog}

answers() {
  local admin
  admin=$(command -v mariadb-admin || command -v mysqladmin || true)
  if [ -n "$admin" ]; then
    "$admin" --no-defaults --protocol=tcp -h 127.0.0.1 -P "$PORT" -uroot --connect-timeout=2 ping >/dev/null 2>&1
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
  fi
}

if answers; then echo "binlog MariaDB answering at 127.0.0.1:$PORT"; exit 0; fi

SERVER=$(command -v mariadbd || ls /usr/sbin/mariadbd 2>/dev/null || true)
if [ -z "$SERVER" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian's mariadb-server ..."
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server >/dev/null
    SERVER=/usr/sbin/mariadbd
  else
    echo "No MariaDB server binary here. Install one with: sudo apt-get install -y mariadb-server" >&2
    exit 1
  fi
fi
INSTALL_DB=$(command -v mariadb-install-db || command -v mysql_install_db || echo /usr/bin/mariadb-install-db)

mkdir -p "$DIR"
if [ ! -d "$DIR/data/mysql" ]; then
  echo "Creating the binlog MariaDB data directory $DIR/data ..."
  rm -rf "$DIR/data"
  timeout "$TIMEOUT" "$INSTALL_DB" --no-defaults --datadir="$DIR/data" --auth-root-authentication-method=normal \
    --user="$(id -un)" --skip-test-db >"$DIR/install.log" 2>&1 \
    || { echo "mariadb-install-db failed, see $DIR/install.log:" >&2; tail -20 "$DIR/install.log" >&2; exit 1; }
fi
echo "Starting the binlog MariaDB at 127.0.0.1:$PORT ($DIR) ..."
# setsid: the server outlives the shell (and the pytest session) that started it.
setsid nohup "$SERVER" --no-defaults --datadir="$DIR/data" --port="$PORT" --bind-address=127.0.0.1 \
  --socket="$DIR/mysqld.sock" --pid-file="$DIR/mysqld.pid" --user="$(id -un)" \
  --log-bin="$DIR/data/binlog" --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL \
  --server-id=3407 --expire-logs-days=2 --innodb-buffer-pool-size=128M --local-infile=1 \
  --skip-name-resolve >"$DIR/server.log" 2>&1 < /dev/null &
for _ in $(seq 1 "$TIMEOUT"); do
  if answers; then echo "binlog MariaDB answering at 127.0.0.1:$PORT"; exit 0; fi
  sleep 1
done
echo "binlog MariaDB did not answer at 127.0.0.1:$PORT within $TIMEOUT s; its log:" >&2
tail -30 "$DIR/server.log" >&2
exit 1
