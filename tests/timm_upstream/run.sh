#!/usr/bin/env bash
# Run timm's own tests/test_models.py, from the sdist of the installed timm version, over learngene models.
# Usage: tests/timm_upstream/run.sh PYTHON [MODEL_PATTERNS] [pytest args...]
#   MODEL_PATTERNS: comma-separated fnmatch patterns (default: every learngene model).
# The sdist is fetched once from the package index with pip and cached in $TIMM_SDIST_CACHE
# (default ~/.cache/timm-learngene); timm's test file is run as shipped, with conftest_plugin.py loaded.
set -euo pipefail
PY=${1:?usage: run.sh PYTHON [MODEL_PATTERNS] [pytest args]}
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # the run cds into the sdist
PATTERNS=${2:-learngene_pool*}
shift $(( $# >= 2 ? 2 : 1 ))
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VER=$("$PY" -c 'import timm; print(timm.__version__)')
CACHE=${TIMM_SDIST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/timm-learngene}
SRC="$CACHE/timm-$VER"
if [ ! -f "$SRC/tests/test_models.py" ]; then
  mkdir -p "$CACHE"
  if ! "$PY" -m pip download "timm==$VER" --no-deps --no-binary :all: -d "$CACHE" -q; then
    echo "error: could not fetch the sdist of timm $VER from the package index (pip download timm==$VER" \
         "--no-deps --no-binary :all:); it holds the tests/test_models.py these tests run. Check the network" \
         "or pip's index settings, or unpack that sdist into $CACHE (TIMM_SDIST_CACHE)." >&2
    exit 2
  fi
  tar -xzf "$CACHE/timm-$VER.tar.gz" -C "$CACHE"
fi
cd "$SRC"
export PYTHONPATH="$ROOT:$HERE${PYTHONPATH:+:$PYTHONPATH}"
export LEARNGENE_TIMM_MODELS="$PATTERNS"
exec "$PY" -m pytest "$SRC/tests/test_models.py" -p conftest_plugin -p no:cacheprovider -q -rs "$@"
