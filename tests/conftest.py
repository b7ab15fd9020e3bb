"""Fixtures shared by every suite.

Cluster tests run against a real kube-apiserver and a real Prometheus: by
default a local cluster this session brings up (`modelrollout dev cluster`,
named `pytest-<pid>`) and takes down at the end; or, when `MODELROLLOUT_KUBECONFIG`
is set (`eval "$(modelrollout dev cluster env)"` sets it), that cluster and
the Prometheus named by `MODELROLLOUT_PROMETHEUS_URL`.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modelrollout_dev import cluster, toolchain
from modelrollout_dev.podnetwork import PodNetwork
from modelrollout_dev.prometheus import PrometheusHandle
from modelrollout_dev.traefik import Traefik
from tests.support.kube import apply_crd, create_namespace, project_crds
from tests.support.rollouts import TEST_GATEWAY

# The API contract's checks run from test modules of two suites: show their failures in full.
pytest.register_assert_rewrite("tests.support.kube_contract")

# One cluster per test session: two sessions on one machine never share state.
TEST_CLUSTER_NAME = f"pytest-{os.getpid()}"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build (or find cached) the Go binaries the selected tests need, before any test runs.

    Here rather than in a fixture so that a first build (minutes) counts against
    no test's timeout; a selection without cluster, chart or argocd tests builds nothing.
    """
    items = session.items
    if any("cluster_under_test" in item.fixturenames for item in items):
        toolchain.ensure_binaries()
    elif any(item.get_closest_marker("chart") for item in items):
        toolchain.ensure_helm()
    if any(item.get_closest_marker("argocd") for item in items):
        toolchain.ensure_argocd_check()
    if any(item.get_closest_marker("realnode") for item in items):
        toolchain.ensure_node_binaries()
        toolchain.ensure_coredns()


# The first real-node test starts the node and copies the images into it: 7.6 GB for the
# serving image took from 3 to 10 minutes here, with the machine's disk shared.
REAL_NODE_TIMEOUT_S = 2400


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("realnode") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(REAL_NODE_TIMEOUT_S))


# Markers out of the default selection (pyproject's addopts): what they need, how to run them.
OPT_IN_MARKERS = {
    "realnode": "the real node (`make images`, Debian's containerd): "
    "`bash scripts/test.sh -m realnode tests/e2e`",
    "images": "podman or docker, half an hour cold: `bash scripts/test.sh -m images tests/images`",
}
_deselected_by_marker: dict[str, int] = {}


def pytest_deselected(items: list[pytest.Item]) -> None:
    for item in items:
        for marker in OPT_IN_MARKERS:
            if item.get_closest_marker(marker):
                _deselected_by_marker[marker] = _deselected_by_marker.get(marker, 0) + 1
                break


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker hands its counts to the controller, which prints the summary."""
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:
        worker_output["deselected_by_marker"] = dict(_deselected_by_marker)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """Every worker collects the whole selection: its counts are the session's."""
    counts = getattr(node, "workeroutput", {}).get("deselected_by_marker", {})
    for marker, count in counts.items():
        _deselected_by_marker[marker] = max(_deselected_by_marker.get(marker, 0), count)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which tests this run left out and why, so that a run on the harness alone never
    reads as one on the real node."""
    for marker, count in _deselected_by_marker.items():
        terminalreporter.write_line(
            f"not run: {count} test(s) marked {marker}, which need {OPT_IN_MARKERS[marker]}"
        )


@dataclass(frozen=True)
class ClusterUnderTest:
    kubeconfig: str
    prometheus: PrometheusHandle
    # Where the harness gives pods their addresses: none on a cluster with real nodes.
    pod_network: PodNetwork | None


@pytest.fixture(scope="session")
def cluster_under_test() -> Iterator[ClusterUnderTest]:
    kubeconfig = os.environ.get("MODELROLLOUT_KUBECONFIG")
    if kubeconfig:
        missing = [
            name
            for name in (
                "MODELROLLOUT_PROMETHEUS_URL",
                "MODELROLLOUT_PROMETHEUS_SD_DIR",
                "MODELROLLOUT_PROMETHEUS_RULES_DIR",
            )
            if not os.environ.get(name)
        ]
        if missing:
            pytest.fail(f"MODELROLLOUT_KUBECONFIG is set but {', '.join(missing)} is not")
        yield ClusterUnderTest(
            kubeconfig,
            PrometheusHandle(
                os.environ["MODELROLLOUT_PROMETHEUS_URL"],
                Path(os.environ["MODELROLLOUT_PROMETHEUS_SD_DIR"]),
                Path(os.environ["MODELROLLOUT_PROMETHEUS_RULES_DIR"]),
            ),
            PodNetwork.from_env(),
        )
        return
    state = cluster.up(TEST_CLUSTER_NAME)
    try:
        yield ClusterUnderTest(state.kubeconfig, state.prometheus, state.pod_network)
    finally:
        if not os.environ.get("MODELROLLOUT_KEEP_CLUSTER"):
            cluster.down(TEST_CLUSTER_NAME)


@pytest.fixture(scope="session")
def kube_api_client(cluster_under_test: ClusterUnderTest) -> client.ApiClient:
    """An API client for the cluster under test, with the project's CRDs installed."""
    api_client = config.new_client_from_config(config_file=cluster_under_test.kubeconfig)
    for manifest in project_crds():
        apply_crd(api_client, manifest)
    return api_client


@pytest.fixture(scope="session")
def prometheus(cluster_under_test: ClusterUnderTest) -> PrometheusHandle:
    return cluster_under_test.prometheus


@pytest.fixture(scope="session")
def pod_network(cluster_under_test: ClusterUnderTest) -> PodNetwork:
    """The local cluster's pod network, which the harness (the kubelet stand-in) needs."""
    if cluster_under_test.pod_network is None:
        pytest.fail(
            "the harness runs pods only on the local cluster: MODELROLLOUT_POD_NETNS and "
            "MODELROLLOUT_POD_CIDR (from `modelrollout-dev cluster env`) are not set"
        )
    return cluster_under_test.pod_network


@pytest.fixture
def namespace(kube_api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    stem = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{stem}-{uuid.uuid4().hex[:6]}"
    create_namespace(kube_api_client, name)
    core = client.CoreV1Api(kube_api_client)
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as error:
            if error.status != 404:
                raise


@pytest.fixture
def traefik(
    cluster_under_test: ClusterUnderTest, namespace: str, tmp_path: Path
) -> Iterator[Traefik]:
    """Traefik, the cluster's Gateway API implementation, with a Gateway in the test's
    namespace; it watches only that namespace, so no other test's routes reach it."""
    gateway = Traefik(
        cluster_under_test.kubeconfig,
        tmp_path,
        namespace,
        gateway_name=TEST_GATEWAY,
        namespaces=(namespace,),
    )
    with gateway:
        yield gateway
