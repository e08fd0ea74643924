#!/usr/bin/env bash
# Run benchmarks on an earlier commit and on the working tree, alternating, in one run (same machine state), and
# print each script's headline lines side by side.
#   benchmarks/before_after.sh REV [ARGS...]       e.g. benchmarks/before_after.sh 9a6b590 --pool fashion_mnist_l6
# BENCHES (default "stitch_overhead finetune_step") picks the scripts; ROUNDS (default 2) the alternations.
set -euo pipefail
rev=${1:?usage: benchmarks/before_after.sh REV [benchmark args...]}; shift
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
tree=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"' EXIT
git -C "$root" worktree add --detach -q "$tree" "$rev"
for round in $(seq 1 "${ROUNDS:-2}"); do
  for bench in ${BENCHES:-stitch_overhead finetune_step}; do
    for side in before after; do
      dir=$root; [ "$side" = before ] && dir=$tree
      echo "== round $round $bench $side ($( [ "$side" = before ] && echo "$rev" || echo "working tree"))"
      (cd "$dir" && PYTHONPATH="$dir" "$py" "benchmarks/$bench.py" "$@" 2>&1 | grep -iE 'ratio|descendant s|worst|->' | tail -8)
    done
  done
done
