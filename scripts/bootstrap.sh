#!/usr/bin/env bash
# Install what the tests and the demo need on a fresh machine. Idempotent: a
# second run installs nothing. Go must already be on PATH (it builds the
# local cluster's binaries, cached by version outside the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing_packages=()
command -v prometheus >/dev/null 2>&1 || missing_packages+=(prometheus)
command -v lua5.4 >/dev/null 2>&1 || missing_packages+=(lua5.4)
# A real Alertmanager pushing to the operator's receiver (tests/e2e/test_alertmanager_push.py).
command -v prometheus-alertmanager >/dev/null 2>&1 || missing_packages+=(prometheus-alertmanager)
# `ip netns`: the local cluster's pod network (modelrollout_dev.podnetwork).
command -v ip >/dev/null 2>&1 || missing_packages+=(iproute2)
# The dashboard's browser tests (pytest -m browser): headless Chromium and its WebDriver.
command -v chromium >/dev/null 2>&1 || missing_packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing_packages+=(chromium-driver)
if [ "${#missing_packages[@]}" -gt 0 ]; then
  echo "[bootstrap] apt-get install ${missing_packages[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing_packages[@]}" >/dev/null
fi

command -v go >/dev/null 2>&1 || { echo "[bootstrap] Go is required on PATH" >&2; exit 1; }

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
# The three distributions of this checkout, editable: the controller with its
# `operator` and `dashboard` extras, the model server, the dev tooling (cluster, demo, test tools).
stamp=".venv/.installed-$(cat pyproject.toml serving/pyproject.toml dev/pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[bootstrap] pip install -e '.[operator,dashboard]' -e ./serving -e ./dev (torch is large: the first run takes a while)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[operator,dashboard]' -e ./serving -e ./dev
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# The local cluster's binaries (Kubernetes, etcd, kwok, helm, Prometheus; cached by
# version outside the checkout; cold: about 10 min of compiling) build while the two
# Python environments below install, which is mostly downloading and unpacking.
build_log="$(mktemp "${TMPDIR:-/tmp}/modelrollout-cluster-build.XXXXXX")"
.venv/bin/modelrollout dev cluster build >"$build_log" 2>&1 &
cluster_build=$!
trap 'kill "$cluster_build" 2>/dev/null || true' EXIT

# vLLM's CPU build, in an environment of its own (cached by version outside the
# checkout): the `vllm` tests and the demo's vLLM revisions run it. Cold: ~5 min, 6.2 GiB.
PYTHON="$python" scripts/vllm-env.sh >/dev/null

# GuideLLM, the load generator that bench/guidellm_compare.py runs beside modelserve's
# own: its own environment too (it needs transformers 5). Cold: ~4 min, 5.9 GiB.
PYTHON="$python" scripts/guidellm-env.sh >/dev/null

if ! wait "$cluster_build"; then
  cat "$build_log" >&2
  echo "[bootstrap] building the local cluster's binaries failed (log above)" >&2
  exit 1
fi
trap - EXIT
rm -f "$build_log"
