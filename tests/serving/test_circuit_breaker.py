"""The circuit breaker on real `modelserve serve` processes, with faults injected in the engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving.conftest import TINY_MODEL_NAME, ServerProcess, metric, scrape, start_server

pytestmark = pytest.mark.serving

STATE = "modelserve:circuit_breaker_state"
OPENINGS = "modelserve:circuit_breaker_openings_total"


def body(max_tokens: int = 2, stream: bool = False) -> dict[str, Any]:
    return {
        "model": TINY_MODEL_NAME,
        "prompt": "Tell me a story",
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }


def breaker_metric(server: ServerProcess, name: str) -> float:
    return metric(scrape(server.base_url), name, model_name=TINY_MODEL_NAME)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def complete(server: ServerProcess, **kwargs: Any) -> httpx.Response:
    return httpx.post(server.base_url + "/v1/completions", json=body(**kwargs), timeout=30)


def health(server: ServerProcess) -> httpx.Response:
    return httpx.get(server.base_url + "/health", timeout=5)


def test_engine_failures_open_the_breaker_a_failed_trial_reopens_it_a_good_one_closes_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # The engine fails its first 4 steps, then recovers: 3 failures open the breaker,
    # the first half-open trial is the 4th failure, the second trial succeeds.
    server = start_server(
        tiny_model_dir, tmp_path,
        "--max-batch-size", "1", "--breaker-failures", "3", "--breaker-cooldown", "3",
        "--fault-injection", "--fault-engine-error-rate", "1", "--fault-engine-error-limit", "4",
    )  # fmt: skip
    try:
        assert breaker_metric(server, STATE) == 0
        for _ in range(3):
            failed = complete(server)
            assert failed.status_code == 500
            assert "injected engine failure" in failed.json()["error"]["message"]

        started = time.monotonic()
        refused = complete(server)
        fail_fast_s = time.monotonic() - started
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "circuit_open"
        assert refused.headers["Retry-After"] in ("1", "2", "3")
        assert fail_fast_s < 0.5
        streamed = httpx.post(
            server.base_url + "/v1/chat/completions",
            json={"model": TINY_MODEL_NAME, "messages": [{"role": "user", "content": "hi"}],
                  "max_tokens": 2, "stream": True},
            timeout=30,
        )  # fmt: skip
        assert streamed.status_code == 503
        assert "Retry-After" in streamed.headers
        unready = health(server)
        assert unready.status_code == 503
        assert unready.json()["status"] == "circuit-open"
        assert "Retry-After" in unready.headers
        # Liveness stays up: the kubelet must not restart an engine that may recover.
        assert httpx.get(server.base_url + "/live", timeout=5).status_code == 200
        assert breaker_metric(server, STATE) == 1
        assert breaker_metric(server, OPENINGS) == 1

        # The cool-down ends without any request: /health turns ready for the trial.
        wait_for(lambda: health(server).status_code == 200, 10, "the half-open breaker")
        assert breaker_metric(server, STATE) == 2
        trial = complete(server)
        assert trial.status_code == 500
        assert health(server).status_code == 503
        assert breaker_metric(server, STATE) == 1
        assert breaker_metric(server, OPENINGS) == 2

        wait_for(lambda: health(server).status_code == 200, 10, "the second half-open")
        assert complete(server).status_code == 200
        assert breaker_metric(server, STATE) == 0
        assert all(complete(server).status_code == 200 for _ in range(3))
        assert breaker_metric(server, OPENINGS) == 2
    finally:
        server.stop()


def test_a_full_queue_and_client_errors_never_open_the_breaker(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A healthy server under load answers 429s; with a threshold of 1 any miscount would trip."""
    server = start_server(
        tiny_model_dir, tmp_path,
        "--max-batch-size", "1", "--max-queue-size", "1", "--breaker-failures", "1",
        "--fault-injection", "--fault-token-delay", "0.05",
    )  # fmt: skip
    try:
        statuses: list[int] = []
        lock = threading.Lock()

        def one_request() -> None:
            status = complete(server, max_tokens=8).status_code
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=one_request) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert statuses.count(429) >= 6
        assert statuses.count(200) >= 2
        assert set(statuses) == {200, 429}

        too_long = complete(server, max_tokens=10**6)
        assert too_long.status_code == 400
        wrong_model = httpx.post(
            server.base_url + "/v1/completions", json={**body(), "model": "other"}, timeout=30
        )
        assert wrong_model.status_code == 404
        # A client that leaves mid-generation.
        with pytest.raises(httpx.ReadTimeout):
            complete_with_timeout(server, timeout_s=0.2)

        assert health(server).status_code == 200
        assert breaker_metric(server, STATE) == 0
        assert breaker_metric(server, OPENINGS) == 0
        assert complete(server).status_code == 200
    finally:
        server.stop()


def complete_with_timeout(server: ServerProcess, timeout_s: float) -> httpx.Response:
    return httpx.post(
        server.base_url + "/v1/completions", json=body(max_tokens=40), timeout=timeout_s
    )


def test_breaker_failures_zero_turns_the_breaker_off(tiny_model_dir: Path, tmp_path: Path) -> None:
    server = start_server(
        tiny_model_dir, tmp_path, "--breaker-failures", "0",
        "--fault-injection", "--fault-engine-error-rate", "1",
    )  # fmt: skip
    try:
        assert all(complete(server).status_code == 500 for _ in range(8))
        assert health(server).status_code == 200
        assert STATE not in httpx.get(server.base_url + "/metrics", timeout=5).text
    finally:
        server.stop()
