#!/usr/bin/env bash
# timm's own train.py and validate.py (from a checkout of timm's repository: they are not in its wheel or sdist)
# on a learngene pool, the four ways README "timm's own scripts" lists. Not part of CI (needs that checkout).
# Usage: tests/timm_upstream/scripts.sh PYTHON TIMM_REPO_DIR [WORK_DIR]
# Makes a random 1-channel fashion_mnist_l6 pool folder and a 2-class folder of 32 px images, then runs one
# epoch of train.py and a validate.py pass per way; exits non-zero on the first failure.
set -euo pipefail
PY=${1:?usage: scripts.sh PYTHON TIMM_REPO_DIR [WORK_DIR]}
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac
TIMM=$(cd "${2:?usage: scripts.sh PYTHON TIMM_REPO_DIR [WORK_DIR]}" && pwd)
WORK=${3:-$(mktemp -d)}
mkdir -p "$WORK" && cd "$WORK"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
"$PY" - <<'PYEOF'
import os
import numpy as np
import timm
import timm_learngene
from PIL import Image
rng = np.random.default_rng(0)
for split in ('train', 'validation'):
    for c in ('a', 'b'):
        os.makedirs(f'imgs/{split}/{c}', exist_ok=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8), mode='L').save(f'imgs/{split}/{c}/{i}.png')
timm_learngene.save_pool(timm.create_model('learngene_pool', pool='fashion_mnist_l6'), 'pool')
PYEOF
# timm's scripts do not import plugins: import timm_learngene, then run the script as __main__
run() { "$PY" -c 'import runpy, sys, timm_learngene; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")' "$@"; }
common=(--device cpu --workers 0 -b 4 --in-chans 1)  # the scripts pass in_chans 3 unless told
set -x
run "$TIMM/train.py" --data-dir imgs --val-split validation "${common[@]}" --epochs 1 --num-classes 2 --output out \
    --experiment overlay --model learngene_pool_s3 --model-kwargs pool=fashion_mnist_l6 \
    --pretrained --pretrained-path pool/model.safetensors
run "$TIMM/validate.py" imgs/validation "${common[@]}" --model learngene_pool_s3 --model-kwargs pool=fashion_mnist_l6 \
    --num-classes 2 --checkpoint out/overlay/model_best.pth.tar
run "$TIMM/train.py" --data-dir imgs --val-split validation "${common[@]}" --epochs 1 --num-classes 2 --output out \
    --experiment local_dir --model local-dir:pool --pretrained --model-kwargs descendant=s3
run "$TIMM/validate.py" imgs/validation "${common[@]}" --model local-dir:pool --pretrained --model-kwargs descendant=s3
set +x
echo "timm's train.py and validate.py ran on the learngene pool in $WORK"
