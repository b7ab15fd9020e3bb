"""The Prometheus MetricProvider, on prometheus-api-client.

No hanging calls: one request per query, no retries (the next tick is the
retry), and the rollout's `analysis.prometheus.timeout` on connect and read.
A query must yield exactly one sample; empty, NaN and multi-series results
are reported as such, never turned into a number.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from modelrollout.analysis.provider import QueryResult
from modelrollout.models.durations import parse_duration
from modelrollout.models.spec import PrometheusSource


class PrometheusProvider:
    def __init__(self, source: PrometheusSource, in_flight: threading.Semaphore) -> None:
        # `in_flight` is shared by every provider of the operator: at most that many
        # requests (queries and health checks) wait on Prometheus at once, however
        # many ticks run, so a slow Prometheus is not made slower by a pile-up.
        self._in_flight = in_flight
        self._timeout = parse_duration(source.timeout)
        self._client = PrometheusConnect(
            url=source.address.rstrip("/"),
            retry=Retry(total=0, connect=0, read=0, redirect=0, status=0),
            timeout=self._timeout,
        )

    def query(self, promql: str) -> QueryResult:
        try:
            with self._in_flight:
                raw = self._client.custom_query(promql, timeout=self._timeout)
        except Exception as error:  # any failure of the call is "unavailable", never a crash
            return QueryResult(None, error=f"query failed: {type(error).__name__}: {error}")
        return parse_query_result(promql, raw)

    def is_online(self) -> bool:
        try:
            with self._in_flight:
                return bool(self._client.check_prometheus_connection())
        except Exception:
            return False


def parse_query_result(promql: str, raw: Any) -> QueryResult:
    """Interpret `data.result` of an instant query (a vector or a scalar)."""
    if _is_sample(raw):
        return _sample_value(raw)
    if not isinstance(raw, list):
        return QueryResult(None, error=f"unexpected result {raw!r:.200} for query: {promql}")
    if not raw:
        return QueryResult(None, empty=True)
    if len(raw) > 1:
        return QueryResult(
            None,
            error=f"query returned {len(raw)} series, expected one (aggregate it): {promql}",
        )
    series = raw[0]
    if not isinstance(series, dict) or not _is_sample(series.get("value")):
        return QueryResult(None, error=f"unexpected series {series!r:.200} for query: {promql}")
    return _sample_value(series["value"])


def _is_sample(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and isinstance(value[0], int | float)
        and isinstance(value[1], str)
    )


def _sample_value(sample: Any) -> QueryResult:
    try:
        value = float(sample[1])
    except ValueError:
        return QueryResult(None, error=f"sample {sample[1]!r} is not a number")
    if math.isnan(value):
        # e.g. 0/0: a ratio over a window without requests. No data, not a pass.
        return QueryResult(None, error="query returned NaN (no requests in the window?)")
    return QueryResult(value)
