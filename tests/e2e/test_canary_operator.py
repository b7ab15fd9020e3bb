"""The operator against a real API server and a real Prometheus, without model traffic.

Each test runs the real operator process (`kopf run -m modelrollout.main`) on
its own namespace. Pods are scheduled by the real scheduler onto fake GPU
nodes (kwok marks them Ready; they run no containers): these tests check the
control loop, routes, analysis against Prometheus rules, restarts and bad
input. Rollouts driven by real traffic are in test_canary_traffic.py.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import random
import signal
import socket
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from modelrollout.engine.revision import revision_of
from modelrollout.models import parse_spec
from modelrollout_dev.cluster import start_prometheus
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.prometheus import PrometheusHandle
from tests.conftest import ClusterUnderTest
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, StatusRecorder, rollout_manifest, with_model
from tests.support.scenario import Scenario, role, route_backends
from tests.support.status_watch import StatusWatch, steps_walked

pytestmark = pytest.mark.e2e

STEPS = [
    {"setWeight": 25},
    {"pause": {"duration": "1s"}},
    {"setWeight": 50},
    {"pause": {"duration": "1s"}},
]


def revision(manifest: dict[str, Any]) -> str:
    return revision_of(parse_spec(manifest["spec"]))


def start_stable(rollouts: Rollouts, manifest: dict[str, Any]) -> str:
    rollouts.create(manifest)
    status = rollouts.wait_phase(manifest["metadata"]["name"], {"Succeeded"}, 60)
    assert status["stableRevision"] == revision(manifest)
    return str(status["stableRevision"])


def step_sequence(
    seen: list[tuple[str, int | None, int]], steps: list[dict[str, Any]] | None = None
) -> list[int]:
    """The steps walked, a weight step done in the write that starts the next one included."""
    return steps_walked(seen, steps)


@pytest.mark.parametrize("router", ["service", "gatewayAPI"])
def test_healthy_canary_walks_every_step_and_promotes_without_restarting_pods(
    scenario: Scenario, router: str
) -> None:
    scenario.given().rollout(rollout_manifest("chat", "file:///models/v1", STEPS, router=router))
    old = scenario.stable_revision

    then = scenario.when().update_model("file:///models/v2").then()
    status = then.expect_phase("Succeeded", within=90).status
    new = scenario.new_revision
    assert status["stableRevision"] == new
    assert status.get("canaryRevision") is None
    assert status["weights"] == {"stable": 100, "canary": 0, "mirror": 0}
    assert status["history"][0]["outcome"] == "Promoted"
    assert status["history"][0]["revision"] == new
    # Every state the API server wrote on the way, from the watch.
    states = scenario.states()
    assert step_sequence(states, STEPS) == [0, 1, 2, 3], states
    assert max(weight for _, _, weight in states) == 100  # promotion moves all traffic
    assert [w for phase, _, w in states if phase == "Progressing"] == sorted(
        w for phase, _, w in states if phase == "Progressing"
    ), "the canary weight only ever rises while progressing"

    # The old revision goes; the new one keeps every pod it started, relabelled stable.
    deployments = then.expect_deployments({new}, within=30).deployments
    assert deployments[new]["spec"]["replicas"] == 2, f"old revision {old} gone"
    assert role(deployments[new]) == "stable"
    pods = then.expect_pods(
        new, "2, all stable", lambda pods: [role(p) for p in pods] == ["stable"] * 2, within=30
    ).pods
    first_canary_pod = scenario.pods_created(new)[0]["metadata"]["uid"]
    assert first_canary_pod in {p["metadata"]["uid"] for p in pods}
    assert scenario.pods_deleted(new) == [], "a pod of the new revision was deleted"

    if router == "gatewayAPI":
        # Converged in the tick that deleted the old revision, just after the deletion.
        route = then.expect_route("chat", [(f"chat-{new}", 100)], within=10).route
        assert (
            route["spec"]["parentRefs"] == [{"name": "inference-gw"}]
            or route["spec"]["parentRefs"][0]["name"] == "inference-gw"
        )
    else:
        service = scenario.rollouts.core.read_namespaced_service(
            "chat", scenario.rollouts.namespace
        )
        # The Service selects the serving pods: all of the promoted revision's.
        assert service.spec.selector == {
            "modelrollout.dev/rollout": "chat",
            "modelrollout.dev/serving": "true",
        }
        serving = then.expect_pods(
            new,
            "2, all serving",
            lambda pods: (
                [p["metadata"]["labels"].get("modelrollout.dev/serving") for p in pods]
                == ["true"] * 2
            ),
            within=30,
        ).pods
        assert {p["metadata"]["uid"] for p in serving} == {p["metadata"]["uid"] for p in pods}


def test_canary_the_scheduler_cannot_place_reports_why_and_rolls_back_at_the_deadline(
    scenario: Scenario,
) -> None:
    v1 = rollout_manifest("big", "file:///models/v1", STEPS, progress_deadline="8s")
    scenario.given().rollout(v1).ready()
    stable = scenario.stable_revision

    # GPUs fit (capacity planning lets it start); memory fits no node (256Gi each).
    runtime = copy.deepcopy(v1["spec"]["runtime"])
    runtime["resources"]["limits"]["memory"] = "512Gi"
    then = scenario.when().update_runtime(**runtime).then()
    assert (
        "Insufficient memory"
        in then.expect_condition("Unschedulable", within=30).condition["message"]
    )

    status = then.expect_phase("RolledBack", within=60).status
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "ProgressDeadlineExceeded"
    assert status["stableRevision"] == stable
    assert status["weights"]["canary"] == 0
    assert status["history"][0]["outcome"] == "RolledBack"
    # Stable never lost a replica: every version of its Deployment since the change.
    stable_seen = [at[stable] for at in scenario.replicas_timeline() if stable in at]
    assert stable_seen and set(stable_seen) == {(2, 2)}, stable_seen


def alert_rules(alertname: str, labels: dict[str, str]) -> str:
    rendered = ", ".join(f'{key}: "{value}"' for key, value in labels.items())
    return (
        "groups:\n"
        f"  - name: {alertname}\n"
        "    rules:\n"
        f"      - alert: {alertname}\n"
        "        expr: vector(1)\n"
        f"        labels: {{{rendered}}}\n"
    )


@pytest.mark.parametrize("alert_for", ["canary", "other-revision"])
def test_a_firing_alert_for_the_canary_rolls_it_back_and_one_for_another_revision_does_not(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    prometheus: PrometheusHandle,
    namespace: str,
    alert_for: str,
) -> None:
    alertname = f"ModelHighErrorRate{uuid.uuid4().hex[:6]}"
    analysis = {
        "prometheus": {"address": prometheus.url, "timeout": "2s"},
        "interval": "1s",
        "alerts": [
            {
                "alertname": alertname,
                "matchLabels": {"namespace": "{{namespace}}", "revision": "{{canary.revision}}"},
                "action": "rollback",
            }
        ],
    }
    steps = [{"setWeight": 50}, {"analysis": {"duration": "4s"}}]
    v1 = rollout_manifest("chat", "file:///models/v1", steps, analysis=analysis)
    start_stable(rollouts, v1)
    v2 = with_model(v1, "file:///models/v2")
    canary = revision(v2)
    firing_revision = canary if alert_for == "canary" else "0000000000"
    prometheus.write_rules(
        alertname, alert_rules(alertname, {"namespace": namespace, "revision": firing_revision})
    )
    try:
        wait_until(
            lambda: prometheus.query(f'ALERTS{{alertname="{alertname}",alertstate="firing"}}'),
            30,
            f"alert {alertname} to fire in Prometheus",
        )
        rollouts.patch_spec("chat", {"model": v2["spec"]["model"]})
        status = rollouts.wait_phase("chat", {"RolledBack", "Succeeded"}, 60)
    finally:
        prometheus.remove_rules(alertname)

    if alert_for == "canary":
        assert status["phase"] == "RolledBack"
        assert status["weights"]["canary"] == 0
        assert alertname in status["history"][0]["reason"]
        check = next(c for c in status["checks"] if c["name"] == f"alert:{alertname}")
        assert check["state"] == "Breached"
    else:
        assert status["phase"] == "Succeeded"
        assert status["stableRevision"] == canary


@pytest.mark.localharness
def test_prometheus_gone_mid_rollout_holds_then_rolls_back_per_when_metrics_unavailable(
    rollouts: Rollouts, operator_process: OperatorProcess, tmp_path: Path
) -> None:
    pid, prometheus = start_prometheus(tmp_path)
    try:
        analysis = {
            "prometheus": {"address": prometheus.url, "timeout": "1s"},
            "interval": "1s",
            "checks": [
                {
                    "name": "always-zero",
                    "query": "vector(0)",
                    "breachWhen": "> 1",
                    "action": "rollback",
                }
            ],
            "whenMetricsUnavailable": {"action": "rollback", "after": "4s"},
        }
        steps = [{"setWeight": 50}, {"analysis": {"duration": "60s"}}, {"setWeight": 75}]
        v1 = rollout_manifest("chat", "file:///models/v1", steps, analysis=analysis)
        start_stable(rollouts, v1)
        rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": "file:///models/v2"}})
        wait_until(
            lambda: any(
                c.get("state") == "Passing" for c in rollouts.status("chat").get("checks", [])
            ),
            30,
            "the check to pass against the live Prometheus",
        )
        before = rollouts.status("chat")
        assert before["currentStep"] == 1

        recorder = StatusRecorder(rollouts, "chat")
        with recorder.recording():
            os.kill(pid, signal.SIGKILL)
            status = rollouts.wait_phase("chat", {"RolledBack"}, 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    # It never advanced past the analysis step while blind, then acted.
    assert all(step in (None, 1) for _, step, _ in recorder.seen), recorder.seen
    assert max(w for _, _, w in recorder.seen) == 50
    check = next(c for c in status["checks"] if c["name"] == "always-zero")
    assert check["state"] == "Unavailable"
    assert "unavailable" in status["history"][0]["reason"].lower()


def test_operator_killed_at_random_points_finishes_without_skipping_or_repeating_a_step(
    rollouts: Rollouts, operator_process: OperatorProcess
) -> None:
    steps = [
        {"setWeight": 25},
        {"pause": {"duration": "2s"}},
        {"setWeight": 50},
        {"pause": {"duration": "2s"}},
        {"setWeight": 75},
        {"pause": {"duration": "2s"}},
    ]
    v1 = rollout_manifest("chat", "file:///models/v1", steps, router="gatewayAPI")
    start_stable(rollouts, v1)
    rng = random.Random(7)
    recorder = StatusRecorder(rollouts, "chat")
    kills = 0
    with recorder.recording():
        rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": "file:///models/v2"}})
        deadline = time.monotonic() + 120
        while rollouts.current_phase("chat") != "Succeeded":
            assert time.monotonic() < deadline, f"not finished: {recorder.seen}"
            time.sleep(rng.uniform(0.3, 2.5))
            if kills < 4 and rollouts.current_phase("chat") != "Succeeded":
                weights_at_kill = route_weights(rollouts)
                operator_process.kill()
                kills += 1
                time.sleep(2)
                # Nothing moves traffic while the operator is down.
                assert route_weights(rollouts) == weights_at_kill
                operator_process.start()
        recorder.wait_for_phase("Succeeded", 30)

    assert kills >= 2
    assert step_sequence(recorder.seen, steps) == [0, 1, 2, 3, 4, 5], recorder.seen
    # A repeat of an Event is a count on it (kube/events.py): each occurrence is one start.
    step_events = [
        e.message
        for e in rollouts.events("chat")
        if e.reason == "StepStarted"
        for _ in range(e.count or 1)
    ]
    assert len(step_events) == len(set(step_events)), f"a step was started twice: {step_events}"
    status = rollouts.status("chat")
    assert status["history"][0]["outcome"] == "Promoted"


def route_weights(rollouts: Rollouts) -> list[tuple[str, int]]:
    route = client.CustomObjectsApi(rollouts.apps.api_client).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", rollouts.namespace, "httproutes", "chat"
    )
    return [(r["name"], r["weight"]) for r in route["spec"]["rules"][0]["backendRefs"]]


def test_invalid_spec_only_the_operator_can_judge_changes_nothing_running(
    rollouts: Rollouts, operator_process: OperatorProcess, prometheus: PrometheusHandle
) -> None:
    analysis = {
        "prometheus": {"address": prometheus.url},
        "checks": [
            {"name": "p99", "query": "vector(0)", "breachWhen": "> 1", "action": "rollback"}
        ],
    }
    v1 = rollout_manifest("chat", "file:///models/v1", STEPS, analysis=analysis)
    stable = start_stable(rollouts, v1)
    # The Deployment controller updates status until the pods are Ready: wait it out.
    wait_until(
        lambda: rollouts.deployments("chat")[stable].status.ready_replicas == 2,
        30,
        "stable's pods Ready",
    )
    time.sleep(1)
    before = {rev: d.metadata.resource_version for rev, d in rollouts.deployments("chat").items()}

    bad_query = 'rate(x{revision="{{canary.nope}}"}[1m])'
    rollouts.patch_spec(
        "chat",
        {
            "model": {"name": "chat", "uri": "file:///models/v2"},
            "analysis": {**analysis, "checks": [{**analysis["checks"][0], "query": bad_query}]},
        },
    )

    def invalid() -> dict[str, Any] | None:
        status = rollouts.status("chat")
        for condition in status.get("conditions", []):
            if condition["type"] == "InvalidSpec" and condition["status"] == "True":
                return condition
        return None

    condition = wait_until(invalid, 20, "condition InvalidSpec")
    assert "spec.analysis.checks[0].query" in condition["message"]
    assert "canary.nope" in condition["message"]
    time.sleep(2)
    status = rollouts.status("chat")
    assert status["phase"] == "Succeeded"
    assert status["stableRevision"] == stable
    assert status.get("canaryRevision") is None
    after = {rev: d.metadata.resource_version for rev, d in rollouts.deployments("chat").items()}
    assert after == before, "a Deployment was created or changed for an invalid spec"


def test_a_new_spec_mid_rollout_supersedes_the_canary_and_starts_over_from_stable(
    scenario: Scenario,
) -> None:
    steps = [{"setWeight": 50}, {"pause": {}}]
    scenario.given().rollout(
        rollout_manifest("chat", "file:///models/v1", steps, router="gatewayAPI")
    )
    stable = scenario.stable_revision

    paused = (
        scenario.when().update_model("file:///models/v2").then().expect_phase("Paused", within=60)
    )
    v2 = scenario.new_revision
    assert paused.status["canaryRevision"] == v2

    then = scenario.when().update_model("file:///models/v3").then()
    status = then.expect_phase("Paused", within=60).status
    v3 = scenario.new_revision
    assert status["stableRevision"] == stable
    assert status["canaryRevision"] == v3
    superseded = next(h for h in status["history"] if h["revision"] == v2)
    assert superseded["outcome"] == "Superseded"
    # The superseded canary's pods go; stable and the new canary stay.
    then.expect_deployments({stable, v3}, within=30)
    assert dict(route_weights(scenario.rollouts)) == {f"chat-{stable}": 50, f"chat-{v3}": 50}

    # Promotion by command, never by a spec edit.
    generation = scenario.rollouts.get("chat")["metadata"]["generation"]
    done = scenario.when().promote().then().expect_phase("Succeeded", within=60).status
    assert done["stableRevision"] == v3
    assert scenario.rollouts.get("chat")["metadata"]["generation"] == generation


def test_idle_ticks_write_nothing(rollouts: Rollouts, operator_process: OperatorProcess) -> None:
    v1 = rollout_manifest("chat", "file:///models/v1", STEPS, router="gatewayAPI")
    start_stable(rollouts, v1)
    time.sleep(2)  # let the Available condition settle once the pods are Ready

    def versions() -> dict[str, str]:
        route = client.CustomObjectsApi(rollouts.apps.api_client).get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", rollouts.namespace, "httproutes", "chat"
        )
        found = {"rollout": rollouts.get("chat")["metadata"]["resourceVersion"]}
        found["route"] = route["metadata"]["resourceVersion"]
        for revision_name, deployment in rollouts.deployments("chat").items():
            found[revision_name] = deployment.metadata.resource_version
        return found

    before = versions()
    time.sleep(5)  # ten ticks at the test interval of 0.5 s
    assert versions() == before


def test_operator_metrics_count_steps_rollbacks_and_checks(
    rollouts: Rollouts,
    cluster_under_test: ClusterUnderTest,
    namespace: str,
    tmp_path: Path,
    prometheus: PrometheusHandle,
) -> None:
    port = free_port()
    operator = OperatorProcess(
        cluster_under_test.kubeconfig, namespace, tmp_path, tick_interval=0.5, metrics_port=port
    )
    operator.start()
    try:
        analysis = rollback_on_positive(prometheus.url, "always-one", "vector(1)")
        steps = [{"setWeight": 50}, {"analysis": {"duration": "30s"}}]
        v1 = rollout_manifest("chat", "file:///models/v1", steps, analysis=analysis)
        start_stable(rollouts, v1)
        rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": "file:///models/v2"}})
        rollouts.wait_phase("chat", {"RolledBack"}, 60)
        ours = {"namespace": namespace, "rollout": "chat"}
        samples = wait_until(
            lambda: (
                (found := scrape(port)).get(
                    (
                        "modelrollout_rollout_phase",
                        frozenset({**ours, "phase": "RolledBack"}.items()),
                    )
                )
                == 1.0
                and found
            ),
            10,
            "the rolled-back phase in the operator's metrics",
        )
    finally:
        operator.stop()

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, frozenset({**ours, **labels}.items())))

    assert value("modelrollout_rollout_phase", phase="Progressing") == 0.0
    assert value("modelrollout_rollout_canary_weight") == 0.0
    assert value("modelrollout_step_transitions_total") == 1.0
    assert value("modelrollout_rollbacks_total", reason="CheckBreached") == 1.0
    assert (
        value("modelrollout_check_evaluations_total", check="always-one", state="Breached") == 1.0
    )
    assert samples[("modelrollout_tick_duration_seconds_count", frozenset())] > 0


def rollback_on_positive(prometheus_url: str, name: str, query: str) -> dict[str, Any]:
    """An analysis of one check, every second, that rolls back when `query` is above 0."""
    return {
        "prometheus": {"address": prometheus_url, "timeout": "2s"},
        "interval": "1s",
        "checks": [{"name": name, "query": query, "breachWhen": "> 0", "action": "rollback"}],
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_checks_reading_reaches_status_once_per_refresh_period_and_a_breach_at_once(
    rollouts: Rollouts,
    cluster_under_test: ClusterUnderTest,
    namespace: str,
    tmp_path: Path,
    prometheus: PrometheusHandle,
) -> None:
    """Evaluated every second, written every `refresh` s; the breach goes out with the rollback."""
    refresh = 3.0
    gauge = f"test_breach_{uuid.uuid4().hex[:8]}"

    def set_gauge(value: int) -> None:
        prometheus.write_rules(
            gauge,
            f"groups:\n  - name: {gauge}\n    rules:\n"
            f"      - record: {gauge}\n        expr: vector({value})\n",
        )
        wait_until(
            lambda: [r for r in prometheus.query(gauge) if r["value"][1] == str(value)],
            30,
            f"{gauge} = {value} in Prometheus",
        )

    set_gauge(0)
    port = free_port()
    operator = OperatorProcess(
        cluster_under_test.kubeconfig,
        namespace,
        tmp_path,
        tick_interval=0.5,
        metrics_port=port,
        extra_env={"MODELROLLOUT_CHECK_STATUS_REFRESH": str(refresh)},
    )
    operator.start()
    try:
        analysis = rollback_on_positive(prometheus.url, "errors", f"max({gauge})")
        steps = [{"setWeight": 50}, {"analysis": {"duration": "5m"}}]
        v1 = rollout_manifest("chat", "file:///models/v1", steps, analysis=analysis)
        start_stable(rollouts, v1)
        with StatusWatch(rollouts.apps.api_client, namespace) as watch:

            def analysing() -> list[dict[str, Any]]:
                return [
                    status
                    for status in watch.statuses["chat"]
                    if status.get("phase") == "Progressing"
                    and status.get("currentStep") == 1
                    and [c.get("state") for c in status.get("checks") or []] == ["Passing"]
                ]

            rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": "file:///models/v2"}})
            wait_until(lambda: len(analysing()) >= 4, 90, "four status writes during the analysis")
            set_gauge(1)
            rollouts.wait_phase("chat", {"RolledBack"}, 60)
        evaluations = scrape(port).get(
            (
                "modelrollout_check_evaluations_total",
                frozenset(
                    {"namespace": namespace, "rollout": "chat", "check": "errors"}.items()
                    | {("state", "Passing")}
                ),
            )
        )
    finally:
        operator.stop()
        prometheus.remove_rules(gauge)

    written = analysing()
    readings_only = [
        (before, after)
        for before, after in itertools.pairwise(written)
        if {**before, "checks": None} == {**after, "checks": None}
    ]
    assert len(readings_only) >= 2, written
    for before, after in readings_only:
        gap = moment(after["checks"][0]["lastEvaluated"]) - moment(
            before["checks"][0]["lastEvaluated"]
        )
        assert gap >= refresh, (before["checks"], after["checks"])
    # Each evaluation is counted, most of them never written.
    assert evaluations is not None and evaluations > len(written), (evaluations, written)
    breached = next(
        status
        for status in watch.statuses["chat"]
        if any(c.get("state") == "Breached" for c in status.get("checks") or [])
    )
    assert breached["weights"]["canary"] == 0, breached
    assert breached["phase"] in ("RollingBack", "RolledBack"), breached


def moment(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_blue_green_with_a_route_previews_the_new_color_then_switches_all_weight_at_once(
    scenario: Scenario,
) -> None:
    v1 = rollout_manifest("chat", "file:///models/v1", [], router="gatewayAPI")
    v1["spec"]["strategy"] = {"blueGreen": {"autoPromotionAfter": "3s", "scaleDownDelay": "60s"}}
    scenario.given().rollout(v1)
    stable = scenario.stable_revision

    then = scenario.when().update_model("file:///models/v2").then()
    green = scenario.new_revision
    then.expect_status("the preview revision", lambda s: s.get("canaryRevision") == green, 30)
    # The preview route stands only until the switch: the watch saw every version of it.
    routes = scenario.route_watch
    preview = routes.wait_for(
        lambda: next(
            (
                route
                for route in routes.versions("chat-preview")
                if route_backends(route)[0][0] == f"chat-{green}"
            ),
            None,
        ),
        30,
        "the preview route to the new color",
    )
    status = then.expect_phase("Succeeded", within=60).status
    # The route is converged right after the status write of the same tick.
    then.expect_route("chat", [(f"chat-{green}", 100)], within=10)

    (rule,) = preview["spec"]["rules"]
    assert rule["matches"][0]["headers"][0]["name"] == "x-modelrollout-preview"
    assert status["stableRevision"] == green and status["previousRevision"] == stable
    # Weights only ever 0 or 100: the switch is one write, never a split.
    states = scenario.states()
    assert {weight for _, _, weight in states} <= {0, 100}, states
    # Nor did any version of the route split it.
    on_the_route = {w for route in routes.versions("chat") for _, w in route_backends(route)}
    assert on_the_route <= {0, 100}, on_the_route
    deployments = then.expect_deployments({stable, green}, within=30).deployments
    assert {rev: d["spec"]["replicas"] for rev, d in deployments.items()} == {stable: 2, green: 2}
