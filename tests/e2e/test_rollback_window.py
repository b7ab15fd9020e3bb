"""A canary's rollback window through the real gateway, with real model servers.

After a promotion the previous stable keeps one of its two pods, Ready and
without traffic (`rollbackWindow: {duration: 10m, replicaPercent: 50}`);
`kubectl modelrollout rollback`, run as a user runs it, moves every request
back to it: one annotation, one HTTPRoute write by the operator, then Traefik.
The test measures the time from the command to the last request the promoted
revision answered (every later one the kept revision's) and prints it; that
figure is in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client

from modelrollout.kube.api import HTTPROUTES, KubeApi
from modelrollout_dev.load import BackgroundLoad, wait_until_served
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.traefik import Traefik
from tests.conftest import ClusterUnderTest
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest
from tests.support.serving_placement import ServingPlacement

pytestmark = [pytest.mark.e2e, pytest.mark.localharness]

PLUGIN = str(Path(sys.executable).parent / "kubectl-modelrollout")


def all_on(load: BackgroundLoad, revision: str, since: float, count: int) -> bool:
    """Whether the last `count` answers to requests sent after `since` are all `revision`'s."""
    recent = load.sent_since(since)[-count:]
    return len(recent) == count and all(answer[1] == revision for answer in recent)


def test_rollback_in_the_window_moves_every_request_back_without_a_model_load(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    routed_serving: tuple[ServingPlacement, Traefik],
    cluster_under_test: ClusterUnderTest,
    kube_api_client: client.ApiClient,
) -> None:
    serving, gateway = routed_serving
    steps = [{"setWeight": 50}, {"pause": {"duration": "5s"}}]
    manifest = rollout_manifest(
        "chat", serving.model_uri(0), steps, router="gatewayAPI", placement=serving.placement()
    )
    manifest["spec"]["strategy"]["canary"]["rollbackWindow"] = {
        "duration": "10m",
        "replicaPercent": 50,
    }
    rollouts.create(manifest)
    old = rollouts.wait_phase("chat", {"Succeeded"}, 180)["stableRevision"]
    serving.wait_for_servers(old)
    # Traefik programs the route's first backends in its own time after the pods are Ready:
    # the requests counted start once it answers, as in the other tests through it.
    wait_until_served(gateway.url, "chat")

    with BackgroundLoad(gateway.url, "chat") as load:
        wait_until(lambda: load.count(old, "200") >= 10, 60, "the first revision served")
        rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": serving.model_uri(1)}})
        promoted = rollouts.wait_phase("chat", {"Succeeded", "RolledBack"}, 150)
        assert promoted["phase"] == "Succeeded", promoted
        new = promoted["stableRevision"]
        assert (promoted["previousRevision"], promoted["previousModel"]) == (
            old,
            serving.model_uri(0),
        )
        assert promoted["previousScaleDownAt"]
        settled = time.monotonic()
        wait_until(lambda: all_on(load, new, settled, 30), 60, "all traffic on the promoted one")
        # One of the old revision's two pods kept, Ready, taking no request.
        sizes = {rev: d.spec.replicas for rev, d in rollouts.deployments("chat").items()}
        assert sizes == {old: 1, new: 2}, sizes
        wait_until(
            lambda: sum(1 for e in serving.endpoints().values() if e.revision == old) == 1,
            60,
            "the old revision down to its kept pod",
        )
        kept = {name for name, e in serving.endpoints().items() if e.revision == old and e.healthy}
        assert len(kept) == 1, serving.endpoints()

        env = {**os.environ, "KUBECONFIG": cluster_under_test.kubeconfig}
        command = [PLUGIN, "-n", rollouts.namespace, "rollback", "chat"]
        commanded = time.monotonic()
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        written = time.monotonic()
        assert result.returncode == 0, result.stderr
        assert f"rolled back to the revision kept warm {old}" in result.stdout

        wait_until(lambda: all_on(load, old, commanded, 40), 60, "all traffic back on the old one")
        rolled_back = rollouts.wait_phase("chat", {"RolledBack"}, 60)
        answered = load.snapshot()
        since_command = load.sent_since(commanded)

    assert {status for _, status in answered} == {"200"}, answered
    last_new = max((i for i, a in enumerate(since_command) if a[1] == new), default=None)
    after = since_command[last_new + 1 :] if last_new is not None else since_command
    assert after and {revision for _, revision, _ in after} == {old}, since_command
    to_old = since_command[last_new][0] - commanded if last_new is not None else 0.0
    print(
        f"rollback window: command to 100% on the kept revision {to_old:.2f} s "
        f"(the plugin process itself {written - commanded:.2f} s); "
        f"{len(since_command)} requests since the command, {sum(answered.values())} in all, "
        "0 failed"
    )

    assert (rolled_back["stableRevision"], rolled_back["canaryRevision"]) == (old, new)
    assert rolled_back["weights"]["canary"] == 0
    assert rolled_back["history"][0]["revision"] == new
    assert rolled_back["history"][0]["outcome"] == "RolledBack"
    assert "within the rollback window" in rolled_back["history"][0]["reason"]
    assert "previousRevision" not in rolled_back
    route = KubeApi(kube_api_client).get(HTTPROUTES, rollouts.namespace, "chat")
    assert route is not None
    weights = {ref["name"]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}
    assert weights == {f"chat-{old}": 100, f"chat-{new}": 0}, weights
    # The pod that took the traffic back is the one kept warm: no new pod, no model load.
    assert kept <= {name for name, e in serving.endpoints().items() if e.revision == old}

    # Outside the window (there is none now), the command says so and changes nothing.
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "nothing to roll back" in refused.stderr, refused.stderr
