"""A real Alertmanager, fed by the local Prometheus, pushes a canary's alert to the operator.

A test rule fires on a gauge the test sets for the canary's revision; Prometheus
sends the alert to Alertmanager (Debian's prometheus-alertmanager), whose route
sends it to the operator's receiver with the bearer token. The rollout polls
its alert every 60 s: only the push can roll it back within the test's bound.
When the alert resolves, Alertmanager's resolved notification changes nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from modelrollout_dev.alertmanager import Alertmanager, start_alertmanager
from modelrollout_dev.prometheus import MetricsEndpoint, PrometheusHandle
from tests.e2e.test_alert_receiver import Receiver, receiver, rollback_on_alert
from tests.e2e.test_canary_operator import revision, start_stable
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest, with_model
from tests.support.status_watch import StatusWatch

pytestmark = pytest.mark.e2e

__all__ = ["receiver"]


@pytest.fixture
def alertmanager(
    receiver: Receiver, prometheus: PrometheusHandle, tmp_path: Path
) -> Iterator[Alertmanager]:
    """Alertmanager routing every alert to the operator's receiver, fed by the local Prometheus."""
    name = f"am-{uuid.uuid4().hex[:8]}"
    manager = start_alertmanager(
        tmp_path / "alertmanager", receiver.url, tmp_path / "alert-receiver-token"
    )
    try:
        prometheus.register_alertmanager(name, manager.address)
        yield manager
    finally:
        prometheus.unregister_alertmanager(name)
        manager.stop()


def test_alertmanager_pushes_a_firing_rule_and_the_canary_rolls_back_a_resolved_one_changes_nothing(
    rollouts: Rollouts,
    alertmanager: Alertmanager,
    prometheus: PrometheusHandle,
    kube_api_client: client.ApiClient,
    namespace: str,
) -> None:
    suffix = uuid.uuid4().hex[:6]
    alertname, metric = f"ModelHighErrorRate{suffix}", f"modelrollout_test_errors_{suffix}"
    analysis = rollback_on_alert(prometheus.url, alertname)
    steps = [{"setWeight": 50}, {"analysis": {"duration": "10m"}}]
    v1 = rollout_manifest("chat", "file:///models/v1", steps, analysis=analysis)
    start_stable(rollouts, v1)
    v2 = with_model(v1, "file:///models/v2")
    canary = revision(v2)

    errors = {"value": 0.0}
    gauge = MetricsEndpoint(lambda: f"{metric} {errors['value']}\n")
    target = f"errors-{suffix}"
    prometheus.register_target(
        target, gauge.address, {"namespace": namespace, "rollout": "chat", "revision": canary}
    )
    prometheus.write_rules(
        f"alert-{suffix}",
        f"groups:\n- name: {alertname}\n  rules:\n  - alert: {alertname}\n    expr: {metric} > 0\n",
    )
    try:
        wait_until(
            lambda: prometheus.query(f"{metric}"), 30, "Prometheus to scrape the test's gauge"
        )
        with StatusWatch(kube_api_client, namespace) as watch:
            rollouts.patch_spec("chat", {"model": v2["spec"]["model"]})
            watch.wait_for(
                lambda: any(
                    c["name"] == f"alert:{alertname}" and c.get("state") == "Passing"
                    for c in (watch.statuses["chat"] or [{}])[-1].get("checks", [])
                ),
                60,
                "the canary's first poll of its alert (not firing)",
            )
            assert watch.seen["chat"][-1] == ("Progressing", 1, 50)
            raised_at = time.monotonic()
            errors["value"] = 1.0
            watch.wait_for_phase("chat", "RolledBack", 60)

        states, seen_at = watch.seen["chat"], watch.seen_at["chat"]
        first_rollback = next(i for i, state in enumerate(states) if state[0] == "RollingBack")
        assert states[first_rollback - 1] == ("Progressing", 1, 50), watch.timeline(
            "chat", raised_at
        )
        # Scrape (1 s) + rule evaluation (1 s) + Alertmanager + receiver: well before the poll.
        assert seen_at[first_rollback] - raised_at < 15, watch.timeline("chat", raised_at)
        sent, failed = alertmanager.notifications()
        assert sent >= 1 and failed == 0
        status = rollouts.status("chat")
        assert status["weights"]["canary"] == 0
        assert alertname in status["history"][0]["reason"]
        print(f"gauge raised -> RollingBack seen: {seen_at[first_rollback] - raised_at:.2f}s")

        # Resolved: Alertmanager sends it (send_resolved), and nothing changes.
        errors["value"] = 0.0
        wait_until(
            lambda: alertmanager.notifications()[0] > sent, 30, "Alertmanager's resolved notice"
        )
        assert alertmanager.notifications()[1] == 0
        after = rollouts.status("chat")
        assert (after["phase"], after["weights"], after["history"]) == (
            status["phase"],
            status["weights"],
            status["history"],
        )
    finally:
        prometheus.remove_rules(f"alert-{suffix}")
        prometheus.unregister_target(target)
        gauge.server.shutdown()
