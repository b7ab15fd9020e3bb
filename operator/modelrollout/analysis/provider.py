"""Where metric values come from: the MetricProvider protocol and its registry.

A provider answers one PromQL-like query with one number, or says why it
cannot. It never raises and never blocks longer than its configured timeout:
the tick that calls it moves every rollout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from modelrollout.models.spec import PrometheusSource


@dataclass(frozen=True)
class QueryResult:
    """One query's answer.

    `value` is a number (possibly +/-Inf) when the query returned exactly one
    finite-or-infinite sample; otherwise None, with `empty` True when the
    query matched nothing and `error` saying what went wrong otherwise.
    """

    value: float | None
    error: str | None = None
    empty: bool = False


class MetricProvider(Protocol):
    def query(self, promql: str) -> QueryResult: ...

    def is_online(self) -> bool: ...


class UnconfiguredProvider:
    """Stands in where a rollout names no metric source: every answer is 'unavailable'."""

    def query(self, promql: str) -> QueryResult:
        return QueryResult(None, error="no metric provider configured (spec.analysis.prometheus)")

    def is_online(self) -> bool:
        return False


def _prometheus(source: PrometheusSource, in_flight: threading.Semaphore) -> MetricProvider:
    # Imported here: prometheus.py imports QueryResult from this module.
    from modelrollout.analysis.prometheus import PrometheusProvider

    return PrometheusProvider(source, in_flight)


# Provider kinds by the key that names them under spec.analysis.
PROVIDERS: dict[str, Callable[[PrometheusSource, threading.Semaphore], MetricProvider]] = {
    "prometheus": _prometheus
}


def provider_for(source: PrometheusSource | None, in_flight: threading.Semaphore) -> MetricProvider:
    """The provider for a rollout's `spec.analysis.prometheus` (None: unconfigured).

    `in_flight` bounds the requests waiting on providers at once, shared by all of them.
    """
    if source is None:
        return UnconfiguredProvider()
    return PROVIDERS["prometheus"](source, in_flight)
