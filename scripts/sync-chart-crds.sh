#!/usr/bin/env bash
# Copy the CRDs (the source of truth, crds/) into the Helm chart.
# tests/unit/test_helm_chart.py fails when the copies drift.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f charts/modelrollout/files/crds/*.yaml
cp crds/*.yaml charts/modelrollout/files/crds/
