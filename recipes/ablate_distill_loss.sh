#!/usr/bin/env bash
# Distillation-loss ablation on the demo's ancestry: the demo preset's distillation (normalised feature terms)
# against the same run with logit KD only (beta_block = beta_attn = 0), equal steps, both members evaluated on the
# full test set and the validation split. Reuses out/demo/ancestry (run `make demo` first, or at least its
# ancestry stage); each variant stops after evaluating its distilled members.
#   recipes/ablate_distill_loss.sh            -> out/ablation_<name>/eval_distilled/descendants.csv, summary printed
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
[ -f "$root/out/demo/ancestry/.stage_done.json" ] || { echo "error: out/demo/ancestry is not finished; run make demo" >&2; exit 2; }
run() {  # NAME then --set overrides
  local name=$1; shift
  mkdir -p "$root/out/ablation_$name"
  ln -sfn "$root/out/demo/ancestry" "$root/out/ablation_$name/ancestry"
  "$py" "$root/recipes/pipeline.py" --preset demo --output "$root/out/ablation_$name" --until eval_distilled "$@"
}
run logit_kd --set distill.beta_block=0 --set distill.beta_attn=0 --set distill.feature_norm=none
for d in "$root/out/demo" "$root/out/ablation_logit_kd"; do
  echo "== $d"; cat "$d/eval_distilled/descendants.csv"
done
