"""Built-in checks on vLLM's metric names, which both serving engines export.

Label names (the scrape config's contract): the chart's PodMonitor (or its
scrape job, which the local cluster's Prometheus runs) relabels the pod labels
`modelrollout.dev/rollout`, `modelrollout.dev/revision` and
`modelrollout.dev/role` to the series labels `rollout`, `revision` and
`role`, beside `namespace`. Built-ins select a revision by
`namespace`, `rollout` and `revision`, not by `role`: a promoted canary keeps
its revision, so its series stay continuous across promotion.

Like Flagger's `request-success-rate`/`request-duration` built-ins, each is
a ratio of counter rates or a histogram quantile over `window` (Argo
Rollouts leaves such queries to the user). The differences:

- errorRate is a share (0..1), not a percentage, and counts two sources:
  the engine's finished requests with `finished_reason="error"` over all
  finished requests, and HTTP 5xx over all HTTP responses of the OpenAI
  routes (`handler=~"/v1/.*"`, so probes and scrapes do not dilute it) from
  `http_requests_total` (prometheus-fastapi-instrumentator, which vLLM uses,
  groups statuses as `5xx`). It takes the larger of the two: a request that
  fails inside the engine is usually also a 5xx, so adding them would count
  it twice, while a request that fails before the engine (tokenizer, queue)
  only shows as a 5xx. Either source may be absent; a missing error series
  counts as zero errors (prometheus_client creates a labelled series only on
  its first increment). No requests at all is no data, never a pass.
- Latency quantiles are in seconds.
- `compareTo: stable` runs the same query for the stable revision and
  yields canary / stable (see `ratio`), e.g. "TTFT no worse than 1.2x stable".

The comparison builtins (outputAgreement, exactMatchRate, lengthRatio,
emptyAnswerRate, jsonValidity, latencyRatio) read the series of the shadow
comparison proxy (modelrollout/shadowproxy/), selected by `namespace`,
`rollout` and the proxy's own `candidate` label (the candidate revision, so a
later shadow never reads an earlier one's comparisons). Each is a ratio of
counter increases over `window`, and has a value only once at least
`minSamples` comparisons (of the kind it measures) fall within the window:
fewer is no data, never a pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelrollout.models.spec import COMPARISON_BUILTINS, DEFAULT_MIN_SAMPLES, BuiltinCheck, Check
from modelrollout.shadowproxy.metrics import (
    COMPARISONS,
    EMPTY_ANSWERS,
    EXACT_COMPARISONS,
    EXACT_MATCHES,
    JSON_REQUESTS,
    JSON_VALID,
    LATENCY,
    LENGTH_RATIO,
    TOKEN_AGREEMENT,
)

_SELECTOR = 'namespace="{{namespace}}",rollout="{{rollout}}",revision="{{%s.revision}}"'

_HISTOGRAMS: dict[str, str] = {
    "latencyP99": "vllm:e2e_request_latency_seconds",
    "ttftP99": "vllm:time_to_first_token_seconds",
    "interTokenLatencyP99": "vllm:inter_token_latency_seconds",
}


@dataclass(frozen=True)
class CheckQueries:
    """Templates to render: the canary's query, and the stable's for `compareTo: stable`."""

    canary: str
    stable: str | None = None


def _error_rate(selector: str, window: str) -> str:
    engine = (
        f'(sum(rate(vllm:request_success_total{{{selector},finished_reason="error"}}[{window}]))'
        " or vector(0))"
        f" / sum(rate(vllm:request_success_total{{{selector}}}[{window}]))"
    )
    http = (
        f'(sum(rate(http_requests_total{{{selector},handler=~"/v1/.*",status=~"5.."}}[{window}]))'
        " or vector(0))"
        f' / sum(rate(http_requests_total{{{selector},handler=~"/v1/.*"}}[{window}]))'
    )
    return (
        f'max(label_replace({engine}, "source", "engine", "", "")'
        f' or label_replace({http}, "source", "http", "", ""))'
    )


def _quantile(metric: str, selector: str, window: str) -> str:
    return f"histogram_quantile(0.99, sum by (le) (rate({metric}_bucket{{{selector}}}[{window}])))"


_COMPARISON_SELECTOR = (
    'namespace="{{namespace}}",rollout="{{rollout}}",candidate="{{canary.revision}}"'
)


_CANDIDATE = ',side="candidate"'
_STABLE = ',side="stable"'


def _increase(metric: str, window: str, labels: str = "") -> str:
    return f"sum(increase({metric}{{{_COMPARISON_SELECTOR}{labels}}}[{window}]))"


def comparison_query(name: BuiltinCheck, window: str, min_samples: int) -> str:
    """A comparison builtin over `window`: a value once `min_samples` comparisons are in it."""
    compared = _increase(COMPARISONS, window)
    queries: dict[str, tuple[str, str]] = {
        "outputAgreement": (
            f"{_increase(TOKEN_AGREEMENT + '_sum', window)}"
            f" / {_increase(TOKEN_AGREEMENT + '_count', window)}",
            compared,
        ),
        "exactMatchRate": (
            f"({_increase(EXACT_MATCHES, window)} or vector(0))"
            f" / {_increase(EXACT_COMPARISONS, window)}",
            _increase(EXACT_COMPARISONS, window),
        ),
        "lengthRatio": (
            f"{_increase(LENGTH_RATIO + '_sum', window)}"
            f" / {_increase(LENGTH_RATIO + '_count', window)}",
            compared,
        ),
        "emptyAnswerRate": (
            f"({_increase(EMPTY_ANSWERS, window, _CANDIDATE)} or vector(0)) / {compared}",
            compared,
        ),
        "jsonValidity": (
            f"({_increase(JSON_VALID, window, _CANDIDATE)} or vector(0))"
            f" / {_increase(JSON_REQUESTS, window)}",
            _increase(JSON_REQUESTS, window),
        ),
        "latencyRatio": (
            f"{_increase(LATENCY + '_sum', window, _CANDIDATE)}"
            f" / {_increase(LATENCY + '_sum', window, _STABLE)}",
            compared,
        ),
    }
    value, samples = queries[name]
    return f"({value}) and on() ({samples} >= {min_samples})"


def builtin_query(name: BuiltinCheck, role: str, window: str) -> str:
    """The query template of a built-in check for `role` (canary|stable) over `window`."""
    if name in COMPARISON_BUILTINS:
        return comparison_query(name, window, DEFAULT_MIN_SAMPLES)
    selector = _SELECTOR % role
    if name == "errorRate":
        return _error_rate(selector, window)
    return _quantile(_HISTOGRAMS[name], selector, window)


def queries_for(check: Check) -> CheckQueries:
    """The query templates a check runs (parse_spec guarantees query xor builtin)."""
    if check.builtin is None:
        if check.query is None:
            raise ValueError(f"check {check.name!r} has neither query nor builtin")
        return CheckQueries(check.query)
    if check.builtin in COMPARISON_BUILTINS:
        return CheckQueries(
            comparison_query(check.builtin, check.window, check.min_samples or DEFAULT_MIN_SAMPLES)
        )
    canary = builtin_query(check.builtin, "canary", check.window)
    if check.compare_to == "stable":
        return CheckQueries(canary, builtin_query(check.builtin, "stable", check.window))
    return CheckQueries(canary)


def ratio(canary: float, stable: float) -> float:
    """canary / stable; two zeros are equal (1.0), anything over a zero is infinitely worse."""
    if stable == 0:
        return 1.0 if canary == 0 else float("inf")
    return canary / stable
