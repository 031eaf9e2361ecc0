#!/usr/bin/env bash
# Makes sure a MySQL-compatible server answers at $MYSQL_HOST:$MYSQL_PORT (default 127.0.0.1:3306)
# for user root with an empty password, the demo/test default.
#  1. the configured server answers: nothing to do;
#  2. this machine's MariaDB is installed but stopped: start it;
#  3. only the server binaries exist: start one in a project-local data directory (.mariadb/);
#  4. nothing installed: install Debian's mariadb-server when root, else print the one command.
set -euo pipefail
HOST=${MYSQL_HOST:-127.0.0.1}
PORT=${MYSQL_PORT:-3306}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOCAL_DIR="$ROOT/.mariadb"

answers() {
  if command -v mariadb-admin >/dev/null 2>&1; then
    mariadb-admin --protocol=tcp -h "$HOST" -P "$PORT" -uroot --connect-timeout=2 ping >/dev/null 2>&1
  elif command -v mysqladmin >/dev/null 2>&1; then
    mysqladmin --protocol=tcp -h "$HOST" -P "$PORT" -uroot --connect-timeout=2 ping >/dev/null 2>&1
  else
    (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
  fi
}

wait_for_server() {
  for _ in $(seq 1 60); do
    if answers; then echo "MySQL server answering at $HOST:$PORT"; return 0; fi
    sleep 1
  done
  echo "MySQL server did not come up at $HOST:$PORT" >&2
  return 1
}

if answers; then echo "MySQL server answering at $HOST:$PORT"; exit 0; fi

if [ "$HOST" != "127.0.0.1" ] && [ "$HOST" != "localhost" ]; then
  echo "The configured MySQL server $HOST:$PORT does not answer; start it or point MYSQL_HOST elsewhere." >&2
  exit 1
fi

SERVER=$(command -v mariadbd || ls /usr/sbin/mariadbd 2>/dev/null || true)
if [ -z "$SERVER" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian's mariadb-server ..."
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server >/dev/null
    SERVER=/usr/sbin/mariadbd
  else
    echo "No MySQL-compatible server here. Install one with: sudo apt-get install -y mariadb-server" >&2
    exit 1
  fi
fi

if [ "$(id -u)" = 0 ] && [ -d /var/lib/mysql/mysql ]; then
  echo "Starting this machine's MariaDB ..."
  start-stop-daemon --start --oknodo --background --exec "$SERVER"
  wait_for_server && exit 0
fi

echo "Starting MariaDB in $LOCAL_DIR ..."
mkdir -p "$LOCAL_DIR"
if [ ! -d "$LOCAL_DIR/data/mysql" ]; then
  mariadb-install-db --no-defaults --datadir="$LOCAL_DIR/data" --auth-root-authentication-method=normal \
    --user="$(id -un)" >"$LOCAL_DIR/install.log" 2>&1
fi
nohup "$SERVER" --no-defaults --datadir="$LOCAL_DIR/data" --port="$PORT" --bind-address=127.0.0.1 \
  --socket="$LOCAL_DIR/mysqld.sock" --pid-file="$LOCAL_DIR/mysqld.pid" --user="$(id -un)" \
  --local-infile=1 --innodb-buffer-pool-size=512M >"$LOCAL_DIR/server.log" 2>&1 &
wait_for_server
