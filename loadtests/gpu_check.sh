#!/usr/bin/env bash
# Runs loadtests/gpu_check.py and loadtests/gpu_serve.py on the GPU machine: joins the onnxruntime-gpu
# wheel from its parts, installs it and the kit's wheels beside the machine's own packages (never over
# them), sets the CUDA library path, and writes the results into OUT (loadtests/GPU.md says how to run
# it with the device tool).
#
#   loadtests/gpu_check.sh [PARTS_DIR] [OUT]     (defaults /tmp/w and $OUT or ./gpu-out)
#
# PARTS_DIR holds part00, part01, ... (../shared/gpu/split-ort-gpu-wheel.sh); the kit (make gpu-prepare)
# is .gpuwheel/kit: wheels/ (the serving dependencies for CPython 3.12, less numpy), imagenet-classifier/,
# photos/.
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
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheel" "$kit"/wheels/*.whl
# The CUDA 13 and cuDNN 9 libraries onnxruntime-gpu loads: wherever the machine's Python packages or its
# CUDA toolkit keep them (the H100 and H200 images differ), their folders first on the library path.
libs=$( (find /opt/torch/.venv/lib/python3.12/site-packages/nvidia /usr/local/cuda* -maxdepth 4 \
  \( -name 'libcublas.so.13*' -o -name 'libcudart.so.13*' -o -name 'libcurand.so.10*' -o -name 'libcudnn.so.9*' \
  -o -name 'libcufft.so.12*' \) -printf '%h\n' 2>/dev/null || true) | sort -u | paste -sd: -)
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "CUDA libraries from: ${libs:-(none found)}"
export PYTHONPATH="$site:$PWD"
mkdir -p "$out"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed: no NVIDIA driver here?"
# GPU_CHECK_ARGS: extra arguments, e.g. --cpu-only to try this script on a machine without a GPU.
status=0
python3 -m loadtests.gpu_check --imagenet "$kit/imagenet-classifier" --photos "$kit/photos" --out "$out" \
  ${GPU_CHECK_ARGS:-} || status=1
# The served half: real `bentoml serve` processes on CUDA and on the CPU, real HTTP (loadtests/gpu_serve.py).
# GPU_SERVE_ARGS: e.g. --servers cpu on a machine without a GPU.
python3 -m loadtests.gpu_serve --imagenet "$kit/imagenet-classifier" --photos "$kit/photos" --out "$out" \
  ${GPU_SERVE_ARGS:-} || status=1
exit $status
