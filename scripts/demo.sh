#!/usr/bin/env bash
# The demo on a fresh machine: install, start the local cluster, run a rollout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/modelrollout dev cluster up
echo
echo "The local cluster is up. The rollout itself (operator, canary, rollback) lands with"
echo "issue #3; until then this demo stops here. Take the cluster down with:"
echo "  .venv/bin/modelrollout dev cluster down"
