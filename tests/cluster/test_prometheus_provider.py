"""The Prometheus MetricProvider against a real Prometheus with real series.

No data is never a pass: empty, NaN, several series and an unreachable
server each come back as "no value" with a reason, never as a number.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator

import pytest

from modelrollout.analysis.prometheus import PrometheusProvider
from modelrollout.models.spec import PrometheusProviderSpec
from modelrollout.settings import OperatorSettings
from modelrollout_dev.prometheus import CountingProxy, PrometheusHandle
from tests.support.kube import wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture
def scraped_marker(
    prometheus: PrometheusHandle,
    metrics_server: tuple[str, str],
) -> Iterator[tuple[str, float]]:
    address, marker = metrics_server
    target = f"provider-{uuid.uuid4().hex[:8]}"
    prometheus.register_target(target, address, {"revision": target})
    try:
        wait_until(
            lambda: prometheus.query(f'smoke_marker{{revision="{target}"}}'), 30, "the scrape"
        )
        yield target, float(marker)
    finally:
        prometheus.unregister_target(target)


# The operator's default bound on requests in flight, shared by all its providers.
MAX_QUERIES_IN_FLIGHT = OperatorSettings().max_queries_in_flight


def provider(
    url: str, timeout: str = "2s", in_flight: threading.Semaphore | None = None
) -> PrometheusProvider:
    config = {"type": "prometheus", "address": url, "timeout": timeout}
    return PrometheusProvider(
        PrometheusProviderSpec.model_validate(config),
        None,
        in_flight or threading.BoundedSemaphore(MAX_QUERIES_IN_FLIGHT),
    )


def test_a_real_series_is_read_as_its_value(
    prometheus: PrometheusHandle, scraped_marker: tuple[str, float]
) -> None:
    target, marker = scraped_marker
    result = provider(prometheus.url).query(f'smoke_marker{{revision="{target}"}}')
    assert result.error is None and not result.empty
    assert result.value == marker
    assert provider(prometheus.url).is_online()


def test_no_series_nan_and_several_series_are_never_a_value(
    prometheus: PrometheusHandle, scraped_marker: tuple[str, float]
) -> None:
    metrics = provider(prometheus.url)
    empty = metrics.query('smoke_marker{revision="does-not-exist"}')
    assert empty.value is None and empty.empty
    nan = metrics.query("vector(0) / vector(0)")
    assert nan.value is None
    several = metrics.query('label_replace(vector(1), "x", "a", "", "") or vector(2)')
    assert several.value is None and several.error is not None
    bad = metrics.query("sum(")
    assert bad.value is None and bad.error is not None


def test_an_unreachable_prometheus_answers_within_the_timeout() -> None:
    # A socket that accepts connections and never answers: the worst case.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        metrics = provider(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout="1s")
        result = metrics.query("vector(1)")
        assert result.value is None and result.error is not None
        # The call ended by the configured read timeout, not by hanging.
        assert "read timeout=1.0" in result.error
        assert not metrics.is_online()
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


def test_requests_in_flight_stay_bounded_however_many_ticks_ask(
    prometheus: PrometheusHandle,
) -> None:
    """Health checks and queries of 32 ticks at once: never more than the bound at Prometheus."""
    proxy = CountingProxy(prometheus.url, delay=0.05)
    in_flight = threading.BoundedSemaphore(MAX_QUERIES_IN_FLIGHT)
    try:

        def tick() -> None:
            metrics = provider(proxy.url, timeout="10s", in_flight=in_flight)
            for _ in range(3):
                assert metrics.is_online()
                assert metrics.query("vector(1)").value == 1.0

        threads = [threading.Thread(target=tick) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        proxy.server.shutdown()
    assert proxy.requests == 32 * 3 * 2
    assert 1 < proxy.most_in_flight <= MAX_QUERIES_IN_FLIGHT, proxy.most_in_flight


def test_the_environments_proxy_carries_queries_unless_no_proxy_names_the_host(
    prometheus: PrometheusHandle,
    scraped_marker: tuple[str, float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP_PROXY and NO_PROXY are read once, when a provider is first used, and hold
    for its every query (the environment is not looked up per request)."""
    target, marker = scraped_marker
    forward_proxy = CountingProxy("")
    query = f'smoke_marker{{revision="{target}"}}'
    try:
        for name in ("NO_PROXY", "no_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
        proxied = provider(prometheus.url)
        assert proxied.is_online()
        assert proxied.query(query).value == marker
        assert forward_proxy.requests == 2

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        direct = provider(prometheus.url)
        assert direct.query(query).value == marker
        assert forward_proxy.requests == 2

        # Read once: the first provider keeps its proxy after the environment changed.
        monkeypatch.delenv("HTTP_PROXY")
        assert proxied.query(query).value == marker
        assert forward_proxy.requests == 3
    finally:
        forward_proxy.server.shutdown()
