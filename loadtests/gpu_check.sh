#!/usr/bin/env bash
# Runs loadtests/gpu_check.py on the GPU machine: joins the onnxruntime-gpu wheel from its parts,
# installs it and the kit's wheels beside the machine's own packages (never over them), sets the CUDA
# library path, and writes the results into OUT (loadtests/GPU.md says how to run it with the device tool).
#
#   loadtests/gpu_check.sh [PARTS_DIR] [OUT]     (defaults /tmp/w and $OUT or ./gpu-out)
#
# PARTS_DIR holds part00, part01, ... (../shared/gpu/split-ort-gpu-wheel.sh); the kit (make gpu-prepare)
# is .gpuwheel/kit: wheels/ (pydantic, pillow, anyio for CPython 3.12), imagenet-classifier/, photos/.
set -euo pipefail
cd "$(dirname "$0")/.."
parts="${1:-/tmp/w}"
out="${2:-${OUT:-gpu-out}}"
kit=.gpuwheel/kit
site=/tmp/site
wheel="/tmp/$(cat "$kit/wheel-name")"
cat "$parts"/part[0-9]* > "$wheel"
expected="$(cut -d' ' -f1 "$kit/wheel.sha256")"
sha256sum -c - <<<"$expected  $wheel"
python3 -m pip install -q --no-index --no-deps --target "$site" "$wheel" "$kit"/wheels/*.whl
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH="$N/cu13/lib:$N/cudnn/lib:/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}"
export PYTHONPATH="$site:$PWD"
mkdir -p "$out"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed: no NVIDIA driver here?"
# GPU_CHECK_ARGS: extra arguments, e.g. --cpu-only to try this script on a machine without a GPU.
python3 -m loadtests.gpu_check --imagenet "$kit/imagenet-classifier" --photos "$kit/photos" --out "$out" ${GPU_CHECK_ARGS:-}
