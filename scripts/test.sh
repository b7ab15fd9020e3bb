#!/usr/bin/env bash
# The whole test suite on a fresh machine: install, lint, type-check, then every
# test. Extra arguments go to pytest. The local cluster's Go binaries (cached)
# are built by the test session only when the selected tests need them, so
# `bash scripts/test.sh -m unit` builds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/mypy
# pytest exits 5 when it collected no test: that is a failure here too.
exec .venv/bin/python -m pytest "$@"
