#!/usr/bin/env bash
# Install vLLM's CUDA build (PyPI `vllm`) into a virtualenv of its own, cached outside
# the checkout and keyed by version, for bench/gpu.sh on a machine with an NVIDIA GPU.
# Prints the environment's python on stdout (everything else goes to stderr):
#     vllm_python="$(scripts/vllm-cuda-env.sh)"; "${vllm_python%/python}/vllm" serve ...
# Idempotent: when <cache>/vllm-cuda-<version>/ exists, it only prints the path.
# Every package is pinned in scripts/vllm-cuda-requirements.txt (read why there).
set -euo pipefail

requirements="$(cd "$(dirname "$0")" && pwd)/vllm-cuda-requirements.txt"
version="$(sed -n 's/^vllm==//p' "$requirements")"
[ -n "$version" ] || { echo "[vllm-cuda-env] no vllm==<version> line in $requirements" >&2; exit 1; }

cache="${MODELROLLOUT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelrollout}"
env_dir="$cache/vllm-cuda-$version"
if [ -d "$env_dir" ]; then
  echo "$env_dir/bin/python"
  exit 0
fi

# Built under a .partial name and renamed only once it works, so an interrupted run
# never leaves a directory that a later run would take for a finished environment.
staging="$env_dir.partial"
rm -rf "$staging"
mkdir -p "$cache"
python="${PYTHON:-python3}"
echo "[vllm-cuda-env] building $env_dir (torch, vLLM and the CUDA libraries: ~10 GiB, minutes)" >&2
"$python" -m venv "$staging"
"$staging/bin/python" -m pip install -q --no-deps -r "$requirements" >&2

"$staging/bin/python" - <<'EOF' >&2
import importlib.metadata

import torch
from vllm.platforms import current_platform

assert torch.cuda.is_available(), (
    f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: "
    "does the driver support this CUDA version?"
)
assert current_platform.is_cuda(), f"vLLM chose platform {current_platform!r}, not CUDA"
print(
    f"[vllm-cuda-env] vllm {importlib.metadata.version('vllm')} on torch {torch.__version__}: "
    f"{torch.cuda.get_device_name(0)} ok"
)
EOF

# A virtualenv records its absolute path in its scripts' shebangs and in activate;
# point them at the final directory before the rename.
grep -rlF "$staging" "$staging/bin" "$staging/pyvenv.cfg" | while IFS= read -r script; do
  sed -i "s|$staging|$env_dir|g" "$script"
done
mv "$staging" "$env_dir"
echo "$env_dir/bin/python"
