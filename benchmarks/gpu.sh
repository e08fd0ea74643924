#!/usr/bin/env bash
# The GPU benchmarks, for a person with one CUDA GPU; no network needed. Runs stitch_overhead, distill_step,
# finetune_step and throughput in bf16 autocast at 224 px, batch 32, each with its model-FLOP utilisation (MFU),
# and writes benchmarks/results_gpu.md; then the data-parallel scaling of a distill and a finetune step, 1 GPU vs
# every visible GPU (benchmarks/scaling.py), appended to it. About 5-7 minutes on an H100 (under 8).
#
#   benchmarks/gpu.sh                          # peak looked up by GPU name (H100 SXM bf16 dense: 989 TFLOP/s, ...)
#   benchmarks/gpu.sh --peak-tflops 756        # or state the peak (H100 PCIe); any other flag is passed through
#   WHEELS=/path/to/wheels benchmarks/gpu.sh   # no ready Python: build a venv from a folder of wheels
#
# Python: $PYTHON if set, else the repo's .venv, else python3, whichever imports torch with CUDA and timm.
# Without one, WHEELS must name a folder holding wheels of torch (CUDA build), torchvision, timm, safetensors,
# huggingface-hub, accelerate, pyyaml and their dependencies; a venv is made in $GPU_VENV
# (default /tmp/timm-learngene-gpu-venv) with `pip install --no-index`. The repo itself is not installed: the
# benchmarks import it from the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

needs='import torch, timm, safetensors, huggingface_hub, accelerate
assert torch.cuda.is_available(), "no CUDA device visible to torch"'
py=''
for candidate in "${PYTHON:-}" .venv/bin/python python3; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null && "$candidate" -c "$needs" 2>/dev/null; then
        py=$candidate
        break
    fi
done
if [ -z "$py" ]; then
    if [ -z "${WHEELS:-}" ]; then
        echo "no Python here imports torch (with a visible CUDA GPU), timm, safetensors, huggingface_hub and" >&2
        echo "accelerate; set PYTHON=/path/to/python, or WHEELS=/folder/of/wheels to build a venv offline" >&2
        exit 2
    fi
    venv=${GPU_VENV:-/tmp/timm-learngene-gpu-venv}
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --no-index --find-links "$WHEELS" \
        torch torchvision timm safetensors huggingface-hub accelerate pyyaml
    py=$venv/bin/python
    "$py" -c "$needs"
fi

export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
"$py" -c 'import torch; print("GPU:", torch.cuda.get_device_name(), "| torch", torch.__version__)'
timeout 330 "$py" -m benchmarks --device cuda --dtype bf16 \
    --only stitch_overhead,distill_step,finetune_step,throughput \
    --output benchmarks/results_gpu.md "$@"

# Data-parallel scaling (benchmarks/scaling.py): a bf16 distill and finetune step (deit_base_l6, 224 px, 32 images
# per GPU) on 1 GPU and on every GPU visible, appended to results_gpu.md with the efficiency of N vs 1.
ngpu=$("$py" -c 'import torch; print(torch.cuda.device_count())')
lines=$(mktemp)
for stage in distill finetune; do
    for n in 1 "$ngpu"; do
        if [ "$n" = 1 ]; then multi=(); else multi=(--multi_gpu); fi
        if [ "$n" = 1 ] || [ "$ngpu" -gt 1 ]; then
            timeout 120 "$py" -m accelerate.commands.launch "${multi[@]}" --num_processes "$n" --num_machines 1 \
                --mixed_precision bf16 --dynamo_backend no benchmarks/scaling.py --stage "$stage" --output "$lines" \
                || echo "scaling: $stage on $n GPU(s) failed" >&2
        fi
    done
done
{
    echo
    echo "## Data-parallel scaling (benchmarks/scaling.py, bf16, 32 images per GPU, $ngpu GPU(s) visible)"
    echo
    "$py" benchmarks/scaling.py --report "$lines"
} >> benchmarks/results_gpu.md
rm -f "$lines"
