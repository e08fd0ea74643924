#!/usr/bin/env bash
# The demo's targets (preset `demo`, section `targets`) measured on a finished arm of the replication, without
# training anything: a demo-layout folder of links to the replication's shared ancestry and the arm's distill,
# finetune and evaluate stages of one seed, then `pipeline --preset demo` on it, which reuses those stages, runs
# only `eval_distilled` (the members before finetuning, ~1 min) and writes the demo's report with its target table.
# The replication uses the demo's stage settings, so this is what `make demo` would report for that design with the
# replication's ancestry. docs/stitching.md section 11 ran it for the LGP arm and the best candidate, 3 seeds.
#
#   recipes/demo_targets.sh REPLICATION_OUT SEED ARM OUTPUT [pipeline --set options describing the arm]
#   recipes/demo_targets.sh out/replication 0 lgp_lstsq out/demo_targets/lgp_lstsq_seed0
#   recipes/demo_targets.sh out/replication 0 w4_ws_members out/demo_targets/w4_ws_members_seed0 \
#       --set distill.pool=fashion_mnist_l6_w4 --set distill.member_init=weight_selection --set finetune.sandwich=members
#
# ARM: lgp_<init> (the paper's pool) or a candidate's name, as in the replication's <ARM>_finetuned folders.
# Options after OUTPUT go to the pipeline (a later --preset replaces `demo`); PYTHON picks the interpreter.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 REPLICATION_OUT SEED ARM OUTPUT [pipeline options, e.g. --set distill.pool=NAME]" >&2
    exit 2
fi
rep=$(realpath "$1"); seed=$2; arm=$3; out=$4; shift 4
sd="$rep/seed$seed"
for d in "$rep/ancestry" "$sd/${arm}_finetuned"; do
    if [ ! -e "$d/.stage_done.json" ]; then
        echo "error: $d has not finished (no .stage_done.json); run the replication's arm $arm for seed $seed first" >&2
        exit 2
    fi
done
# the distilled pool the arm finetuned, as its finetune config names it (candidates with the same distillation
# share one folder); a relative path is relative to where the run started, found from its `output`
dist=$("${PYTHON:-python}" - "$sd/${arm}_finetuned" <<'PY'
import sys
from pathlib import Path
import yaml
ft = Path(sys.argv[1]).absolute()
cfg = yaml.safe_load((ft / 'config.yaml').read_text())
pool, base = Path(cfg['pool']), ft
for _ in Path(cfg['output']).parts:
    base = base.parent
print((pool if pool.is_absolute() else base / pool).parent)
PY
)
for d in "$dist" "$sd/eval_${arm}_finetuned"; do
    if [ ! -e "$d/.stage_done.json" ]; then
        echo "error: $d has not finished (no .stage_done.json); run the replication's arm $arm for seed $seed first" >&2
        exit 2
    fi
done
if [ -e "$out" ] && [ ! -d "$out" ]; then
    echo "error: $out exists and is not a folder; give a new OUTPUT folder" >&2
    exit 2
fi
mkdir -p "$out"
ln -sfn "$rep/ancestry" "$out/ancestry"
ln -sfn "$(realpath "$dist")" "$out/distill"
ln -sfn "$(realpath "$sd/${arm}_finetuned")" "$out/finetune"
ln -sfn "$(realpath "$sd/eval_${arm}_finetuned")" "$out/eval"
"${PYTHON:-python}" -m timm_learngene.recipes.pipeline --preset demo --output "$out" --seed "$seed" "$@"
