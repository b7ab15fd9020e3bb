#!/usr/bin/env bash
# End to end on kind, for hosts with Docker (CI: .github/workflows/e2e-kind.yml).
# Builds the images, loads them into a kind cluster whose worker advertises
# fake GPUs, installs the chart with `helm install`, then:
#   1. the example rollout, applied with kubectl, is promoted by the chart's
#      operator, and an aborted one is rolled back (asserted here);
#   2. the same cluster and e2e test modules as the local cluster run against
#      kind, only with another kubeconfig (MODELROLLOUT_KUBECONFIG).
# Needs: docker, kind, kubectl, helm, Python 3.11. KEEP_CLUSTER=1 leaves it up.
set -euo pipefail
cd "$(dirname "$0")/.."

cluster="${KIND_CLUSTER:-modelrollout-e2e}"
demo_namespace=modelrollout-demo
kubeconfig="$(mktemp)"
export KUBECONFIG="$kubeconfig"

cleanup() {
  if [ -z "${KEEP_CLUSTER:-}" ]; then kind delete cluster --name "$cluster" || true; fi
  if [ -n "${prometheus_pid:-}" ]; then kill "$prometheus_pid" 2>/dev/null || true; fi
  rm -f "$kubeconfig"
}
trap cleanup EXIT

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "e2e-kind: '$tool' is required" >&2; exit 1; }
done
bash scripts/bootstrap.sh

echo "[e2e-kind] images"
docker build -q -f docker/operator.Dockerfile -t modelrollout/operator:dev .
docker build -q -f docker/serving.Dockerfile -t modelrollout/modelserve:dev .
docker build -q -f docker/serving-e2e.Dockerfile -t modelrollout/modelserve:e2e .

echo "[e2e-kind] cluster"
cat <<KIND | kind create cluster --name "$cluster" --kubeconfig "$kubeconfig" --wait 120s --config -
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
    labels: {nvidia.com/gpu.present: "true"}
KIND
kind load docker-image --name "$cluster" \
  modelrollout/operator:dev modelrollout/modelserve:dev modelrollout/modelserve:e2e
# No GPU device plugin on kind: advertise 4 fake GPUs on the worker, so the
# scheduler accounts for nvidia.com/gpu exactly as on a GPU node.
worker="$(kubectl get nodes -l nvidia.com/gpu.present=true -o name | head -1)"
kubectl patch "$worker" --subresource=status --type=merge \
  -p '{"status":{"capacity":{"nvidia.com/gpu":"4"},"allocatable":{"nvidia.com/gpu":"4"}}}'
kubectl apply --server-side -f "$(.venv/bin/python -c \
  'from modelrollout_dev import toolchain; print(toolchain.gateway_api_crd_files()[0].parent.parent)')/experimental/gateway.networking.k8s.io_httproutes.yaml"

echo "[e2e-kind] helm install"
kubectl create namespace "$demo_namespace"
helm install modelrollout charts/modelrollout --namespace modelrollout-system --create-namespace \
  --set image.repository=modelrollout/operator --set image.tag=dev --set image.pullPolicy=Never \
  --set "watchNamespaces={$demo_namespace}" --wait --timeout 5m
kubectl -n modelrollout-system get pods,lease

echo "[e2e-kind] the example rollout: promoted, then an aborted revision rolled back"
.venv/bin/python - "$demo_namespace" <<'PY'
import copy, subprocess, sys, time, yaml
namespace = sys.argv[1]
with open("examples/canary-service.yaml") as f:
    rollout = yaml.safe_load(f)
rollout["metadata"]["namespace"] = namespace
spec = rollout["spec"]
spec["model"]["uri"] = "file:///models/v1"
spec["runtime"].update(engine="torch", image="modelrollout/modelserve:e2e", args=[], replicas=2)
spec["strategy"]["canary"]["steps"] = [{"setWeight": 50}, {"pause": {"duration": "10s"}}]
spec.pop("analysis")

def apply(body):
    subprocess.run(["kubectl", "apply", "-f", "-"], input=yaml.safe_dump(body), text=True, check=True)

def wait(phase, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["kubectl", "-n", namespace, "get", "mro", "chat", "-o", "yaml"],
                             capture_output=True, text=True, check=True).stdout
        body = yaml.safe_load(out)
        status = body.get("status") or {}
        if status.get("observedGeneration") == body["metadata"]["generation"] and status.get("phase") == phase:
            return status
        time.sleep(2)
    raise SystemExit(f"e2e-kind: chat never reached {phase}: {status}")

apply(rollout); wait("Succeeded")
v2 = copy.deepcopy(rollout); v2["spec"]["model"]["uri"] = "file:///models/v2"
apply(v2); status = wait("Succeeded")
assert status["history"][0]["outcome"] == "Promoted", status
v3 = copy.deepcopy(v2); v3["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 50}, {"pause": {}}]
v3["spec"]["model"]["uri"] = "file:///models/v3"
apply(v3); wait("Paused")
subprocess.run([".venv/bin/kubectl-modelrollout", "-n", namespace, "abort", "chat"], check=True)
status = wait("RolledBack")
assert status["weights"]["canary"] == 0, status
print("e2e-kind: promoted and rolled back")
PY

echo "[e2e-kind] the cluster and e2e test modules against kind"
# The tests register scrape targets and rules with a Prometheus on this host.
prometheus_dir="$(mktemp -d)"
eval "$(.venv/bin/modelrollout dev prometheus "$prometheus_dir")"
export MODELROLLOUT_KUBECONFIG="$kubeconfig" MODELROLLOUT_TEST_IMAGE=modelrollout/modelserve:e2e
# localharness: tests that need this machine's stand-ins for pods and gateway.
.venv/bin/python -m pytest -m "(cluster or e2e) and not localharness" tests/cluster tests/e2e
