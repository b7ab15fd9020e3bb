"""An A/B experiment's groups measured in Prometheus: requests, error rate, TTFT p99 and the
analysis' builtin checks, for stable (group A) and the canary (group B) over the same window.

The window is the experiment's own (from its step's start), not a check's `window`: both groups
are compared on the same requests the experiment routed. The figures go to the pure verdict
(engine/strategies/experiment.py); a query without data leaves its figure None, never 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from modelrollout.analysis.builtins import builtin_query
from modelrollout.analysis.provider import MetricProvider
from modelrollout.analysis.templates import TemplateError
from modelrollout.models.spec import BuiltinCheck, ModelRolloutSpec

# What the report shows for each group, beside the builtins the checks use.
REPORTED: tuple[BuiltinCheck, ...] = ("errorRate", "ttftP99")

_SELECTOR = 'namespace="{{namespace}}",rollout="{{rollout}}",revision="{{%s.revision}}"'


def requests_query(role: str, window: str) -> str:
    """Requests `role`'s revision answered over `window`: the larger of the engine's finished
    requests and the HTTP responses of the OpenAI routes (a request failing before the engine
    is only the latter), as builtin errorRate counts them."""
    selector = _SELECTOR % role
    engine = f"sum(increase(vllm:request_success_total{{{selector}}}[{window}]))"
    http = f'sum(increase(http_requests_total{{{selector},handler=~"/v1/.*"}}[{window}]))'
    return (
        f'max(label_replace({engine}, "source", "engine", "", "")'
        f' or label_replace({http}, "source", "http", "", ""))'
    )


@dataclass(frozen=True)
class GroupFigures:
    """One group's figures; None where the query had no data."""

    requests: float | None = None
    values: Mapping[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentFigures:
    """Both groups over `window_seconds` for the experiment step `step` of `revision`."""

    revision: str
    step: int
    window_seconds: int
    a: GroupFigures
    b: GroupFigures
    # Why nothing could be measured (Prometheus offline), else None.
    error: str | None = None


def builtins_measured(spec: ModelRolloutSpec) -> tuple[BuiltinCheck, ...]:
    """The builtins each group is measured on: the reported ones and the checks'."""
    names = list(REPORTED)
    for check in spec.analysis.checks:
        if check.builtin is not None and check.builtin not in names:
            names.append(check.builtin)
    return tuple(names)


def measure(
    spec: ModelRolloutSpec,
    provider: MetricProvider,
    context: Mapping[str, str],
    revision: str,
    step: int,
    window_seconds: int,
) -> ExperimentFigures:
    """Query both groups over the last `window_seconds` (at least 1)."""
    window = f"{max(window_seconds, 1)}s"
    if not provider.is_online():
        empty = GroupFigures()
        return ExperimentFigures(
            revision, step, window_seconds, empty, empty, provider.offline_reason()
        )

    def value(template: str) -> float | None:
        try:
            return provider.query(provider.render_query(template, context)).value
        except TemplateError:
            return None

    def group(role: str) -> GroupFigures:
        return GroupFigures(
            value(requests_query(role, window)),
            {name: value(builtin_query(name, role, window)) for name in builtins_measured(spec)},
        )

    return ExperimentFigures(revision, step, window_seconds, group("stable"), group("canary"))
