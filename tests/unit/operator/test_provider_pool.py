"""Providers kept across ticks: one session, one health check per interval, rotated Secrets seen.

A real HTTP server on 127.0.0.1 stands in for Prometheus and counts what
reaches it: health checks, queries, TCP connections, the token each carried.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from modelrollout.analysis.pool import ProviderPool
from modelrollout.analysis.provider import References
from modelrollout.models.spec import Analysis
from tests.unit.operator.test_metric_providers import FakeReferences

pytestmark = pytest.mark.unit

HEALTH_TTL = 15.0
ANSWER = {"status": "success", "data": {"resultType": "scalar", "result": [0, "0.5"]}}


class CountingPrometheus(ThreadingHTTPServer):
    """Answers the provider's health query (`1`) and other instant queries, counting
    requests and connections."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.health_checks = 0
        self.queries = 0
        self.connections = 0
        self.tokens: list[str | None] = []
        self.closed = threading.Event()  # a client closed its connection
        self.accepted_token: str | None = None
        self.health_status = 200
        self.query_status = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a reused session shows as one connection
    server: CountingPrometheus

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def finish(self) -> None:
        super().finish()
        self.server.closed.set()

    def do_GET(self) -> None:
        token = self.headers.get("Authorization")
        self.server.tokens.append(token)
        if parse_qs(urlsplit(self.path).query).get("query") == ["1"]:
            self.server.health_checks += 1
            status = self.server.health_status
        else:
            self.server.queries += 1
            status = self.server.query_status
        if self.server.accepted_token is not None and token != (
            f"Bearer {self.server.accepted_token}"
        ):
            status = 401
        body = json.dumps(ANSWER if status == 200 else {"status": "error"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def prometheus() -> Iterator[CountingPrometheus]:
    server = CountingPrometheus()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def analysis(url: str, token: bool = False, timeout: str = "2s") -> Analysis:
    provider: dict[str, Any] = {"type": "prometheus", "address": url, "timeout": timeout}
    if token:
        provider["auth"] = {"bearerToken": {"secretKeyRef": {"name": "prometheus", "key": "token"}}}
    return Analysis.model_validate({"provider": provider}, strict=False)


def pool_of(references: References, clock: Clock, **options: Any) -> ProviderPool:
    return ProviderPool(
        lambda namespace: references,
        threading.BoundedSemaphore(8),
        clock=clock,
        health_ttl=HEALTH_TTL,
        **options,
    )


def evaluate_once(pool: ProviderPool, spec: Analysis, namespace: str = "ml") -> float | None:
    """What one evaluation asks of its provider: is it online, then a query."""
    provider = pool.provider(spec, namespace)
    if not provider.is_online():
        return None
    return provider.query("up").value


def test_ticks_share_one_session_and_one_health_check_per_interval(
    prometheus: CountingPrometheus,
) -> None:
    clock = Clock()
    pool = pool_of(FakeReferences({}), clock)
    spec = analysis(prometheus.url)
    for _ in range(5):
        assert evaluate_once(pool, spec) == 0.5
        clock.now += 2.0
    assert (prometheus.health_checks, prometheus.queries) == (1, 5)
    assert prometheus.connections == 1
    assert pool.provider(spec, "ml") is pool.provider(spec, "ml")


def test_the_remembered_health_expires_after_the_interval(prometheus: CountingPrometheus) -> None:
    clock = Clock()
    pool = pool_of(FakeReferences({}), clock)
    spec = analysis(prometheus.url)
    evaluate_once(pool, spec)
    clock.now += HEALTH_TTL - 0.5
    evaluate_once(pool, spec)
    assert prometheus.health_checks == 1
    clock.now += 1.0
    evaluate_once(pool, spec)
    assert prometheus.health_checks == 2
    assert prometheus.connections == 1


def test_a_failed_health_check_is_not_remembered(prometheus: CountingPrometheus) -> None:
    clock = Clock()
    pool = pool_of(FakeReferences({}), clock)
    spec = analysis(prometheus.url)
    prometheus.health_status = 503
    assert evaluate_once(pool, spec) is None
    assert (
        pool.provider(spec, "ml").offline_reason()
        == "metric provider answered 503 Service Unavailable"
    )
    prometheus.health_status = 200
    assert evaluate_once(pool, spec) == 0.5
    assert (prometheus.health_checks, prometheus.queries) == (2, 1)


def test_a_failed_query_makes_the_next_evaluation_check_health_again(
    prometheus: CountingPrometheus,
) -> None:
    clock = Clock()
    pool = pool_of(FakeReferences({}), clock)
    spec = analysis(prometheus.url)
    evaluate_once(pool, spec)
    prometheus.query_status = 500
    assert evaluate_once(pool, spec) is None
    assert prometheus.health_checks == 1
    prometheus.health_status = 503
    assert evaluate_once(pool, spec) is None
    assert (prometheus.health_checks, prometheus.queries) == (2, 2)


def test_a_rotated_secret_is_used_after_a_401(prometheus: CountingPrometheus) -> None:
    clock = Clock()
    references = FakeReferences({("prometheus", "token"): "old\n"})
    pool = pool_of(references, clock)
    spec = analysis(prometheus.url, token=True)
    prometheus.accepted_token = "old"
    assert evaluate_once(pool, spec) == 0.5
    references.secrets["prometheus", "token"] = "new\n"
    prometheus.accepted_token = "new"
    # Within the interval: the query carries the old token and is refused ...
    assert evaluate_once(pool, spec) is None
    # ... which makes the next evaluation read the Secret again, at once.
    assert evaluate_once(pool, spec) == 0.5
    assert prometheus.tokens == [
        "Bearer old",
        "Bearer old",
        "Bearer old",
        "Bearer new",
        "Bearer new",
    ]
    assert prometheus.connections == 1


def test_a_rotated_secret_is_read_again_when_the_health_memo_expires(
    prometheus: CountingPrometheus,
) -> None:
    clock = Clock()
    references = FakeReferences({("prometheus", "token"): "old"})
    pool = pool_of(references, clock)
    spec = analysis(prometheus.url, token=True)
    evaluate_once(pool, spec)
    references.secrets["prometheus", "token"] = "new"
    clock.now += HEALTH_TTL
    evaluate_once(pool, spec)
    assert prometheus.tokens == ["Bearer old", "Bearer old", "Bearer new", "Bearer new"]


def test_providers_are_kept_per_config_and_namespace() -> None:
    pool = pool_of(FakeReferences({}), Clock())
    first = pool.provider(analysis("http://prometheus-a:9090"), "ml")
    assert pool.provider(analysis("http://prometheus-a:9090"), "ml") is first
    assert pool.provider(analysis("http://prometheus-a:9090"), "other") is not first
    assert pool.provider(analysis("http://prometheus-a:9090", timeout="3s"), "ml") is not first
    assert len(pool) == 3


def test_the_pool_keeps_at_most_its_bound_dropping_the_least_recently_used() -> None:
    pool = pool_of(FakeReferences({}), Clock(), max_entries=2)
    a, b, c = (analysis(f"http://prometheus-{name}:9090") for name in "abc")
    first_a = pool.provider(a, "ml")
    first_b = pool.provider(b, "ml")
    pool.provider(a, "ml")
    pool.provider(c, "ml")
    assert len(pool) == 2
    assert pool.provider(a, "ml") is first_a
    assert pool.provider(b, "ml") is not first_b


def test_providers_unused_for_the_idle_time_are_dropped() -> None:
    clock = Clock()
    pool = pool_of(FakeReferences({}), clock, idle_seconds=600.0)
    old = pool.provider(analysis("http://prometheus-a:9090"), "ml")
    clock.now += 601.0
    pool.provider(analysis("http://prometheus-b:9090"), "ml")
    assert len(pool) == 1
    assert pool.provider(analysis("http://prometheus-a:9090"), "ml") is not old


def test_a_dropped_provider_closes_its_connections(prometheus: CountingPrometheus) -> None:
    pool = pool_of(FakeReferences({}), Clock(), max_entries=1)
    evaluate_once(pool, analysis(prometheus.url))
    # Held by a tick still running: dropping it from the pool must close it, not the collector.
    dropped = pool.provider(analysis(prometheus.url), "ml")
    assert not prometheus.closed.is_set()
    pool.provider(analysis("http://prometheus-b:9090"), "ml")
    assert prometheus.closed.wait(timeout=10)
    assert dropped is not pool.provider(analysis(prometheus.url), "ml")
