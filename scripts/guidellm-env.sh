#!/usr/bin/env bash
# Install GuideLLM (PyPI `guidellm`, a load generator for OpenAI-compatible servers)
# into a virtualenv of its own, cached outside the checkout and keyed by version, so
# the project's .venv keeps its transformers 4. Prints the environment's python on
# stdout (everything else goes to stderr):
#     guidellm_python="$(scripts/guidellm-env.sh)"; "${guidellm_python%/python}/guidellm" run ...
# Idempotent: when <cache>/guidellm-<version>/ exists, it only prints the path.
# Every package is pinned in scripts/guidellm-requirements.txt (read why there).
set -euo pipefail

requirements="$(cd "$(dirname "$0")" && pwd)/guidellm-requirements.txt"
version="$(sed -n 's/^guidellm==//p' "$requirements")"
[ -n "$version" ] || { echo "[guidellm-env] no guidellm==<version> line in $requirements" >&2; exit 1; }

cache="${MODELROLLOUT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelrollout}"
env_dir="$cache/guidellm-$version"
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
echo "[guidellm-env] building $env_dir (torch and its CUDA libraries are large: minutes)" >&2
"$python" -m venv "$staging"
"$staging/bin/python" -m pip install -q --no-deps -r "$requirements" >&2
"$staging/bin/python" -m pip check >&2
"$staging/bin/guidellm" --version >&2

# A virtualenv records its absolute path in its scripts' shebangs and in activate;
# point them at the final directory before the rename.
grep -rlF "$staging" "$staging/bin" "$staging/pyvenv.cfg" | while IFS= read -r script; do
  sed -i "s|$staging|$env_dir|g" "$script"
done
mv "$staging" "$env_dir"
echo "$env_dir/bin/python"
