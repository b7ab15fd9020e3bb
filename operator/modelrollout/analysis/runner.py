"""One evaluation of a rollout's analysis: the provider renders and runs queries; assess.

Queries run sequentially, once per check (twice with `compareTo: stable`) and
once per alert, each bounded by the provider's timeout; an offline provider
is asked nothing, so a dead Prometheus costs one timeout per tick, not one
per check.

Analysis runs while a canary is live (Progressing or Paused) and receives
traffic: a canary at weight 0 has no requests, so its checks stay Pending
rather than collecting "no data" that would count towards
`whenMetricsUnavailable`. In other phases the stored checks are kept as the
last word (a rolled-back rollout still shows the breach that caused it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from modelrollout.analysis.assessment import (
    AnalysisVerdict,
    Sample,
    alert_check_name,
    assess,
    pending_checks,
    verdict_of,
)
from modelrollout.analysis.builtins import ratio
from modelrollout.analysis.provider import MetricProvider, QueryResult
from modelrollout.analysis.pushed import matching_alerts
from modelrollout.analysis.templates import TemplateError
from modelrollout.models.durations import parse_duration
from modelrollout.models.experiment import segment_reaches_canary
from modelrollout.models.spec import Alert, Check, ModelRolloutSpec
from modelrollout.models.status import ACTIVE_CANARY_PHASES, CheckStatus, ModelRolloutStatus


def analysis_active(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> bool:
    # A blue-green preview is analysed at weight 0 (pre-promotion checks), a shadow
    # on its mirrored traffic.
    return (
        status.phase in ACTIVE_CANARY_PHASES
        and status.canary_revision is not None
        and (
            status.weights.canary > 0
            or status.weights.mirror > 0
            or spec.strategy.blue_green is not None
            or segment_reaches_canary(spec, status)
        )
    )


def awaits_traffic(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> bool:
    """A live canary that no request reaches yet: its checks stay Pending, nothing is queried."""
    # A blue-green preview has no user traffic by design: its pre-promotion checks
    # run anyway, against what test traffic it gets.
    return (
        status.phase in ACTIVE_CANARY_PHASES
        and status.weights.canary == 0
        and status.weights.mirror == 0
        and spec.strategy.blue_green is None
        # An experiment's segment reaches the canary at weight 0.
        and not segment_reaches_canary(spec, status)
    )


def analysis_due(spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime) -> bool:
    """Whether this tick should query: active, and `interval` since the last evaluation."""
    if not analysis_active(spec, status):
        return False
    evaluated = [c.last_evaluated for c in status.checks if c.last_evaluated is not None]
    if not evaluated or len(status.checks) != len(pending_checks(spec.analysis)):
        return True
    return (now - max(evaluated)).total_seconds() >= parse_duration(spec.analysis.interval)


def analysis_context(
    namespace: str, name: str, spec: ModelRolloutSpec, status: ModelRolloutStatus
) -> dict[str, str]:
    """The template variables of a rollout's queries and matchLabels."""
    return {
        "namespace": namespace,
        "rollout": name,
        "canary.revision": status.canary_revision or "",
        "stable.revision": status.stable_revision or "",
        "model": spec.model.name,
    }


def evaluate(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    provider: MetricProvider,
    context: Mapping[str, str],
    now: datetime,
    pushed: Sequence[Mapping[str, str]] = (),
) -> tuple[tuple[CheckStatus, ...], AnalysisVerdict]:
    """This tick's checks and verdict; queries only when `analysis_due` or an alert was pushed.

    `context` holds the template variables (`analysis_context`). `pushed`
    holds the labels of firing alerts Alertmanager pushed for this rollout
    (pushed.py): an alert entry one of them matches fires now, unasked.
    """
    if not spec.analysis.checks and not spec.analysis.alerts:
        return (), AnalysisVerdict.healthy()
    if awaits_traffic(spec, status):
        return pending_checks(spec.analysis), AnalysisVerdict.pending(
            "the canary receives no traffic yet"
        )
    firing = {alert_check_name(alert.alertname) for alert in matching_alerts(spec, pushed, context)}
    if not firing and not analysis_due(spec, status, now):
        return status.checks, verdict_of(spec.analysis, status.checks)
    samples: dict[str, Sample] = {name: Sample(1.0) for name in firing}
    offline = None if provider.is_online() else Sample.unavailable(provider.offline_reason())
    for check in spec.analysis.checks:
        samples[check.name] = (
            offline if offline is not None else _check_sample(provider, check, context)
        )
    for alert in spec.analysis.alerts:
        name = alert_check_name(alert.alertname)
        if name not in firing:
            samples[name] = (
                offline if offline is not None else _alert_sample(provider, alert, context)
            )
    return assess(spec.analysis, status.checks, samples, now)


def _check_sample(provider: MetricProvider, check: Check, context: Mapping[str, str]) -> Sample:
    queries = provider.check_queries(check)
    canary_sample = _query(provider, queries.canary, context)
    if queries.stable is None or canary_sample.value is None:
        return canary_sample
    stable_sample = _query(provider, queries.stable, context)
    if stable_sample.value is None:
        return Sample.unavailable(f"stable: {stable_sample.error}")
    return Sample(ratio(canary_sample.value, stable_sample.value))


def _query(provider: MetricProvider, template: str, context: Mapping[str, str]) -> Sample:
    try:
        query = provider.render_query(template, context)
    except TemplateError as error:
        return Sample.unavailable(str(error))
    return _sample(provider.query(query), query)


def _sample(result: QueryResult, query: str) -> Sample:
    if result.value is not None:
        return Sample(result.value)
    if result.empty:
        return Sample.unavailable(f"query returned no data: {query}")
    return Sample.unavailable(result.error or "no value")


def _alert_sample(provider: MetricProvider, alert: Alert, context: Mapping[str, str]) -> Sample:
    try:
        query = provider.alert_query(alert, context)
    except TemplateError as error:
        return Sample.unavailable(str(error))
    result = provider.query(query)
    if result.empty:
        # No firing series is the healthy answer for an alert (the provider did answer).
        return Sample(0.0)
    return _sample(result, query)
