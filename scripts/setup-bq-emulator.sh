#!/usr/bin/env bash
# Installs the local BigQuery emulator used by the tests (local-bigquery 0.4.0) into
# .emulator/ (gitignored), from PyPI only. Idempotent: does nothing when already installed.
#
# usage: scripts/setup-bq-emulator.sh [EMULATOR_DIR]      (default: <repo>/.emulator)
#
# Layout:
#   $DIR/venv      Python >= 3.13 venv with local-bigquery (the emulator pins its own DuckDB)
#   $DIR/home      HOME for the emulator process: DuckDB extensions are pre-installed in
#                  $DIR/home/.duckdb/extensions so the emulator never downloads them
#   $DIR/.installed marker written last
#
# Start: HOME=$DIR/home $DIR/venv/bin/local-bigquery serve --host 127.0.0.1 --port PORT \
#            --grpc-port GRPC_PORT --project test-project --data-dir DATA_DIR
# (the tests do this themselves: plex_etl_tests/bq_emulator.py)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-${PLEX_ETL_EMULATOR_DIR:-$ROOT/.emulator}}"
VERSION="0.4.0"
DUCKDB="1.5.5"
MARKER="$DIR/.installed"
WANT="local-bigquery==$VERSION duckdb==$DUCKDB"

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$WANT" && -x "$DIR/venv/bin/local-bigquery" ]]; then
  echo "bq emulator already installed in $DIR"
  exit 0
fi

# local-bigquery requires Python >= 3.13. pyenv shims may exist without working: try each.
find_py313() {
  local c
  for c in ${PY313:-} python3.13 python3.14 \
      "$HOME"/.pyenv/versions/3.1[3-9]*/bin/python3 /root/.pyenv/versions/3.1[3-9]*/bin/python3; do
    if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 13))' >/dev/null 2>&1; then
      echo "$c"; return 0
    fi
  done
  return 1
}
PY=$(find_py313) || {
  echo "setup-bq-emulator: no working Python >= 3.13 found (set PY313=/path/to/python3.13)" >&2
  exit 1
}

rm -f "$MARKER"
mkdir -p "$DIR"
[[ -x "$DIR/venv/bin/python" ]] || "$PY" -m venv "$DIR/venv"
PIP=("$DIR/venv/bin/python" -m pip install -q --disable-pip-version-check)
# pip prints resolver "conflicts" for the DuckDB pin below (exit code 0): hide that noise.
pip_install() {
  local out status=0
  out=$("${PIP[@]}" "$@" 2>&1) || status=$?
  [[ -z "$out" ]] || grep -v -e "dependency conflicts" -e "requires duckdb" \
    -e "dependency resolver" -e "^WARNING: Location" <<<"$out" || true
  [[ $status == 0 ]] || { echo "setup-bq-emulator: pip install $* failed" >&2; exit 1; }
}
pip_install "local-bigquery==$VERSION"
# local-bigquery declares duckdb>=2.0 but needs the icu + ducklake (+spatial) extensions,
# which DuckDB downloads at run time from extensions.duckdb.org (not reachable offline).
# PyPI ships extension wheels only up to DuckDB 1.5.5: pin DuckDB to it and pre-install
# the extensions.
pip_install "duckdb==$DUCKDB" "duckdb-extension-icu==$DUCKDB" \
  "duckdb-extension-ducklake==$DUCKDB" "duckdb-extension-spatial==$DUCKDB"
"$DIR/venv/bin/python" -c "import duckdb; assert duckdb.__version__ == '$DUCKDB', duckdb.__version__"

PLATFORM=$("$DIR/venv/bin/python" -c "import duckdb; print(duckdb.sql('PRAGMA platform').fetchone()[0])")
EXT="$DIR/home/.duckdb/extensions/v$DUCKDB/$PLATFORM"
mkdir -p "$EXT"
SP=$("$DIR/venv/bin/python" -c "import site; print(site.getsitepackages()[0])")
for e in icu ducklake spatial; do
  cp "$SP/duckdb_extension_$e/extensions/v$DUCKDB/$e.duckdb_extension" "$EXT/"
done
echo "$WANT" > "$MARKER"
echo "bq emulator installed in $DIR"
