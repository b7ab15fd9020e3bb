"""The Prometheus MetricProvider, on prometheus-api-client.

No hanging calls: one request per query, no retries (the next tick is the
retry), and the provider's `timeout` on connect and read. A query must
yield exactly one sample; empty, NaN and multi-series results are reported
as such, never turned into a number.

Credentials, CA and headers are read from the cluster when the provider is
first used (a tick that does not evaluate reads no Secret). The operator keeps
one provider per config and namespace (analysis/pool.py), so its session and
connections last across ticks: a successful health check is remembered for
`health_ttl` seconds, and the references are read again whenever the memo has
expired, which any failed query or answer (401/403 included) brings about at
once, so a rotated Secret is used by the next evaluation after a failure and
within `health_ttl` otherwise. Templates are
PromQL: values are quoted as PromQL strings (analysis/templates.py); the
built-in checks are PromQL on vLLM's metric names (analysis/builtins.py).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import requests
from prometheus_api_client import PrometheusConnect
from requests.structures import CaseInsensitiveDict
from requests.utils import default_headers, get_environ_proxies
from urllib3.util.retry import Retry

from modelrollout.analysis.builtins import CheckQueries, queries_for
from modelrollout.analysis.http import http_settings
from modelrollout.analysis.provider import (
    NoReferences,
    QueryResult,
    References,
    UnresolvedReference,
)
from modelrollout.analysis.templates import escape_promql_string, render, render_label_value
from modelrollout.models.durations import parse_duration
from modelrollout.models.spec import Alert, Check, PrometheusProviderSpec

PROVIDER_PATH = "spec.analysis.provider"


def alert_query(alert: Alert, context: Mapping[str, str]) -> str:
    """How many ALERTS series fire for this alertname and the rendered matchLabels."""
    matchers = [
        f'alertname="{escape_promql_string(alert.alertname)}"',
        'alertstate="firing"',
        *(
            f'{key}="{render_label_value(value, context)}"'
            for key, value in sorted(alert.match_labels.items())
        ),
    ]
    return f"count(ALERTS{{{','.join(matchers)}}})"


class PromQL:
    """PromQL templating: the part of the Prometheus provider that needs no server.

    Rendered queries are remembered by template and variables, so per revision:
    a rollout evaluating every interval renders its queries once per canary,
    not at every evaluation (checking where each variable stands in the
    template was a tenth of an evaluating tick). At most `max_rendered` are
    kept, the least recently used dropped first; a template that fails to
    render is not remembered.
    """

    def __init__(self, max_rendered: int = 4096) -> None:
        self._rendered: OrderedDict[tuple[str, ...], str] = OrderedDict()
        self._max_rendered = max_rendered
        self._rendered_lock = threading.Lock()
        self.renders = 0  # how many queries were rendered, not taken from memory

    def _remembered(self, key: tuple[str, ...], render_now: Callable[[], str]) -> str:
        with self._rendered_lock:
            query = self._rendered.get(key)
            if query is not None:
                self._rendered.move_to_end(key)
                return query
        query = render_now()
        with self._rendered_lock:
            self.renders += 1
            self._rendered[key] = query
            while len(self._rendered) > self._max_rendered:
                self._rendered.popitem(last=False)
        return query

    def render_query(self, template: str, context: Mapping[str, str]) -> str:
        return self._remembered(
            ("query", template, *_flat(context)), lambda: render(template, context)
        )

    def alert_query(self, alert: Alert, context: Mapping[str, str]) -> str:
        return self._remembered(
            ("alert", alert.alertname, *_flat(alert.match_labels), "", *_flat(context)),
            lambda: alert_query(alert, context),
        )

    def check_queries(self, check: Check) -> CheckQueries:
        return queries_for(check)


class PrometheusProvider(PromQL):
    config_model: ClassVar[type[PrometheusProviderSpec]] = PrometheusProviderSpec

    def __init__(
        self,
        config: PrometheusProviderSpec,
        references: References | None,
        in_flight: threading.Semaphore,
        clock: Callable[[], float] = time.monotonic,
        health_ttl: float = 0.0,
    ) -> None:
        super().__init__()
        # `in_flight` is shared by every provider of the operator: at most that many
        # requests (queries and health checks) wait on Prometheus at once, however
        # many ticks run, so a slow Prometheus is not made slower by a pile-up.
        self._in_flight = in_flight
        self._config = config
        self._references: References = references or NoReferences()
        self._url = config.address.rstrip("/")
        self._timeout = parse_duration(config.timeout)
        self._session: requests.Session | None = None
        self._client: PrometheusConnect | None = None
        self._offline_reason = "metric provider is unreachable"
        self._clock = clock
        self._health_ttl = health_ttl
        # Until when a successful health check stands (clock time); None: ask again.
        self._healthy_until: float | None = None
        self._lock = threading.Lock()

    def _apply_settings(self, session: requests.Session) -> None:
        """Read the references and set headers, credentials and CA; raises UnresolvedReference."""
        settings = http_settings(
            self._config.auth,
            self._config.tls,
            self._config.headers,
            self._references,
            PROVIDER_PATH,
        )
        # A new mapping swapped in whole: a request of another tick sees old or new headers.
        headers: CaseInsensitiveDict[str | bytes] = CaseInsensitiveDict(default_headers())
        headers.update(settings.headers)
        session.headers = headers
        session.auth = settings.basic_auth
        session.verify = settings.verify

    def _connect(self, reread: bool = False) -> tuple[requests.Session, PrometheusConnect]:
        """The session and client, built on first use; raises UnresolvedReference.

        `reread` reads the references again into the existing session (its connections stay).
        """
        with self._lock:
            if self._session is None or self._client is None:
                session = requests.Session()
                # The environment is read once, not at every request: requests' per-request
                # lookup (proxies, NO_PROXY, ~/.netrc) was a quarter of a query's CPU.
                # HTTP(S)_PROXY and NO_PROXY still apply to this one address; the CA is the
                # configured one, never REQUESTS_CA_BUNDLE's.
                session.trust_env = False
                session.proxies = get_environ_proxies(self._url)
                self._apply_settings(session)
                self._client = PrometheusConnect(
                    url=self._url,
                    retry=Retry(total=0, connect=0, read=0, redirect=0, status=0),
                    timeout=self._timeout,
                    session=session,
                )
                self._session = session
            elif reread:
                self._apply_settings(self._session)
            return self._session, self._client

    def _forget_health(self) -> None:
        with self._lock:
            self._healthy_until = None

    def close(self) -> None:
        """Close the session's connections (the pool drops this provider)."""
        with self._lock:
            if self._session is not None:
                self._session.close()

    def query(self, query: str) -> QueryResult:
        try:
            _, client = self._connect()
        except UnresolvedReference as error:
            return QueryResult(None, error=str(error))
        try:
            with self._in_flight:
                raw = client.custom_query(query, timeout=self._timeout)
        except Exception as error:  # any failure of the call is "unavailable", never a crash
            # The next evaluation checks health again and re-reads the references
            # (a 401/403 here may be a rotated Secret).
            self._forget_health()
            return QueryResult(None, error=f"query failed: {type(error).__name__}: {error}")
        return parse_query_result(query, raw)

    def is_online(self) -> bool:
        with self._lock:
            if self._healthy_until is not None and self._clock() < self._healthy_until:
                return True
        try:
            session, _ = self._connect(reread=True)
        except UnresolvedReference as error:
            self._offline_reason = str(error)
            return False
        try:
            with self._in_flight:
                # The query API itself, not the web UI's `/` that prometheus-api-client
                # probes: Mimir, Grafana Cloud and Amazon Managed Prometheus serve the API
                # under a prefix with nothing at `/`, and a Prometheus built without its
                # UI assets answers `/` with a 500.
                response = session.get(
                    f"{self._url}/api/v1/query", params={"query": "1"}, timeout=self._timeout
                )
        except requests.exceptions.SSLError as error:
            self._offline_reason = (
                f"metric provider's TLS certificate was not accepted ({PROVIDER_PATH}.tls): {error}"
            )
            return False
        except Exception as error:  # any failure of the call is "offline", never a crash
            self._offline_reason = (
                f"metric provider is unreachable: {type(error).__name__}: {error}"
            )
            return False
        if response.ok:
            with self._lock:
                self._healthy_until = self._clock() + self._health_ttl
            return True
        self._offline_reason = f"metric provider answered {response.status_code} {response.reason}"
        if response.status_code in (401, 403):
            self._offline_reason += f": check the credentials ({PROVIDER_PATH}.auth)"
        return False

    def offline_reason(self) -> str:
        return self._offline_reason


def _flat(mapping: Mapping[str, str]) -> tuple[str, ...]:
    """Keys and values in key order, for a key of the rendered queries."""
    return tuple(item for pair in sorted(mapping.items()) for item in pair)


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
