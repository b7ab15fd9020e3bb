"""The real operator process, one per test namespace, the scenarios run against it, and
the harness that runs model pods and carries their traffic.

Traffic goes through Traefik, a real Gateway API implementation, to the pods' own
addresses. Two kinds of test still go through the project's proxy
(`modelrollout_dev.gateway`), named where they use it: the shadow test, as Traefik has
no RequestMirror, and the vLLM tests, which count answers by revision and vLLM's answers
do not say which pod gave them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client

from modelrollout.kube.api import HTTPROUTES, KubeApi
from modelrollout_dev import cluster, realnode
from modelrollout_dev.demo import make_tiny_models
from modelrollout_dev.gateway import Gateway
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.podnetwork import PodNetwork
from modelrollout_dev.podprocesses import PodProcesses
from modelrollout_dev.traefik import Traefik, service_route
from tests.conftest import ClusterUnderTest
from tests.support.rollouts import Rollouts
from tests.support.scenario import Scenario
from tests.support.serving_placement import (
    HarnessPlacement,
    RealNodePlacement,
    ServingPlacement,
)

# Fast ticks keep the tests short; production runs every 2 s.
TEST_TICK_INTERVAL = 0.5


@pytest.fixture
def operator_process(
    cluster_under_test: ClusterUnderTest,
    namespace: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        cluster_under_test.kubeconfig, namespace, tmp_path, tick_interval=TEST_TICK_INTERVAL
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"--- operator log ({process.log_path}) ---\n{process.log_tail(120)}")


@pytest.fixture
def rollouts(kube_api_client: client.ApiClient, namespace: str) -> Rollouts:
    return Rollouts(kube_api_client, namespace)


@pytest.fixture
def scenario(rollouts: Rollouts, operator_process: OperatorProcess) -> Iterator[Scenario]:
    """A Given/When/Then script against the operator, recorded by watches from the start."""
    with Scenario(rollouts, TEST_TICK_INTERVAL).recording() as recorded:
        yield recorded


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def pods(
    kube_api_client: client.ApiClient, namespace: str, pod_network: PodNetwork, tmp_path: Path
) -> Iterator[PodProcesses]:
    """The kubelet stand-in: runs each Ready pod's own command on the pod's own address."""
    running = PodProcesses(KubeApi(kube_api_client), namespace, pod_network, tmp_path / "pods")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def traffic(
    kube_api_client: client.ApiClient, namespace: str, pods: PodProcesses, traefik: Traefik
) -> tuple[PodProcesses, Traefik]:
    """The service router's traffic: Traefik in front of the rollout's Service `chat`,
    spreading requests over its ready endpoints as kube-proxy would."""
    route = service_route(namespace, traefik.gateway_name, "chat")
    KubeApi(kube_api_client).create(HTTPROUTES, namespace, route)
    return pods, traefik


@pytest.fixture(scope="session")
def real_node(cluster_under_test: ClusterUnderTest) -> realnode.RealNodeState:
    """The local cluster's real node (started on first use), with the project's images in it."""
    state = cluster.state_for_kubeconfig(cluster_under_test.kubeconfig)
    if state is None:
        pytest.fail("the real node joins only a local cluster (`modelrollout dev cluster up`)")
    try:
        node = cluster.start_real_node(state)
        for image in (realnode.SERVING_IMAGE, realnode.OPERATOR_IMAGE):
            realnode.ensure_image(node, image)
    except (cluster.ClusterError, realnode.RealNodeError) as error:
        pytest.fail(f"the real node cannot run here: {error} (`make images` builds the image)")
    return node


@pytest.fixture(params=["harness", pytest.param("real-node", marks=pytest.mark.realnode)])
def serving(
    request: pytest.FixtureRequest,
    kube_api_client: client.ApiClient,
    namespace: str,
    tiny_models: list[Path],
) -> ServingPlacement:
    """Where the test's serving and evaluation pods run: the harness, or the real node's
    kubelet from the project's image."""
    if request.param == "real-node":
        request.getfixturevalue("real_node")
        return RealNodePlacement(KubeApi(kube_api_client), namespace)
    pods: PodProcesses = request.getfixturevalue("pods")
    return HarnessPlacement(pods, tiny_models)


@pytest.fixture
def routed_serving(serving: ServingPlacement, traefik: Traefik) -> tuple[ServingPlacement, Traefik]:
    """The gatewayAPI router's traffic through Traefik to the `serving` placement's pods."""
    return serving, traefik


@pytest.fixture
def routed_traffic(pods: PodProcesses, traefik: Traefik) -> tuple[PodProcesses, Traefik]:
    """The gatewayAPI router's traffic: Traefik serves the routes the operator writes."""
    return pods, traefik


@contextmanager
def proxied(
    kube_api_client: client.ApiClient, namespace: str, pods: PodProcesses, **route: str
) -> Iterator[tuple[PodProcesses, Gateway]]:
    gateway = Gateway(KubeApi(kube_api_client), namespace, pods, **route).start()
    try:
        yield pods, gateway
    finally:
        gateway.stop()


@pytest.fixture
def mirrored_traffic(
    kube_api_client: client.ApiClient, namespace: str, pods: PodProcesses
) -> Iterator[tuple[PodProcesses, Gateway]]:
    """The project's proxy serving the rollout's HTTPRoute, RequestMirror included."""
    with proxied(kube_api_client, namespace, pods, httproute="chat") as pair:
        yield pair
