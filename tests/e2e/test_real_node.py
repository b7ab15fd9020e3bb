"""The real node: a kubelet on containerd beside the kwok nodes, running real containers.

Nothing stands in here: the kubelet, containerd, runc, the CNI bridge and
kube-proxy are the real ones (realnode.py), and the containers run the
project's serving image. The rollouts through Traefik onto this node's pods are
the `real-node` cases of tests/e2e/test_canary_traffic.py.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelrollout.kube.api import LEASES, NODES, PODS, KubeApi
from modelrollout_dev import realnode
from modelrollout_dev.nodes import GPU_RESOURCE, GPU_TAINT
from modelrollout_dev.podnetwork import PodNetwork, on_host_interface
from tests.conftest import ClusterUnderTest
from tests.support.helm import CHART, helm, values_file
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest
from tests.support.serving_placement import RealNodePlacement

pytestmark = [pytest.mark.e2e, pytest.mark.localharness, pytest.mark.realnode]

# Asks the API server who this pod is, through the `kubernetes` Service, verifying the
# server's certificate against the cluster's CA as any in-cluster client does.
WHOAMI = """
import json, os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
request = urllib.request.Request(
    f"https://{host}:{port}/apis/authentication.k8s.io/v1/selfsubjectreviews",
    data=json.dumps(review).encode(),
    headers={"Authorization": "Bearer " + open(f"{sa}/token").read(),
             "Content-Type": "application/json"},
)
context = ssl.create_default_context(cafile=f"{sa}/ca.crt")
answer = json.load(urllib.request.urlopen(request, context=context, timeout=20))
open("/dev/termination-log", "w").write(answer["status"]["userInfo"]["username"])
"""


def run_to_completion(api: KubeApi, namespace: str, name: str, script: str) -> dict[str, Any]:
    """A pod on the real node running `python -c script` in the serving image, once
    finished: it writes its answer to its termination message."""
    placement = realnode.PLACEMENT
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": placement["nodeSelector"],
            "tolerations": placement["tolerations"],
            "containers": [
                {"name": name, "image": realnode.SERVING_IMAGE, "command": ["python", "-c", script]}
            ],
        },
    }
    api.create(PODS, namespace, pod)

    def finished() -> dict[str, Any] | None:
        found = api.get(PODS, namespace, name)
        phase = (found or {}).get("status", {}).get("phase")
        return found if phase in {"Succeeded", "Failed"} else None

    done: dict[str, Any] = wait_until(finished, 120, f"the {name} pod to finish")
    return done


def test_the_real_node_is_a_kubelet_on_containerd_with_gpus_and_the_gpu_taint(
    real_node: realnode.RealNodeState, kube_api_client: client.ApiClient
) -> None:
    node = KubeApi(kube_api_client).get(NODES, "", realnode.NODE_NAME)
    assert node is not None
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"].startswith("v1."), info
    assert info["containerRuntimeVersion"].startswith("containerd://"), info
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})
    assert node["status"]["allocatable"][GPU_RESOURCE] == str(realnode.NODE_GPUS)
    assert GPU_TAINT in node["spec"]["taints"]
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")


def test_a_pod_reaches_the_api_server_through_the_kubernetes_service_as_its_account(
    real_node: realnode.RealNodeState,
    kube_api_client: client.ApiClient,
    namespace: str,
    pod_network: PodNetwork,
) -> None:
    """kube-proxy's rules in the pod network carry the Service's address to the API server:
    the in-cluster path the operator's own pod takes."""
    done = run_to_completion(KubeApi(kube_api_client), namespace, "whoami", WHOAMI)
    (container,) = done["status"]["containerStatuses"]
    terminated = container["state"]["terminated"]
    assert done["status"]["phase"] == "Succeeded", terminated
    assert terminated["message"] == f"system:serviceaccount:{namespace}:default", terminated
    assert container["containerID"].startswith("containerd://")
    pod_ip = ipaddress.ip_address(done["status"]["podIP"])
    assert pod_ip in pod_network.real_node_subnet
    assert not on_host_interface(str(pod_ip)), "a pod address on a host interface"


# Resolves names as any pod's libc does, from the resolv.conf the kubelet wrote.
RESOLVE = """
import json, socket
names = ["kubernetes.default.svc.cluster.local", "kubernetes.default", "models"]
answer = {name: socket.gethostbyname(name) for name in names}
answer["resolv.conf"] = open("/etc/resolv.conf").read()
open("/dev/termination-log", "w").write(json.dumps(answer))
"""


def test_pods_find_services_by_name_through_the_cluster_dns(
    real_node: realnode.RealNodeState, kube_api_client: client.ApiClient, namespace: str
) -> None:
    """CoreDNS behind kube-system/kube-dns answers for the cluster's Services, by full name
    and by the short name the pod's search path completes (as an evaluation Job asks)."""
    api = KubeApi(kube_api_client)
    core = client.CoreV1Api(kube_api_client)
    models = core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="models"),
            spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=8000)]),
        ),
    )
    done = run_to_completion(api, namespace, "resolve", RESOLVE)
    (container,) = done["status"]["containerStatuses"]
    terminated = container["state"]["terminated"]
    assert done["status"]["phase"] == "Succeeded", terminated
    answer = json.loads(terminated["message"])
    assert answer["kubernetes.default.svc.cluster.local"] == "10.96.0.1", answer
    assert answer["kubernetes.default"] == "10.96.0.1", answer
    assert answer["models"] == models.spec.cluster_ip, answer
    assert f"nameserver {realnode.CLUSTER_DNS_IP}" in answer["resolv.conf"], answer
    assert f"search {namespace}.svc.cluster.local" in answer["resolv.conf"], answer


def test_the_chart_runs_the_operator_as_a_pod_on_the_real_node_and_it_completes_a_rollout(
    real_node: realnode.RealNodeState,
    cluster_under_test: ClusterUnderTest,
    kube_api_client: client.ApiClient,
    namespace: str,
    rollouts: Rollouts,
    tmp_path: Path,
) -> None:
    """`helm install` with the operator image and a placement on the real node: the
    operator runs in its container, as its ServiceAccount, and promotes a canary whose
    pods the same node runs."""
    api = KubeApi(kube_api_client)
    serving = RealNodePlacement(api, namespace)
    repository, tag = realnode.OPERATOR_IMAGE.rsplit(":", 1)
    release = f"mr-{uuid.uuid4().hex[:6]}"
    values = {
        "watchNamespaces": [namespace],
        "replicaCount": 1,
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "nodeSelector": serving.placement()["nodeSelector"],
        "tolerations": serving.placement()["tolerations"],
    }
    kubeconfig = cluster_under_test.kubeconfig
    installed = helm(
        "install", release, str(CHART), "--namespace", namespace, "--take-ownership",
        "--wait", "--timeout", "180s", "--values", str(values_file(values, tmp_path)),
        kubeconfig=kubeconfig,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    try:
        (operator_pod,) = api.list(PODS, namespace, f"app.kubernetes.io/instance={release}")
        assert operator_pod["spec"]["nodeName"] == realnode.NODE_NAME
        (container,) = operator_pod["status"]["containerStatuses"]
        assert container["ready"] and container["containerID"].startswith("containerd://")

        steps = [{"setWeight": 50}, {"pause": {"duration": "2s"}}]
        manifest = rollout_manifest(
            "chat", serving.model_uri(0), steps, placement=serving.placement()
        )
        rollouts.create(manifest)
        stable = rollouts.wait_phase("chat", {"Succeeded"}, 180)["stableRevision"]
        serving.wait_for_servers(stable)
        rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": serving.model_uri(1)}})
        status = rollouts.wait_phase("chat", {"Succeeded", "RolledBack"}, 240)
        lease = api.get(LEASES, namespace, "modelrollout-operator")
    finally:
        uninstalled = helm("uninstall", release, "--namespace", namespace, kubeconfig=kubeconfig)
    assert status["phase"] == "Succeeded", status
    assert status["history"][0]["outcome"] == "Promoted", status
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == operator_pod["metadata"]["name"]
    assert uninstalled.returncode == 0, uninstalled.stderr
