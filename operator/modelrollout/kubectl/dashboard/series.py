"""Each check's value over time, from the Prometheus the rollout's spec.analysis names.

`series_request` builds the range query (pure): the check's own PromQL (a
built-in's too, with `compareTo: stable` as canary / stable) rendered with
the same template variables the operator uses, over the last RANGE_SECONDS
at the analysis interval. `SeriesCache` keeps one answer per rollout,
revision, check and step, fetched again only when older than the analysis
interval, so any number of open pages costs one query per check per interval.

`PrometheusRange` asks with the rollout's own provider settings, as the
operator's analysis does (analysis/http.py): the bearer token, basic auth,
headers and CA that spec.analysis.provider names, read from the rollout's
namespace with the dashboard's credentials (the user's kubeconfig, or the
chart's ServiceAccount) at each query, so a rotated Secret is used at once.
"""

from __future__ import annotations

import math
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from modelrollout.analysis.builtins import queries_for
from modelrollout.analysis.http import HttpSettings, http_settings
from modelrollout.analysis.provider import References, UnresolvedReference
from modelrollout.analysis.templates import TemplateError, render
from modelrollout.kube.api import KubeApi
from modelrollout.kube.references import KubeReferences
from modelrollout.kubectl.render import Rollout
from modelrollout.models.durations import parse_duration
from modelrollout.models.spec import PrometheusProviderSpec, Threshold

RANGE_SECONDS = 3600
MAX_POINTS = 720
CACHE_ENTRIES = 512


class SeriesUnavailable(Exception):
    """Why there is no series to plot; the page shows the message."""


@dataclass(frozen=True)
class SeriesRequest:
    key: tuple[str, str, str, int]
    """(namespace/name, revision, check, step): what the answer is cached under."""
    address: str
    query: str
    start: float
    end: float
    step_seconds: float
    timeout_seconds: float
    threshold: str
    fresh_seconds: float
    """How long an answer stays good: the analysis interval."""
    provider: PrometheusProviderSpec | None = None
    """The rollout's provider settings (auth, TLS, headers); None: a plain GET."""
    provider_path: str = "spec.analysis.provider"
    """Where the provider is written in the spec, for messages."""


def series_request(body: dict[str, Any], check_name: str, now: datetime) -> SeriesRequest:
    rollout = Rollout.of(body)
    if rollout.spec is None:
        raise SeriesUnavailable("the spec does not parse (see the InvalidSpec condition)")
    analysis = rollout.spec.analysis
    check = next((c for c in analysis.checks if c.name == check_name), None)
    if check is None:
        raise SeriesUnavailable(f"spec.analysis.checks has no check named {check_name!r}")
    provider = analysis.metric_provider
    if provider is None:
        raise SeriesUnavailable(
            "spec.analysis.prometheus (or spec.analysis.provider) is not set: no address to query"
        )
    status = rollout.status
    revision = status.canary_revision or status.stable_revision
    if revision is None:
        raise SeriesUnavailable("no revision is serving yet")
    context = {
        "namespace": rollout.namespace,
        "rollout": rollout.name,
        "canary.revision": revision,
        "stable.revision": status.stable_revision or revision,
        "model": rollout.spec.model.name,
    }
    queries = queries_for(check)
    try:
        query = render(queries.canary, context)
        if queries.stable is not None:
            query = f"({query}) / ({render(queries.stable, context)})"
    except TemplateError as error:
        raise SeriesUnavailable(f"spec.analysis.checks[{check_name}].query: {error}") from None
    interval = parse_duration(analysis.interval)
    end = now.timestamp()
    start = end - RANGE_SECONDS
    return SeriesRequest(
        key=(f"{rollout.namespace}/{rollout.name}", revision, check.name, status.current_step or 0),
        address=str(provider.address).rstrip("/"),
        query=query,
        start=start,
        end=end,
        step_seconds=max(interval, RANGE_SECONDS / MAX_POINTS, 1.0),
        timeout_seconds=parse_duration(provider.timeout),
        threshold=check.breach_when,
        fresh_seconds=max(interval, 1.0),
        provider=provider,
        provider_path=analysis.provider_path,
    )


def plot_data(request: SeriesRequest, answer: dict[str, Any]) -> dict[str, Any]:
    """A Prometheus range answer as uPlot's columns: times, values, the threshold, breaches."""
    if answer.get("status") != "success":
        raise SeriesUnavailable(f"Prometheus: {answer.get('error', 'query failed')}")
    result = (answer.get("data") or {}).get("result") or []
    threshold = Threshold.parse(request.threshold)
    # A query may return several series (labels); the operator judges the first, so plot it.
    samples = result[0].get("values", []) if result else []
    times: list[float] = []
    values: list[float | None] = []
    breaches: list[float | None] = []
    for moment, text in samples:
        value = float(text)
        finite = value if math.isfinite(value) else None
        times.append(float(moment))
        values.append(finite)
        breached = finite is not None and threshold.breached_by(finite)
        breaches.append(finite if breached else None)
    return {
        "query": request.query,
        "threshold": {"op": threshold.op, "bound": threshold.bound, "text": request.threshold},
        "times": times,
        "values": values,
        "breaches": breaches,
    }


def settings_for(request: SeriesRequest, references: References) -> HttpSettings:
    """The headers, credentials and CA of the rollout's provider; SeriesUnavailable naming the
    field when a Secret or ConfigMap it names cannot be read."""
    provider = request.provider
    if provider is None:
        return HttpSettings()
    try:
        return http_settings(
            provider.auth, provider.tls, provider.headers, references, request.provider_path
        )
    except UnresolvedReference as error:
        raise SeriesUnavailable(str(error)) from None


def fetch_range(request: SeriesRequest, settings: HttpSettings | None = None) -> dict[str, Any]:
    """One range query with `settings`; a connection or HTTP failure is SeriesUnavailable."""
    settings = settings or HttpSettings()
    verify: bool | ssl.SSLContext = settings.verify is not False
    if isinstance(settings.verify, str):
        verify = ssl.create_default_context(cafile=settings.verify)
    try:
        response = httpx.get(
            f"{request.address}/api/v1/query_range",
            params={
                "query": request.query,
                "start": f"{request.start:.3f}",
                "end": f"{request.end:.3f}",
                "step": f"{request.step_seconds:g}",
            },
            headers=settings.headers,
            auth=settings.basic_auth,
            verify=verify,
            timeout=request.timeout_seconds,
        )
    except httpx.HTTPError as error:
        raise SeriesUnavailable(f"cannot reach Prometheus at {request.address}: {error}") from None
    if response.status_code in (401, 403):
        raise SeriesUnavailable(
            f"Prometheus at {request.address} answered {response.status_code}: "
            f"check the credentials ({request.provider_path}.auth)"
        )
    try:
        answer: dict[str, Any] = response.json()
    except ValueError:
        raise SeriesUnavailable(
            f"Prometheus at {request.address} answered {response.status_code}, not JSON"
        ) from None
    return plot_data(request, answer)


class PrometheusRange:
    """Range queries with each rollout's provider settings, its Secrets read through `api`."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api

    def __call__(self, request: SeriesRequest) -> dict[str, Any]:
        namespace = request.key[0].split("/", 1)[0]
        references = KubeReferences(self._api, namespace, reader="the dashboard")
        return fetch_range(request, settings_for(request, references))


class SeriesCache:
    """Answers by (rollout, revision, check, step), each good for its analysis interval."""

    def __init__(
        self,
        fetch: Callable[[SeriesRequest], dict[str, Any]],
        clock: Callable[[], float] | None = None,
        entries: int = CACHE_ENTRIES,
    ) -> None:
        self._fetch = fetch
        self._clock = clock or time.monotonic
        self._entries = entries
        self._answers: OrderedDict[tuple[str, str, str, int], tuple[float, dict[str, Any]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        # One lock per key: pages asking for one plot at once share one query, while a slow
        # Prometheus of one rollout holds up no other rollout's plots.
        self._key_locks: dict[tuple[str, str, str, int], threading.Lock] = {}
        self.fetches = 0

    def _fresh(self, request: SeriesRequest) -> dict[str, Any] | None:
        with self._lock:
            cached = self._answers.get(request.key)
            if cached is None or self._clock() - cached[0] >= request.fresh_seconds:
                return None
            self._answers.move_to_end(request.key)
            return cached[1]

    def get(self, request: SeriesRequest) -> dict[str, Any]:
        answer = self._fresh(request)
        if answer is not None:
            return answer
        with self._lock:
            key_lock = self._key_locks.setdefault(request.key, threading.Lock())
        with key_lock:
            answer = self._fresh(request)  # another page may have fetched it meanwhile
            if answer is not None:
                return answer
            answer = self._fetch(request)
            with self._lock:
                self.fetches += 1
                self._answers[request.key] = (self._clock(), answer)
                self._answers.move_to_end(request.key)
                while len(self._answers) > self._entries:
                    evicted, _ = self._answers.popitem(last=False)
                    self._key_locks.pop(evicted, None)
            return answer
