"""A/B experiment steps: the pure verdict walked tick by tick, the segment's rules, the spec.

The engine sees each group's figures as the reconciler measured them
(`World.experiment`); the route the reconciler writes is read as a gateway
would (test_session_affinity_ticks.routed).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from modelrollout.analysis.experiment import ExperimentFigures, GroupFigures, requests_query
from modelrollout.analysis.provider import QueryResult
from modelrollout.analysis.runner import analysis_active, awaits_traffic
from modelrollout.engine.strategies.experiment import summary
from modelrollout.engine.strategies.timers import experiment_remeasured_at, step_ends_at
from modelrollout.kube.api import HTTPROUTES
from modelrollout.kube.events import EVENTS
from modelrollout.kubectl.dashboard.views import detail
from modelrollout.kubectl.render import experiment_report
from modelrollout.models import InvalidSpecError, parse_spec
from modelrollout.models.status import GateStatus
from modelrollout.traffic.segment import cookie_regex, hash_range_regex
from tests.unit.operator.builders import (
    HEALTHY_ANSWERS,
    Rollout,
    World,
    example_spec,
    with_model_uri,
)
from tests.unit.operator.test_reconciler_ticks import (
    FIRING,
    NAME,
    NAMESPACE,
    V1,
    V2,
    Cluster,
    canary_spec,
    child,
    targets,
)
from tests.unit.operator.test_session_affinity_ticks import routed

pytestmark = pytest.mark.unit

NEW = "pvc://models/llama-3.2-3b/v1.4"
BETA = {"x-tenant": "beta"}


def ab_spec(segment: dict[str, Any] | None = None, router: str = "gatewayAPI") -> dict[str, Any]:
    spec = example_spec()
    spec["traffic"]["router"] = router
    spec["strategy"]["canary"]["steps"] = [
        {
            "experiment": {
                "duration": "1m",
                "segment": segment or {"headers": [{"name": "x-tenant", "value": "beta"}]},
                "minRequests": 20,
            }
        },
        {"setWeight": 50},
        {"pause": {}},
    ]
    spec["analysis"]["checks"] = [
        {"name": "error-rate", "builtin": "errorRate", "breachWhen": "> 0.05", "for": "10m"},
        {"name": "ttft-vs-a", "builtin": "ttftP99", "compareTo": "stable",
         "breachWhen": "> 1.5", "for": "10m"},
    ]  # fmt: skip
    return spec


def group(
    requests: float | None, errors: float | None = 0.0, ttft: float | None = 0.1
) -> GroupFigures:
    return GroupFigures(requests, {"errorRate": errors, "ttftP99": ttft})


def figures(rollout: Rollout, a: GroupFigures, b: GroupFigures, step: int = 0) -> ExperimentFigures:
    return ExperimentFigures(rollout.status.canary_revision or "", step, 60, a, b)


def started(spec: dict[str, Any]) -> Rollout:
    rollout = Rollout.of(spec)
    rollout.tick()
    rollout.apply(with_model_uri(spec, NEW))
    rollout.world = World(canary_ready=0)
    rollout.tick()
    rollout.tick(15)
    return rollout


def serving_for_a_minute(rollout: Rollout) -> None:
    """The canary's pods become Ready; the experiment's minute runs from then."""
    rollout.world.canary_ready = 2
    rollout.tick(15)
    assert rollout.status.step_started_at == rollout.now
    rollout.tick(59)
    assert rollout.status.current_step == 0
    assert rollout.status.message.endswith("segment routed to the canary")


def test_a_healthy_experiment_waits_for_enough_requests_then_promotes_to_the_next_step() -> None:
    rollout = started(ab_spec())
    # At weight 0, pods loading: the step's time has not started.
    assert (rollout.status.phase, rollout.status.current_step) == ("Progressing", 0)
    assert rollout.status.weights.canary == 0
    assert rollout.status.step_started_at is None
    assert "waiting for canary pods" in rollout.status.message
    serving_for_a_minute(rollout)
    # Time is up: nothing measured in this tick yet.
    rollout.tick(1)
    assert rollout.status.message.endswith("time is up, measuring the groups")
    # Too few requests in B: Pending, the step goes on; no data is never a pass.
    rollout.world.experiment = figures(rollout, group(100), group(7))
    rollout.tick(1)
    report = rollout.status.experiment
    assert report is not None and report.decision == "Pending"
    assert "group B has 7 of 20 requests" in report.reason
    assert rollout.status.current_step == 0 and rollout.status.phase == "Progressing"
    # Measured again: enough, B as good as A.
    rollout.world.experiment = figures(rollout, group(300, 0.01, 0.10), group(40, 0.0, 0.12))
    decision = rollout.tick(15)
    report = rollout.status.experiment
    assert report is not None and report.decision == "Promote", report
    assert [(g.name, g.requests) for g in report.groups] == [("A", 300), ("B", 40)]
    assert report.error_rate_difference == pytest.approx(-0.01)
    assert report.ttft_p99_difference == pytest.approx(0.02)
    assert [(c.name, c.value, c.breached) for c in report.checks] == [
        ("error-rate", 0.0, False),
        ("ttft-vs-a", pytest.approx(1.2), False),
    ]
    # The weight step after it is set in the same tick (exact weights: done at once); the
    # tick's Event is named after the verdict.
    assert rollout.status.current_step == 2 and rollout.status.weights.canary == 50
    assert decision.events[-1][:2] == ("Normal", "ExperimentVerdict")
    assert decision.events[-1][2].startswith("experiment Promote: B meets 2 check(s)")


def test_a_candidate_breaching_a_check_over_its_window_is_rolled_back() -> None:
    rollout = started(ab_spec())
    serving_for_a_minute(rollout)
    rollout.world.experiment = figures(rollout, group(300, 0.0), group(40, 0.3))
    decision = rollout.tick(1)
    assert decision.rollback_now
    assert rollout.status.phase == "RollingBack" and rollout.status.weights.canary == 0
    report = rollout.status.experiment
    assert report is not None and report.decision == "Rollback"
    assert report.reason == "B breaches error-rate 0.3 (breach when > 0.05)"
    assert rollout.status.history[0].outcome == "RolledBack"
    assert "experiment: B breaches error-rate" in rollout.status.history[0].reason
    assert decision.events[-1][:2] == ("Warning", "ExperimentVerdict")
    # The report stays after the rollback, for status and the plugin.
    rollout.tick(15)
    assert rollout.status.phase == "RolledBack"
    assert rollout.status.experiment == report


def test_a_candidate_slower_than_its_control_group_breaches_a_compare_to_stable_check() -> None:
    rollout = started(ab_spec())
    serving_for_a_minute(rollout)
    rollout.world.experiment = figures(rollout, group(300, ttft=0.1), group(40, ttft=0.2))
    rollout.tick(1)
    report = rollout.status.experiment
    assert report is not None and report.decision == "Rollback"
    assert report.reason == "B breaches ttft-vs-a 2 (breach when > 1.5)"


def test_no_data_for_a_check_and_metrics_unavailable_are_pending_never_a_pass() -> None:
    rollout = started(ab_spec())
    serving_for_a_minute(rollout)
    rollout.world.experiment = figures(rollout, group(300), group(40, ttft=None))
    rollout.tick(1)
    report = rollout.status.experiment
    assert report is not None and (report.decision, report.reason) == (
        "Pending",
        "no data for ttft-vs-a",
    )
    offline = replace(figures(rollout, GroupFigures(), GroupFigures()), error="unreachable")
    rollout.world.experiment = offline
    rollout.tick(15)
    report = rollout.status.experiment
    assert report is not None and report.decision == "Pending"
    assert report.reason == "metrics unavailable: unreachable"
    assert rollout.status.current_step == 0


def test_figures_of_another_revision_or_step_are_not_this_experiments() -> None:
    rollout = started(ab_spec())
    serving_for_a_minute(rollout)
    healthy = figures(rollout, group(300), group(40))
    for stale in (replace(healthy, revision="0ld"), replace(healthy, step=3)):
        rollout.world.experiment = stale
        rollout.tick(1)
        assert rollout.status.experiment is None and rollout.status.current_step == 0


def test_a_failed_quality_gate_on_the_candidate_rolls_back_whatever_the_figures() -> None:
    spec = ab_spec()
    rollout = started(spec)
    serving_for_a_minute(rollout)
    gates = (GateStatus(name="exact-match", passed=False, value=0.4, threshold=">= 0.8"),)
    rollout.status = rollout.status.model_copy(
        update={"gates": gates, "gates_revision": rollout.status.canary_revision, "gates_step": 0}
    )
    rollout.world.experiment = figures(rollout, group(300), group(40))
    rollout.tick(1)
    report = rollout.status.experiment
    assert report is not None and report.decision == "Rollback"
    assert report.gates == gates and report.reason == "B fails quality gates exact-match"


def test_the_experiment_has_timers_and_counts_as_traffic_for_the_analysis() -> None:
    rollout = started(ab_spec())
    spec = rollout.spec
    assert not analysis_active(spec, rollout.status.model_copy(update={"current_step": 1}))
    # While the canary loads, the segment brings it nothing: no data yet is not "unavailable".
    assert awaits_traffic(spec, rollout.status) and not analysis_active(spec, rollout.status)
    serving_for_a_minute(rollout)
    status = rollout.status
    # At weight 0 the segment reaches the canary: its checks run, it is not "no traffic".
    assert status.weights.canary == 0
    assert analysis_active(spec, status) and not awaits_traffic(spec, status)
    assert status.step_started_at is not None
    assert step_ends_at(spec, status) == status.step_started_at + timedelta(minutes=1)
    rollout.world.experiment = figures(rollout, group(3), group(3))
    rollout.tick(1)
    # Pending: measured again one analysis interval (15s) later.
    assert experiment_remeasured_at(spec, rollout.status) == rollout.now + timedelta(seconds=15)


def test_the_report_renders_for_the_plugin_and_as_one_event_line() -> None:
    rollout = started(ab_spec())
    serving_for_a_minute(rollout)
    rollout.world.experiment = figures(rollout, group(300, 0.0, 0.1), group(40, 0.3, 0.1))
    rollout.tick(1)
    report = rollout.status.experiment
    assert report is not None
    text = "\n".join(experiment_report(rollout.status))
    assert "Experiment:" in text and "60s window: Rollback" in text
    rows = [line.split() for line in text.splitlines()]
    assert ["A", rollout.status.stable_revision, "300", "0", "0.1"] in rows
    assert ["B", report.revision, "40", "0.3", "0.1"] in rows
    assert ["B-A", "-", "-", "0.3", "0"] in rows
    assert ["error-rate", "0.3", ">", "0.05", "yes"] in rows
    line = summary(report)
    assert line.startswith("experiment Rollback: B breaches error-rate 0.3")
    assert "A (" in line and "B (" in line and "B-A errors 0.3" in line


def test_the_dashboard_shows_the_same_report() -> None:
    rollout = started(ab_spec())
    serving_for_a_minute(rollout)
    rollout.world.experiment = figures(rollout, group(300, 0.0, 0.1), group(40, 0.3, 0.1))
    rollout.tick(1)
    body = {
        "apiVersion": "modelrollout.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"namespace": "ml", "name": "chat", "generation": 2},
        "spec": rollout.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        "status": rollout.status.to_patch(),
    }
    shown = detail(body, [], [], rollout.now)["experiment"]
    assert (shown["step"], shown["windowSeconds"], shown["decision"]) == (0, 60, "Rollback")
    assert shown["reason"] == rollout.status.experiment.reason  # type: ignore[union-attr]
    assert [
        (g["name"], g["revision"], g["requests"], g["errorRate"], g["ttftP99"])
        for g in shown["groups"]
    ] == [
        ("A", rollout.status.stable_revision, 300, 0.0, 0.1),
        ("B", rollout.status.canary_revision, 40, 0.3, 0.1),
    ]
    assert shown["errorRateDifference"] == 0.3
    assert [(c["name"], c["value"], c["breached"]) for c in shown["checks"]] == [
        ("error-rate", 0.3, True),
        ("ttft-vs-a", 1.0, False),
    ]
    before = detail(body | {"status": {}}, [], [], rollout.now)
    assert before["experiment"] is None


# -- the route --------------------------------------------------------------------


def route_ab_spec() -> dict[str, Any]:
    spec = canary_spec()
    spec["strategy"]["canary"]["steps"] = [
        {"experiment": {"duration": "1m", "minRequests": 20, "segment": {
            "headers": [{"name": "x-tenant", "value": "beta"}],
            "cookie": {"name": "cohort", "value": "b"}}}},
        {"pause": {"duration": "1m"}},
        {"setWeight": 50},
    ]  # fmt: skip
    return spec


def test_the_segment_reaches_the_canary_only_during_its_experiment_and_never_after() -> None:
    cluster = Cluster()
    cluster.provider.answers = {"increase(": QueryResult(100.0), **HEALTHY_ANSWERS}
    spec = route_ab_spec()
    cluster.started(spec)
    old, new = child(V1, spec), child(V2, spec)
    segment = {**BETA, "Cookie": "theme=dark; cohort=b"}
    cluster.tick(1)
    cluster.settle()
    cluster.tick(1)
    assert cluster.status.current_step == 0 and cluster.status.weights.canary == 0
    # Both conditions, or nothing: a header alone or a cookie alone stays on the weighted rule.
    assert routed(cluster, segment) == new
    assert routed(cluster, BETA) is None
    assert routed(cluster, {"Cookie": "cohort=b"}) is None
    assert routed(cluster, {**BETA, "Cookie": "cohort=bb"}) is None
    assert cluster.route_weights() == {old: 100, new: 0}
    # A steady tick rewrites nothing.
    assert f"patch httproutes/{NAME}" not in targets(cluster.tick(1))
    # The minute is up: both groups measured, a verdict, the next step, the rule gone.
    cluster.tick(60)
    report = cluster.status.experiment
    assert report is not None and report.decision == "Promote", report
    assert cluster.status.current_step == 1
    assert routed(cluster, segment) is None
    assert any(e["reason"] == "ExperimentVerdict" for e in cluster.api.list(EVENTS, NAMESPACE))


def test_a_rollback_removes_the_segment_in_its_first_write() -> None:
    cluster = Cluster()
    spec = route_ab_spec()
    cluster.started(spec)
    new = child(V2, spec)
    cluster.tick(1)
    cluster.settle()
    cluster.tick(1)
    assert routed(cluster, {**BETA, "Cookie": "cohort=b"}) == new
    cluster.provider.answers["ALERTS"] = FIRING
    writes = cluster.tick(15)
    assert targets(writes)[0] == f"patch httproutes/{NAME}"
    assert [len(r.get("matches", [])) for r in writes[0].body["spec"]["rules"]] == [0]
    route = cluster.api.get(HTTPROUTES, NAMESPACE, NAME)
    assert route is not None and len(route["spec"]["rules"]) == 1


# -- the segment's regular expressions ------------------------------------------------


@pytest.mark.parametrize(
    ("cookie", "matches"),
    [
        ("cohort=b", True),
        ("theme=dark; cohort=b", True),
        ("cohort=b; theme=dark", True),
        ("a=1;cohort=b;c=2", True),
        ("cohort=bb", False),
        ("xcohort=b", False),
        ("theme=cohort=b", False),
        ("cohort=", False),
    ],
)
def test_a_cookie_is_found_by_name_and_whole_value(cookie: str, matches: bool) -> None:
    pattern = cookie_regex("cohort", "b")
    assert (re.search(pattern, cookie) is not None) is matches
    # Full-match gateways (Envoy) read it the same.
    assert (re.fullmatch(pattern, cookie) is not None) is matches


def test_a_hash_range_is_the_buckets_from_to_of_the_hashed_header() -> None:
    pattern = hash_range_regex(16, 2, 5)
    inside = {b for b in range(16) if re.search(pattern, f"user-9f{b:x}")}
    assert inside == {2, 3, 4, 5}
    wide = hash_range_regex(256, 10, 40)
    assert {b for b in range(256) if re.fullmatch(wide, f"{b:02X}")} == set(range(10, 41))


def test_request_counts_take_the_engine_or_the_http_figure() -> None:
    query = requests_query("canary", "60s")
    assert "increase(vllm:request_success_total{" in query and "http_requests_total" in query
    assert "[60s]" in query and "canary.revision" in query


# -- the spec ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        (lambda s: s["traffic"].update(router="service"),
         "spec.strategy.canary.steps[0].experiment", "request matching"),
        (lambda s: s["strategy"]["canary"]["steps"][0]["experiment"].update(segment={}),
         "spec.strategy.canary.steps[0].experiment.segment", "at least one of"),
        (lambda s: s["strategy"]["canary"]["steps"][0]["experiment"].update(
            segment={"hashRange": {"header": "x-user", "from": 9, "to": 3}}),
         "spec.strategy.canary.steps[0].experiment.segment.hashRange", "from <= to"),
        (lambda s: s["strategy"]["canary"]["steps"][0]["experiment"].update(
            segment={"hashRange": {"header": "x-user", "from": 3, "to": 16}}),
         "spec.strategy.canary.steps[0].experiment.segment.hashRange", "< buckets"),
        (lambda s: s["strategy"]["canary"]["steps"][0]["experiment"].update(
            segment={"headers": [{"name": "x-t", "value": "(", "type": "RegularExpression"}]}),
         "spec.strategy.canary.steps[0].experiment.segment.headers[0].value",
         "not a regular expression"),
        (lambda s: s["strategy"]["canary"]["steps"][0]["experiment"].update(
            segment={"cookie": {"name": "c", "value": "a;b"}}),
         "spec.strategy.canary.steps[0].experiment.segment.cookie.value", "pattern"),
    ],
)  # fmt: skip
def test_a_bad_experiment_is_refused_naming_its_field(change: Any, field: str, says: str) -> None:
    spec = ab_spec()
    change(spec)
    with pytest.raises(InvalidSpecError) as refused:
        parse_spec(spec)
    assert refused.value.field_path == field
    assert says in refused.value.message


def test_a_shadow_canary_step_may_not_be_an_experiment() -> None:
    spec = ab_spec()
    experiment = spec["strategy"]["canary"]["steps"][0]
    spec["strategy"] = {
        "shadow": {"mirrorPercent": 10, "duration": "1m", "then": "canary",
                   "canarySteps": [experiment]}
    }  # fmt: skip
    with pytest.raises(InvalidSpecError) as refused:
        parse_spec(spec)
    assert refused.value.field_path == "spec.strategy.shadow.canarySteps[0].experiment"


def test_an_experiment_step_parses_with_its_defaults() -> None:
    spec = ab_spec({"hashRange": {"header": "x-user-hash", "from": 0, "to": 3}})
    step = parse_spec(spec).canary.steps[0]
    assert step.kind == "experiment" and step.experiment is not None
    assert step.experiment.min_requests == 20
    hashed = step.experiment.segment.hash_range
    assert hashed is not None and (hashed.buckets, hashed.from_, hashed.to) == (16, 0, 3)
