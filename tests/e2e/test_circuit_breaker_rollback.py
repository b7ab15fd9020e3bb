"""A canary whose engine fails trips its circuit breaker and is rolled back by its checks.

Real traffic through Traefik to real `modelserve serve` processes (run by the
kubelet stand-in, which also runs the pods' readiness and liveness probes), real
Prometheus and the real operator, as in test_canary_traffic.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from modelrollout_dev.load import BackgroundLoad, wait_until_served
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.podprocesses import PodProcesses
from modelrollout_dev.prometheus import PrometheusHandle
from modelrollout_dev.traefik import Traefik
from tests.e2e.test_canary_traffic import analysis, wait_for_servers
from tests.support.rollouts import Rollouts, rollout_manifest

pytestmark = [pytest.mark.e2e, pytest.mark.localharness]

ENGINE_FAULTS = [
    "--fault-injection",
    "--fault-engine-error-rate=1",
    "--breaker-failures=3",
    "--breaker-cooldown=120",
]


def test_a_canary_that_trips_its_breaker_is_rolled_back_and_its_pods_are_not_restarted(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    traffic: tuple[PodProcesses, Traefik],
    tiny_models: list[Path],
    prometheus: PrometheusHandle,
    kube_api_client: client.ApiClient,
    tmp_path: Path,
) -> None:
    pods, gateway = traffic
    steps = [{"setWeight": 50}, {"analysis": {"duration": "30s"}}]
    checks = analysis(prometheus)
    # Held long enough for the readiness probe (every 5 s) to see the open breaker
    # before the rollback; the window keeps the canary's errors in view meanwhile.
    checks["checks"][0].update(window="30s", **{"for": "8s"})
    v1 = rollout_manifest(
        "chat",
        f"file://{tiny_models[0]}",
        steps,
        analysis=checks,
        placement=pods.placement(),
    )
    rollouts.create(v1)
    stable = rollouts.wait_phase("chat", {"Succeeded"}, 60)["stableRevision"]
    wait_for_servers(pods, stable)
    wait_until_served(gateway.url, "chat")

    with BackgroundLoad(gateway.url, "chat") as load:
        rollouts.patch_spec("chat", {"runtime": {**v1["spec"]["runtime"], "args": ENGINE_FAULTS}})
        rolled_back = rollouts.wait_phase("chat", {"RolledBack", "Succeeded"}, 150)
    assert rolled_back["phase"] == "RolledBack", rolled_back
    assert rolled_back["stableRevision"] == stable
    assert rolled_back["weights"]["canary"] == 0
    assert "error-rate" in rolled_back["history"][0]["reason"]
    bad = rolled_back["history"][0]["revision"]
    # The engine failed requests (500), then the open breaker refused them at once (503).
    assert load.count(bad, "500") > 0, load.snapshot()
    assert load.count(bad, "503") > 0, load.snapshot()
    assert load.count(stable, "200") > 0, load.snapshot()

    canary_logs = [p.read_text() for p in (tmp_path / "pods").glob(f"*{bad}*.log")]
    assert canary_logs, sorted(p.name for p in (tmp_path / "pods").iterdir())
    assert any("circuit breaker OPEN" in log for log in canary_logs)
    events = client.CoreV1Api(kube_api_client).list_namespaced_event(
        rollouts.namespace, field_selector="reason=Unhealthy"
    )
    messages = [e.message for e in events.items if bad in e.involved_object.name]
    # The open breaker made the canary unready (out of the endpoints) but never failed
    # liveness: the kubelet had no reason to restart an engine that may recover.
    assert any("Readiness probe failed" in m and "503" in m for m in messages), messages
    assert not any("Liveness probe failed" in m for m in messages), messages
