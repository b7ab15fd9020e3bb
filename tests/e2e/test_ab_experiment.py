"""A/B by request attributes through the real gateway, judged on real servers' metrics.

An experiment step sends a segment (a header, a user-hash range, then a cookie) to the candidate
at weight 0; Traefik carries out the header-match rule the gatewayAPI router
writes, real model servers answer, and Prometheus counts each group. A good
candidate's experiment ends Promote and the rollout goes on; one answering
60% of its requests with 500s ends Rollback and is rolled back. Requests
outside the segment never reach the candidate. Status, the ExperimentVerdict
Event and `kubectl modelrollout get` show the report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from modelrollout_dev.load import BackgroundLoad, wait_until_served
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.prometheus import PrometheusHandle
from modelrollout_dev.traefik import Traefik
from tests.conftest import ClusterUnderTest
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest
from tests.support.serving_placement import ServingPlacement

pytestmark = [pytest.mark.e2e, pytest.mark.localharness]

PLUGIN = str(Path(sys.executable).parent / "kubectl-modelrollout")
# From the route's write to Traefik serving it: its providers' throttle (2 s) and a margin.
SETTLE = 5.0


def experiment(segment: dict[str, Any]) -> dict[str, Any]:
    return {"experiment": {"duration": "20s", "segment": segment, "minRequests": 20}}


def analysis(prometheus: PrometheusHandle) -> dict[str, Any]:
    # `for: 10m`: the running analysis never acts within the test, so what decides is the
    # experiment's verdict on the same checks over its window.
    return {
        "prometheus": {"address": prometheus.url, "timeout": "2s"},
        "interval": "2s",
        "checks": [
            {"name": "error-rate", "builtin": "errorRate", "window": "10s",
             "breachWhen": "> 0.1", "for": "10m"},
            {"name": "ttft-vs-a", "builtin": "ttftP99", "compareTo": "stable", "window": "10s",
             "breachWhen": "> 20", "for": "10m"},
        ],
        "whenMetricsUnavailable": {"action": "pause", "after": "10m"},
    }  # fmt: skip


def revisions_after(load: BackgroundLoad, since: float, until: float) -> set[str]:
    return {revision for sent, revision, _ in load.sent_since(since) if sent < until}


def plugin_get(cluster: ClusterUnderTest, namespace: str, name: str) -> str:
    result = subprocess.run(
        [PLUGIN, "-n", namespace, "get", name],
        env={**os.environ, "KUBECONFIG": cluster.kubeconfig},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_an_experiment_routes_its_segment_to_the_candidate_and_its_verdict_decides(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    routed_serving: tuple[ServingPlacement, Traefik],
    prometheus: PrometheusHandle,
    cluster_under_test: ClusterUnderTest,
) -> None:
    serving, gateway = routed_serving
    steps = [
        experiment({"headers": [{"name": "x-tenant", "value": "beta"}]}),
        # Users whose id hash ends in hex digit 0-3: a quarter of them, always the same.
        experiment({"hashRange": {"header": "x-user-hash", "from": 0, "to": 3}}),
        {"pause": {}},
    ]
    v1 = rollout_manifest(
        "chat", serving.model_uri(0), steps, router="gatewayAPI",
        analysis=analysis(prometheus), placement=serving.placement(),
    )  # fmt: skip
    rollouts.create(v1)
    stable = rollouts.wait_phase("chat", {"Succeeded"}, 180)["stableRevision"]
    serving.wait_for_servers(stable)
    wait_until_served(gateway.url, "chat")

    plain = BackgroundLoad(gateway.url, "chat")
    beta = BackgroundLoad(gateway.url, "chat", headers={"x-tenant": "beta"})
    cohort = BackgroundLoad(gateway.url, "chat", headers={"Cookie": "theme=dark; cohort=b"})
    in_range = BackgroundLoad(gateway.url, "chat", workers=1, headers={"x-user-hash": "9f3e2"})
    out_of_range = BackgroundLoad(gateway.url, "chat", workers=1, headers={"x-user-hash": "9f3ea"})
    with plain, beta, cohort, in_range, out_of_range:
        # A good candidate: the x-tenant: beta segment goes to it at weight 0.
        started = time.monotonic()
        rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": serving.model_uri(1)}})
        wait_until(
            lambda: (
                (s := rollouts.status("chat")).get("canaryRevision")
                and beta.count(s["canaryRevision"], "200") >= 1
            ),
            180,
            "the segment answered by the candidate",
        )
        first_on_b = time.monotonic()
        good = rollouts.status("chat")["canaryRevision"]
        first = wait_until(
            lambda: (s := rollouts.status("chat")).get("currentStep") == 1 and s,
            180,
            "the first experiment's verdict",
        )
        second_step = time.monotonic()
        assert first["experiment"]["decision"] == "Promote", first["experiment"]
        paused = rollouts.wait_phase("chat", {"Paused", "RolledBack"}, 180)
        judged = time.monotonic()
        assert paused["phase"] == "Paused", paused
        assert paused["weights"]["canary"] == 0, paused
        assert paused["canaryRevision"] == good
        report = paused["experiment"]
        print("good candidate's report:", report)
        assert report["decision"] == "Promote", report
        assert report["revision"] == good and report["step"] == 1
        groups = {group["name"]: group for group in report["groups"]}
        assert groups["A"]["revision"] == stable and groups["B"]["revision"] == good
        assert groups["A"]["requests"] >= 20 and groups["B"]["requests"] >= 20, groups
        assert groups["B"]["errorRate"] == 0, groups
        assert {c["name"]: c["breached"] for c in report["checks"]} == {
            "error-rate": False,
            "ttft-vs-a": False,
        }
        # Outside the segments nobody reached the candidate; inside each, while its step ran
        # and once routed, everyone did.
        assert revisions_after(plain, started, judged) == {stable}
        assert revisions_after(cohort, started, judged) == {stable}
        assert revisions_after(out_of_range, started, judged) == {stable}
        assert revisions_after(beta, first_on_b + SETTLE, second_step - SETTLE) == {good}
        assert revisions_after(in_range, started, second_step - SETTLE) == {stable}
        assert revisions_after(in_range, second_step + SETTLE, judged - SETTLE) == {good}
        assert revisions_after(beta, second_step + SETTLE, judged) == {stable}
        verdicts = [e for e in rollouts.events("chat") if e.reason == "ExperimentVerdict"]
        print("verdicts:", [(e.count, e.message) for e in verdicts])
        assert verdicts and all("experiment Promote" in e.message for e in verdicts), verdicts
        shown = plugin_get(cluster_under_test, rollouts.namespace, "chat")
        print(shown)
        assert "Experiment:" in shown and ": Promote" in shown, shown

        # A failing candidate, segmented by cookie: B's errors roll it back.
        failing = {**v1["spec"]["runtime"]}
        failing["args"] = ["--fault-injection", "--fault-error-rate=0.6", "--fault-seed=1"]
        steps[0] = experiment({"cookie": {"name": "cohort", "value": "b"}})
        second = time.monotonic()
        rollouts.patch_spec("chat", {"runtime": failing, "strategy": {"canary": {"steps": steps}}})
        rolled_back = rollouts.wait_phase("chat", {"RolledBack"}, 240)
        ended = time.monotonic()
    bad = rolled_back["canaryRevision"]
    assert bad not in (stable, good)
    report = rolled_back["experiment"]
    print("failing candidate's report:", report)
    assert report["decision"] == "Rollback" and report["revision"] == bad, report
    groups = {group["name"]: group for group in report["groups"]}
    assert groups["B"]["errorRate"] > 0.1 and groups["A"]["errorRate"] == 0, groups
    assert report["errorRateDifference"] > 0.1, report
    assert "error-rate" in report["reason"], report
    assert "experiment" in rolled_back["history"][0]["reason"], rolled_back["history"][0]
    assert rolled_back["stableRevision"] == stable
    assert cohort.count(bad, "500") > 0, cohort.snapshot()
    assert bad not in revisions_after(plain, second, ended)
    assert bad not in revisions_after(beta, second, ended)
    assert bad not in revisions_after(in_range, second, ended)
    shown = plugin_get(cluster_under_test, rollouts.namespace, "chat")
    print(shown)
    assert ": Rollback" in shown, shown
