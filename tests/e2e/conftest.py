"""The real operator process, one per test namespace, and the scenarios run against it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from modelrollout_dev.operator_process import OperatorProcess
from tests.conftest import ClusterUnderTest
from tests.support.rollouts import Rollouts
from tests.support.scenario import Scenario

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
