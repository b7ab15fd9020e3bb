"""The real node: a kubelet on containerd beside the kwok nodes, running real containers.

Nothing stands in here: the kubelet, containerd, runc, the CNI bridge and
kube-proxy are the real ones (realnode.py), and the containers run the
project's serving image. The rollouts through Traefik onto this node's pods are
the `real-node` cases of tests/e2e/test_canary_traffic.py.
"""

from __future__ import annotations

import ipaddress
import subprocess
from typing import Any

import pytest
from kubernetes import client

from modelrollout.kube.api import NODES, PODS, KubeApi
from modelrollout_dev import realnode
from modelrollout_dev.nodes import GPU_RESOURCE, GPU_TAINT
from modelrollout_dev.podnetwork import PodNetwork
from tests.support.kube import wait_until
from tests.support.serving_placement import REAL_NODE_IMAGE, RealNodePlacement

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
    api = KubeApi(kube_api_client)
    placement = RealNodePlacement(api, namespace).placement()
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "whoami", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": placement["nodeSelector"],
            "tolerations": placement["tolerations"],
            "containers": [
                {"name": "whoami", "image": REAL_NODE_IMAGE, "command": ["python", "-c", WHOAMI]}
            ],
        },
    }
    api.create(PODS, namespace, pod)

    def finished() -> dict[str, Any] | None:
        found = api.get(PODS, namespace, "whoami")
        phase = (found or {}).get("status", {}).get("phase")
        return found if phase in {"Succeeded", "Failed"} else None

    done = wait_until(finished, 120, "the whoami pod to finish")
    (container,) = done["status"]["containerStatuses"]
    terminated = container["state"]["terminated"]
    assert done["status"]["phase"] == "Succeeded", terminated
    assert terminated["message"] == f"system:serviceaccount:{namespace}:default", terminated
    assert container["containerID"].startswith("containerd://")
    pod_ip = ipaddress.ip_address(done["status"]["podIP"])
    assert pod_ip in pod_network.real_node_subnet
    host_addresses = subprocess.run(
        ["ip", "-o", "addr"], capture_output=True, text=True, check=True
    ).stdout
    assert f" {pod_ip}/" not in host_addresses, "a pod address on a host interface"
