#!/usr/bin/env bash
# The GPU checks in one call, for a session lent a GPU machine (an H100/H200 with CUDA torch):
#   1. the GPU tests: bf16 training steps against float32 (tests/method/test_steps_gpu.py),
#      `clef predict` on CUDA against the CPU (tests/inference/test_predict_gpu.py), and the
#      stage-1 gather across workers (tests/method/test_dist.py);
#   2. `python3 -m bench.gpu_train` with the paper preset (ViT-B/16) on CUDA, torch.compile'd steps
#      included while its 380-s budget lasts (killed at 440 s: under 8 minutes; it saves its
#      results after every measurement).
#
# That machine has its own python3 (3.12) with a CUDA build of torch, numpy, pyarrow, OpenCV,
# timm, pytest ...; nothing can be fetched there. What it lacks (open_clip, pydantic, ftfy
# and their small dependencies) travels as wheels in .whl/, downloaded here by `make
# gpu-wheels`. The project is used from the copied tree (PYTHONPATH), never pip-installed
# there: its pins name this machine's CPU torch.
#
#   make gpu-wheels                      # here, once (.whl/ is ignored by git)
#   device run: command "bash bench/gpu_check.sh", carry [".whl"], timeout_s 590
#
# Results (gpu_train.json / .md / .log, pytest.txt, nvidia_smi.txt) go to $OUT when it is set
# (the device tool brings that folder back), else to bench/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
py=python3
export PYTHONUNBUFFERED=1

if ! $py -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: $py's torch sees no CUDA device ($($py -c 'import torch; print(torch.__version__)' 2>&1))"
    exit 2
fi
if ! $py -c 'import open_clip, pydantic, ftfy, yaml' 2>/dev/null; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "gpu_check: open_clip/pydantic/ftfy missing and no wheels: run 'make gpu-wheels' and carry .whl"
        exit 2
    fi
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/clef-site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/clef-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.max.sm \
    --format=csv | tee "$out/nvidia_smi.txt"
$py -c 'import torch, open_clip; print("torch", torch.__version__, "CUDA", torch.version.cuda,
"open_clip", open_clip.__version__, torch.cuda.get_device_name())' | tee -a "$out/nvidia_smi.txt"

status=0
timeout 120 $py -m pytest -q -p no:cacheprovider -rs \
    tests/method/test_steps_gpu.py tests/inference/test_predict_gpu.py tests/method/test_dist.py \
    2>&1 | tee "$out/pytest.txt" || status=1

timeout 440 $py -m bench.gpu_train --preset paper --device cuda --compile --budget-s 380 \
    --out "$out" 2>&1 | tee "$out/gpu_train.log" || status=1
exit $status
