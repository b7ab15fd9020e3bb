"""Built-in checks query the right vLLM metrics for the right revision; results parse strictly."""

from __future__ import annotations

import math

import pytest

from modelrollout.analysis.builtins import queries_for, ratio
from modelrollout.analysis.prometheus import parse_query_result
from modelrollout.analysis.templates import render
from modelrollout.models import Check

pytestmark = pytest.mark.unit

CONTEXT = {
    "namespace": "ml",
    "rollout": "chat",
    "canary.revision": "bbbb",
    "stable.revision": "aaaa",
    "model": "chat",
}
CANARY = 'namespace="ml",rollout="chat",revision="bbbb"'


@pytest.mark.parametrize(
    ("builtin", "metric"),
    [
        ("latencyP99", "vllm:e2e_request_latency_seconds_bucket"),
        ("ttftP99", "vllm:time_to_first_token_seconds_bucket"),
        ("interTokenLatencyP99", "vllm:inter_token_latency_seconds_bucket"),
    ],
)
def test_latency_builtins_are_p99_of_the_canary_histogram(builtin: str, metric: str) -> None:
    check = Check.model_validate(
        {"name": "c", "builtin": builtin, "breachWhen": "> 1", "window": "2m"}
    )
    query = render(queries_for(check).canary, CONTEXT)
    assert query == (f"histogram_quantile(0.99, sum by (le) (rate({metric}{{{CANARY}}}[2m])))")
    assert queries_for(check).stable is None


def test_error_rate_counts_engine_errors_and_http_5xx_of_the_canary() -> None:
    check = Check.model_validate({"name": "e", "builtin": "errorRate", "breachWhen": "> 0.01"})
    query = render(queries_for(check).canary, CONTEXT)
    assert f'vllm:request_success_total{{{CANARY},finished_reason="error"}}[1m]' in query
    assert f"vllm:request_success_total{{{CANARY}}}[1m]" in query
    assert f'http_requests_total{{{CANARY},handler=~"/v1/.*",status=~"5.."}}[1m]' in query
    assert query.startswith("max(")
    assert "aaaa" not in query


def test_compare_to_stable_runs_the_same_query_for_the_stable_revision() -> None:
    check = Check.model_validate(
        {"name": "t", "builtin": "ttftP99", "compareTo": "stable", "breachWhen": "> 1.2"}
    )
    queries = queries_for(check)
    assert queries.stable is not None
    stable = render(queries.stable, CONTEXT)
    assert render(queries.canary, CONTEXT).replace("bbbb", "aaaa") == stable


@pytest.mark.parametrize(
    ("canary", "stable", "expected"),
    [(0.2, 0.1, 2.0), (0.0, 0.0, 1.0), (0.1, 0.0, math.inf), (0.0, 0.5, 0.0)],
)
def test_ratio(canary: float, stable: float, expected: float) -> None:
    assert ratio(canary, stable) == expected


def test_one_series_is_its_value() -> None:
    result = parse_query_result("q", [{"metric": {}, "value": [1.7e9, "0.25"]}])
    assert (result.value, result.error, result.empty) == (0.25, None, False)


def test_scalar_result() -> None:
    assert parse_query_result("q", [1.7e9, "3"]).value == 3.0


def test_empty_result_is_empty_not_zero() -> None:
    result = parse_query_result("q", [])
    assert (result.value, result.empty) == (None, True)


def test_nan_is_no_data() -> None:
    result = parse_query_result("q", [{"metric": {}, "value": [1.7e9, "NaN"]}])
    assert result.value is None
    assert result.error is not None and "NaN" in result.error


def test_inf_is_a_value() -> None:
    assert parse_query_result("q", [{"metric": {}, "value": [1.7e9, "+Inf"]}]).value == math.inf


def test_several_series_is_an_error_naming_the_query() -> None:
    result = parse_query_result(
        "rate(x[1m])",
        [{"metric": {"pod": "a"}, "value": [1, "1"]}, {"metric": {"pod": "b"}, "value": [1, "2"]}],
    )
    assert result.value is None
    assert result.error is not None
    assert "2 series" in result.error and "rate(x[1m])" in result.error


@pytest.mark.parametrize("raw", [None, "x", [{"metric": {}}], [{"value": [1, 2]}], {"a": 1}])
def test_malformed_results_are_errors(raw: object) -> None:
    result = parse_query_result("q", raw)
    assert result.value is None and result.error
