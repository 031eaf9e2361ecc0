#!/usr/bin/env bash
# The binary read's C extension (plex_etl/extract/_binary.c) under AddressSanitizer and
# UndefinedBehaviorSanitizer: it is built with -fsanitize=address,undefined into a scratch copy
# of the working tree, and the tests that drive it (read paths, type map, the extension's own
# misuse tests) run against that build with libasan preloaded into Python. Any sanitizer
# report, in pytest or in a child process, fails the script. `make test` runs it first.
#
# usage: scripts/sanitizer-tests.sh [PYTEST ARGS...]   (default: the three test files)
# Env: PYTHON (default .venv/bin/python), KEEP_SANITIZER_DIR=1 keeps the scratch copy.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
LIBASAN="$(gcc -print-file-name=libasan.so)"
if [ ! -f "$LIBASAN" ]; then
  echo "sanitizer-tests: gcc's libasan not found (Debian: it comes with gcc)" >&2
  exit 1
fi
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/plex-etl-sanitizer.XXXXXX")"
[ "${KEEP_SANITIZER_DIR:-}" = 1 ] || trap 'rm -rf "$SCRATCH"' EXIT

# The working tree as it is (tracked and new files, not ignored ones: no venv, no built .so).
(cd "$ROOT" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$SCRATCH"
SANITIZE="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
(cd "$SCRATCH" && CFLAGS="$SANITIZE" LDFLAGS="$SANITIZE" "$PYTHON" setup.py -q build_ext --inplace >build.log 2>&1) \
  || { cat "$SCRATCH/build.log" >&2; exit 1; }

export PYTHONPATH="$SCRATCH" LD_PRELOAD="$LIBASAN"
# Python itself leaks by design: no leak check. A report stops the process with exit code 86.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:exitcode=86"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=86"
export PLEX_ETL_READER=binary  # no silent fallback to the text read: the sanitized build must be the one read
built="$(cd "$SCRATCH" && "$PYTHON" -c 'from plex_etl.extract import native; print(native.binary_module().__file__)')"
case "$built" in
  "$SCRATCH"/*) ;;
  *) echo "sanitizer-tests: the tests would import $built, not the sanitized build in $SCRATCH" >&2; exit 1 ;;
esac

[ $# -gt 0 ] || set -- plex_etl_tests/test_read_paths.py plex_etl_tests/test_typemap.py plex_etl_tests/test_native.py
# --capture=sys: pytest captures Python's output only, so a report written to the stderr file
# descriptor reaches the log even when it kills pytest (children's reports come in the failing
# test's output: test_native.py shows a child's stderr).
status=0
(cd "$SCRATCH" && "$PYTHON" -m pytest -q -p no:cacheprovider --capture=sys "$@") 2>&1 | tee "$SCRATCH/pytest.log" \
  || status=$?  # pipefail: pytest's status
if grep -q -E "ERROR: AddressSanitizer|runtime error:|UndefinedBehaviorSanitizer" "$SCRATCH/pytest.log"; then
  echo "sanitizer-tests: FAILED, a sanitizer report above" >&2
  exit 1
fi
[ "$status" = 0 ] || { echo "sanitizer-tests: FAILED (pytest exit $status; 86: killed by a sanitizer)" >&2; exit 1; }
echo "sanitizer-tests: no sanitizer report"
