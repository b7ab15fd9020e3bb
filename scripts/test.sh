#!/usr/bin/env bash
# The whole test suite on a fresh machine: install, build the local cluster's
# binaries (cached), lint, type-check, then every test. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/modelrollout dev cluster build >/dev/null
.venv/bin/ruff check .
.venv/bin/mypy
# pytest exits 5 when it collected no test: that is a failure here too.
exec .venv/bin/python -m pytest "$@"
