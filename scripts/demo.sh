#!/usr/bin/env bash
# The demo on a fresh machine: install, start the local cluster and Prometheus,
# run the operator, roll out a good model revision to promotion and a bad one
# (injected errors) to automatic rollback under real traffic. Pass
# --keep-cluster to leave the cluster up afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/modelrollout demo "$@"
