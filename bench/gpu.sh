#!/usr/bin/env bash
# The GPU check, for a machine where nvidia-smi shows an NVIDIA GPU:
#   (a) bench/serving.py on CUDA: modelserve's continuous batching vs sequential;
#   (b) vLLM's CUDA build (pinned, its own cached venv: scripts/vllm-cuda-env.sh) serving
#       a tiny model on the GPU beside modelserve on CUDA: start time of each, then a
#       short loadgen and GuideLLM run against each, checked against the servers' own
#       TTFT/ITL histograms (bench/guidellm_compare.py --check).
# Where there is no GPU it says so and exits 2 without running anything: nothing here
# falls back to the CPU.
#     bash bench/gpu.sh            (after scripts/bootstrap.sh; figures also in $GPU_BENCH_OUT)
set -euo pipefail
cd "$(dirname "$0")/.."

no_gpu() {
  echo "[gpu] no GPU here ($1): this check needs an NVIDIA GPU and its driver; nothing was run." >&2
  exit 2
}
command -v nvidia-smi >/dev/null 2>&1 || no_gpu "nvidia-smi is not on PATH"
gpus="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)" \
  || no_gpu "nvidia-smi failed: $gpus"
[ -n "$gpus" ] || no_gpu "nvidia-smi lists no GPU"
echo "[gpu] $gpus"

python="${MODELROLLOUT_PYTHON:-.venv/bin/python}"
[ -x "$python" ] || { echo "[gpu] $python is missing: run scripts/bootstrap.sh first" >&2; exit 1; }
"$python" - <<'EOF'
import torch

assert torch.cuda.is_available(), (
    f"the project's torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"
)
print(f"[gpu] project torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
EOF

out="${GPU_BENCH_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-bench-XXXXXX")}"
mkdir -p "$out"
echo "[gpu] figures go to $out"

echo "[gpu] (a) serving bench, modelserve on CUDA"
"$python" bench/serving.py --device cuda | tee "$out/serving.txt"

echo "[gpu] (b) vLLM's CUDA build and modelserve on CUDA: start time, loadgen and GuideLLM"
vllm_python="$(scripts/vllm-cuda-env.sh)"
guidellm_python="$(scripts/guidellm-env.sh)"
"$python" bench/guidellm_compare.py --device cuda \
  --vllm-python "$vllm_python" --guidellm-python "$guidellm_python" \
  --requests 48 --concurrency 8 --json "$out/guidellm_compare.json" --check \
  | tee "$out/guidellm_compare.txt"
echo "[gpu] done: $out"
