"""Metric providers by the `type` of `spec.analysis.provider`: one line per provider.

A provider class declares its config model (`config_model`, whose `type`
literal is its key here) and is built from that config and the References
it may read. Adding one: its module, a line here, its config model in
models/spec.py (a member of MetricProviderSpec) and its CRD section.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel

from modelrollout.analysis.prometheus import PrometheusProvider
from modelrollout.analysis.provider import MetricProvider, References, UnconfiguredProvider
from modelrollout.models.spec import Analysis


class PooledProvider(MetricProvider, Protocol):
    """A provider the operator keeps across ticks (analysis/pool.py)."""

    def close(self) -> None:
        """Release its connections: the pool has dropped it."""
        ...


class ProviderClass(Protocol):
    """A provider class: built from its config model and the references it may read.

    A success of `is_online()` stands for `health_ttl` seconds of `clock` (0: ask each time).
    """

    @property
    def config_model(self) -> type[BaseModel]: ...

    def __call__(
        self,
        config: Any,
        references: References,
        in_flight: threading.Semaphore,
        clock: Callable[[], float] = ...,
        health_ttl: float = ...,
    ) -> PooledProvider: ...


PROVIDERS: dict[str, ProviderClass] = {
    "prometheus": PrometheusProvider,
}


def provider_for(
    analysis: Analysis, references: References, in_flight: threading.Semaphore
) -> MetricProvider:
    """The provider of a rollout's analysis (`provider`, or the older `prometheus`).

    `in_flight` bounds the requests waiting on providers at once, shared by all of them.
    """
    config = analysis.metric_provider
    if config is None:
        return UnconfiguredProvider()
    return PROVIDERS[config.type](config, references, in_flight)
