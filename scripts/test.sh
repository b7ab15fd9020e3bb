#!/usr/bin/env bash
# The whole test suite on a fresh machine: install, lint, type-check, then every
# test. Extra arguments go to pytest. Bootstrap builds the local cluster's Go
# binaries once (cached outside the checkout); tools only some tests use
# (argocd-check) are built by the test session when those tests are selected.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/mypy
# pytest exits 5 when it collected no test: that is a failure here too.
# Two workers (pytest-xdist), each with a cluster of its own: the e2e tests mostly wait
# on model loads and timers, so two at once take less wall time on two cores. A file's
# tests stay on one worker, in order (`loadfile`): its module fixtures (a vLLM server)
# start once. `-n 0` (or any later -n) in the arguments overrides it.
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
