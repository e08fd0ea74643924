#!/usr/bin/env bash
# Joint-finetuning ablation on the demo's distilled pool: the demo preset's finetune stage against variants of it
# (each one `--set` override or a few), on the same distilled pool, equal data; every variant's descendants are
# evaluated on the validation split and the test set and checked against the demo's targets (its report.md).
# Reuses out/demo/{ancestry,distill,eval_distilled} (run `make demo` first, or `make demo DEMO_ARGS='--until
# eval_distilled'`); a variant that overrides distill.* reuses only the ancestry and distills again. Latency
# profiling is skipped (accuracy only). A variant already finished is reused.
#   recipes/ablate_finetune.sh                            -> the default variants below
#   recipes/ablate_finetune.sh NAME 'finetune.KEY=VALUE ...' [NAME '...' ...]
# Each variant's report: out/ablation_ft_<NAME>/report/report.md; a summary of every variant's targets is printed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
for stage in ancestry distill eval_distilled; do
  [ -f "$root/out/demo/$stage/.stage_done.json" ] || {
    echo "error: out/demo/$stage is not finished; run make demo (or make demo DEMO_ARGS='--until eval_distilled')" >&2
    exit 2; }
done
if [ $# -eq 0 ]; then
  set -- routes3 'finetune.routes_per_step=3' \
         steps600 'finetune.max_steps=600' \
         stitch_lr10 'finetune.stitch_lr_scale=10'
fi
[ $(( $# % 2 )) -eq 0 ] || { echo "error: give NAME 'KEY=VALUE ...' pairs, e.g. lr5 'finetune.lr=5e-4'" >&2; exit 2; }
names=()
while [ $# -gt 0 ]; do
  name=$1; overrides=$2; shift 2
  out="$root/out/ablation_ft_$name"
  mkdir -p "$out"
  reuse=(ancestry distill eval_distilled)
  case " $overrides" in *" distill."*) reuse=(ancestry) ;; esac
  for stage in "${reuse[@]}"; do ln -sfn "$root/out/demo/$stage" "$out/$stage"; done
  args=(--set evaluate.throughput=false)
  for kv in $overrides; do args+=(--set "$kv"); done
  echo "== $name: ${args[*]}"
  "$py" "$root/recipes/pipeline.py" --preset demo --output "$out" "${args[@]}" > "$out/pipeline.log" 2>&1 || {
    echo "error: variant $name failed; see $out/pipeline.log" >&2; exit 1; }
  names+=("$name")
done
for name in demo "${names[@]}"; do
  d="$root/out/demo"; [ "$name" = demo ] || d="$root/out/ablation_ft_$name"
  echo "== $name"
  sed -n '/^| target |/,/accuracy targets met/p;/^Stitched descendants (/p' "$d/report/report.md"
done
