"""The operator's metric providers, kept across ticks: one per config and namespace.

Building a provider per evaluation cost a new HTTP session (a TCP and TLS
connect per query) and a health request before every evaluation. The pool
hands each tick the provider built for the same config (by its canonical JSON:
the config's lists make the frozen model unhashable) in the same namespace
(its references are read there), so connections are reused and a successful
health check stands for `health_ttl` seconds. It holds at most `max_entries`
providers, drops the least recently used beyond that and any unused for
`idle_seconds`, closing their connections.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from modelrollout.analysis.provider import MetricProvider, References, UnconfiguredProvider
from modelrollout.analysis.registry import PROVIDERS, PooledProvider
from modelrollout.models.spec import Analysis


@dataclass
class _Entry:
    provider: PooledProvider
    last_used: float


class ProviderPool:
    def __init__(
        self,
        references_for: Callable[[str], References],
        in_flight: threading.Semaphore,
        clock: Callable[[], float] = time.monotonic,
        health_ttl: float = 15.0,
        max_entries: int = 128,
        idle_seconds: float = 600.0,
    ) -> None:
        self._references_for = references_for
        self._in_flight = in_flight
        self._clock = clock
        self._health_ttl = health_ttl
        self._max_entries = max_entries
        self._idle_seconds = idle_seconds
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def provider(self, analysis: Analysis, namespace: str) -> MetricProvider:
        """The provider of a rollout's analysis in `namespace`, built on first use."""
        config = analysis.metric_provider
        if config is None:
            return UnconfiguredProvider()
        key = (namespace, config.model_dump_json())
        now = self._clock()
        evicted: list[PooledProvider] = []
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                built = PROVIDERS[config.type](
                    config,
                    self._references_for(namespace),
                    self._in_flight,
                    clock=self._clock,
                    health_ttl=self._health_ttl,
                )
                entry = self._entries[key] = _Entry(built, now)
            entry.last_used = now
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                evicted.append(self._entries.popitem(last=False)[1].provider)
            for stale_key, stale in list(self._entries.items()):
                if now - stale.last_used <= self._idle_seconds:
                    break  # in order of use: the rest were used later
                evicted.append(self._entries.pop(stale_key).provider)
        for provider in evicted:
            provider.close()
        return entry.provider

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
