"""evaluate(): what gets queried, when, and what a dead Prometheus does to the verdict."""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelrollout.analysis.prometheus import alert_query
from modelrollout.analysis.provider import QueryResult
from modelrollout.analysis.runner import evaluate
from modelrollout.models import Weights, parse_spec
from tests.unit.operator.builders import (
    ANALYSIS_CONTEXT,
    CANARY_AT_5,
    HEALTHY_ANSWERS,
    T0,
    FakeProvider,
    example_spec,
)

pytestmark = pytest.mark.unit

SPEC = parse_spec(example_spec())


def test_queries_every_check_and_alert_once_with_the_canary_labels() -> None:
    provider = FakeProvider(dict(HEALTHY_ANSWERS))
    checks, verdict = evaluate(SPEC, CANARY_AT_5, provider, ANALYSIS_CONTEXT, T0)
    assert verdict.kind == "healthy"
    assert len(provider.queries) == 3
    assert all('revision="bbbb"' in q for q in provider.queries)
    assert [c.name for c in checks] == ["error-rate", "p99-latency", "alert:ModelHighErrorRate"]
    assert checks[0].value == 0.001 and checks[0].last_evaluated == T0


def test_alert_query_counts_firing_series_for_the_rendered_labels() -> None:
    assert alert_query(SPEC.analysis.alerts[0], ANALYSIS_CONTEXT) == (
        'count(ALERTS{alertname="ModelHighErrorRate",alertstate="firing",'
        'namespace="ml",revision="bbbb"})'
    )


def test_firing_alert_is_a_rollback_breach() -> None:
    provider = FakeProvider({**HEALTHY_ANSWERS, "ALERTS": QueryResult(1.0)})
    _, verdict = evaluate(SPEC, CANARY_AT_5, provider, ANALYSIS_CONTEXT, T0)
    assert (verdict.kind, verdict.check, verdict.action) == (
        "breach",
        "alert:ModelHighErrorRate",
        "rollback",
    )


def test_empty_check_result_is_unavailable_not_healthy() -> None:
    provider = FakeProvider({"ALERTS": QueryResult(None, empty=True)})
    checks, verdict = evaluate(SPEC, CANARY_AT_5, provider, ANALYSIS_CONTEXT, T0)
    assert verdict.kind == "unavailable"
    assert checks[0].state == "Unavailable"
    assert "no data" in checks[0].message


def test_offline_prometheus_is_not_queried_and_everything_is_unavailable() -> None:
    provider = FakeProvider(dict(HEALTHY_ANSWERS), online=False)
    checks, verdict = evaluate(SPEC, CANARY_AT_5, provider, ANALYSIS_CONTEXT, T0)
    assert provider.queries == []
    assert verdict.kind == "unavailable"
    assert {c.state for c in checks} == {"Unavailable"}


def test_not_queried_again_before_the_interval() -> None:
    provider = FakeProvider(dict(HEALTHY_ANSWERS))
    checks, _ = evaluate(SPEC, CANARY_AT_5, provider, ANALYSIS_CONTEXT, T0)
    evaluated = CANARY_AT_5.with_checks(checks)
    provider.queries.clear()
    again, verdict = evaluate(
        SPEC, evaluated, provider, ANALYSIS_CONTEXT, T0 + timedelta(seconds=10)
    )
    assert provider.queries == []
    assert again == checks and verdict.kind == "healthy"
    evaluate(SPEC, evaluated, provider, ANALYSIS_CONTEXT, T0 + timedelta(seconds=15))
    assert len(provider.queries) == 3


def test_canary_without_traffic_is_pending_and_not_queried() -> None:
    provider = FakeProvider(dict(HEALTHY_ANSWERS))
    warming = CANARY_AT_5.model_copy(update={"weights": Weights(stable=100, canary=0)})
    checks, verdict = evaluate(SPEC, warming, provider, ANALYSIS_CONTEXT, T0)
    assert provider.queries == []
    assert verdict.kind == "pending"
    assert {c.state for c in checks} == {"Pending"}


def test_finished_rollout_keeps_its_last_checks() -> None:
    provider = FakeProvider({**HEALTHY_ANSWERS, "ALERTS": QueryResult(1.0)})
    checks, _ = evaluate(SPEC, CANARY_AT_5, provider, ANALYSIS_CONTEXT, T0)
    rolled_back = CANARY_AT_5.model_copy(update={"phase": "RolledBack", "checks": checks})
    provider.queries.clear()
    kept, _ = evaluate(SPEC, rolled_back, provider, ANALYSIS_CONTEXT, T0 + timedelta(minutes=5))
    assert kept == checks and provider.queries == []


def test_compare_to_stable_is_the_ratio() -> None:
    spec_dict = example_spec()
    spec_dict["analysis"]["checks"] = [
        {"name": "ttft", "builtin": "ttftP99", "compareTo": "stable", "breachWhen": "> 1.5"}
    ]
    spec_dict["analysis"]["alerts"] = []
    spec = parse_spec(spec_dict)

    class ByRevision(FakeProvider):
        def query(self, promql: str) -> QueryResult:
            self.queries.append(promql)
            return QueryResult(0.4 if 'revision="bbbb"' in promql else 0.2)

    checks, verdict = evaluate(spec, CANARY_AT_5, ByRevision(), ANALYSIS_CONTEXT, T0)
    assert checks[0].value == 2.0
    assert verdict.kind == "breach"


def test_no_checks_is_healthy_without_asking_anyone() -> None:
    spec_dict = example_spec()
    spec_dict["analysis"] = {}
    provider = FakeProvider(online=False)
    checks, verdict = evaluate(parse_spec(spec_dict), CANARY_AT_5, provider, ANALYSIS_CONTEXT, T0)
    assert (checks, verdict.kind, provider.queries) == ((), "healthy", [])
