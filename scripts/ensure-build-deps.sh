#!/usr/bin/env bash
# mysqlclient (the C driver used for extraction) and plex_etl's own C extension (the binary read,
# plex_etl/extract/_binary.c, optional: setup.py) compile against libmariadb at install time;
# the browser test of the Dagster UI (plex_etl_tests/test_ui.py) drives Debian's chromium.
set -euo pipefail
missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null || missing+=(libmariadb-dev)
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing+=(chromium)
  else  # only the browser test needs it: it skips without
    echo "chromium not found: the UI browser test will be skipped (sudo apt-get install -y chromium)" >&2
  fi
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing build dependencies: ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
else
  echo "Missing build dependencies. Install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
