"""Back-pressure, disconnects, SIGTERM draining and fault injection on real server processes.

The slow paths use the server's own fault injection (a per-token delay), so a
request stays in flight long enough to be observed without a big model.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving.conftest import (
    TINY_MODEL_NAME,
    ServerProcess,
    metric,
    scrape,
    start_server,
)

pytestmark = pytest.mark.serving

TOKEN_DELAY_S = 0.05


def slow_body(max_tokens: int, stream: bool = True) -> dict[str, Any]:
    return {
        "model": TINY_MODEL_NAME,
        "prompt": "Tell me a story",
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def gauge(server: ServerProcess, name: str) -> float:
    return metric(scrape(server.base_url), name, model_name=TINY_MODEL_NAME)


@pytest.fixture(scope="module")
def slow_single_slot_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One batch slot, one queue place, and slow tokens."""
    process = start_server(
        tiny_model_dir,
        tmp_path_factory.mktemp("logs"),
        "--max-batch-size", "1", "--max-queue-size", "1",
        "--fault-injection", "--fault-token-delay", str(TOKEN_DELAY_S),
    )  # fmt: skip
    yield process
    process.stop()


def test_fault_parameters_without_the_switch_refuse_to_start(tiny_model_dir: Path) -> None:
    from modelserve.cli import main

    code = main(["serve", "--model", str(tiny_model_dir), "--fault-error-rate", "0.5"])
    assert code == 2


def test_a_full_queue_answers_429_at_once(slow_single_slot_server: ServerProcess) -> None:
    server = slow_single_slot_server
    url = server.base_url + "/v1/completions"
    with httpx.stream("POST", url, json=slow_body(200), timeout=60) as running:
        assert running.status_code == 200
        wait_for(lambda: gauge(server, "vllm:num_requests_running") == 1, 10, "a running request")

        def wait_in_queue() -> None:
            # This client gives up after 3 s in the queue and closes its connection.
            with contextlib.suppress(httpx.ReadTimeout):
                httpx.post(url, json=slow_body(1, stream=False), timeout=3)

        waiting_thread = threading.Thread(target=wait_in_queue, daemon=True)
        waiting_thread.start()
        wait_for(lambda: gauge(server, "vllm:num_requests_waiting") == 1, 10, "a waiting request")
        started = time.monotonic()
        refused = httpx.post(url, json=slow_body(1, stream=False), timeout=30)
        elapsed = time.monotonic() - started
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert elapsed < 1.0
        # A queued client that leaves gives its place back while the slot is still busy.
        waiting_thread.join(10)
        wait_for(lambda: gauge(server, "vllm:num_requests_waiting") == 0, 2, "the queue to empty")
        assert gauge(server, "vllm:num_requests_running") == 1


def test_a_client_disconnect_mid_stream_frees_the_slot(
    slow_single_slot_server: ServerProcess,
) -> None:
    server = slow_single_slot_server
    wait_for(lambda: gauge(server, "vllm:num_requests_running") == 0, 15, "an idle server")
    aborted_before = metric(
        scrape(server.base_url), "vllm:request_success_total", finished_reason="abort"
    )
    # 400 tokens at 50 ms would take 20 s: the slot must come back long before that.
    with httpx.stream(
        "POST", server.base_url + "/v1/completions", json=slow_body(400), timeout=60
    ) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert gauge(server, "vllm:num_requests_running") == 1
    started = time.monotonic()
    wait_for(lambda: gauge(server, "vllm:num_requests_running") == 0, 5, "the slot to be freed")
    assert time.monotonic() - started < 5
    aborted_after = metric(
        scrape(server.base_url), "vllm:request_success_total", finished_reason="abort"
    )
    assert aborted_after == aborted_before + 1
    # The freed slot serves the next request.
    answer = httpx.post(
        server.base_url + "/v1/completions", json=slow_body(2, stream=False), timeout=30
    )
    assert answer.status_code == 200


def test_sigterm_drains_in_flight_requests_then_exits_zero(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    server = start_server(
        tiny_model_dir, tmp_path, "--drain-timeout", "20",
        "--fault-injection", "--fault-token-delay", str(TOKEN_DELAY_S),
    )  # fmt: skip
    try:
        events: list[Any] = []
        with httpx.stream(
            "POST", server.base_url + "/v1/completions", json=slow_body(40), timeout=60
        ) as response:
            lines = response.iter_lines()
            events.append(json.loads(next(lines)[len("data: ") :]))
            server.terminate()
            wait_for(
                lambda: httpx.get(server.base_url + "/health", timeout=2).status_code == 503,
                5,
                "health to turn 503",
            )
            refused = httpx.post(
                server.base_url + "/v1/completions", json=slow_body(2, stream=False), timeout=5
            )
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "unavailable"
            for line in lines:
                if line:
                    payload = line[len("data: ") :]
                    events.append(payload if payload == "[DONE]" else json.loads(payload))
        assert events[-1] == "[DONE]"
        assert events[-2]["choices"][0]["finish_reason"] == "length"
        assert server.process.wait(30) == 0
        assert "drain complete" in server.log()
    finally:
        server.stop()


def test_injected_errors_and_latency_show_in_answers_and_metrics(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    error_rate, seed, added_latency_s, requests = 0.5, 3, 0.3, 8
    server = start_server(
        tiny_model_dir, tmp_path, "--fault-injection", "--fault-error-rate", str(error_rate),
        "--fault-seed", str(seed), "--fault-latency", str(added_latency_s),
    )  # fmt: skip
    try:
        assert "FAULT INJECTION ENABLED" in server.log()
        # The server draws one number per request from a generator seeded the same way.
        draws = random.Random(seed)
        expected = [500 if draws.random() < error_rate else 200 for _ in range(requests)]
        assert 0 < expected.count(500) < requests
        statuses = []
        for _ in range(requests):
            response = httpx.post(
                server.base_url + "/v1/completions", json=slow_body(2, stream=False), timeout=30
            )
            statuses.append(response.status_code)
            if response.status_code == 500:
                assert response.json()["error"]["code"] == "injected"
        assert statuses == expected
        values = scrape(server.base_url)
        failures, successes = expected.count(500), expected.count(200)
        labels = {"model_name": TINY_MODEL_NAME}
        assert metric(values, "vllm:request_success_total", finished_reason="error") == failures
        assert metric(values, "vllm:request_success_total", finished_reason="length") == successes
        assert (
            metric(values, "http_requests_total", handler="/v1/completions", status="5xx")
            == failures
        )
        # Every served request took at least the injected latency, counted from its arrival.
        assert metric(values, "vllm:e2e_request_latency_seconds_count", **labels) == successes
        assert metric(values, "vllm:e2e_request_latency_seconds_bucket", le="0.3", **labels) == 0
        assert metric(values, "vllm:time_to_first_token_seconds_bucket", le="0.25", **labels) == 0
        assert httpx.get(server.base_url + "/health", timeout=5).status_code == 200
    finally:
        server.stop()


def test_a_request_past_its_timeout_gets_504_and_frees_its_slot(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # The model is reached through pvc:// under a mount root, as in a pod.
    mount_root = tmp_path / "mounts"
    (mount_root / "models").mkdir(parents=True)
    (mount_root / "models" / "tiny").symlink_to(tiny_model_dir)
    server = start_server(
        "pvc://models/tiny", tmp_path, "--pvc-mount-root", str(mount_root),
        "--request-timeout", "1", "--fault-injection", "--fault-token-delay", str(TOKEN_DELAY_S),
    )  # fmt: skip
    try:
        started = time.monotonic()
        response = httpx.post(
            server.base_url + "/v1/completions", json=slow_body(200, stream=False), timeout=30
        )
        assert response.status_code == 504
        assert response.json()["error"]["type"] == "timeout_error"
        assert 1.0 <= time.monotonic() - started < 3.0
        wait_for(lambda: gauge(server, "vllm:num_requests_running") == 0, 3, "the slot to free")
        aborted = metric(
            scrape(server.base_url), "vllm:request_success_total", finished_reason="abort"
        )
        assert aborted == 1
    finally:
        server.stop()


def test_a_non_streaming_client_that_leaves_frees_its_slot(
    slow_single_slot_server: ServerProcess,
) -> None:
    server = slow_single_slot_server
    wait_for(lambda: gauge(server, "vllm:num_requests_running") == 0, 15, "an idle server")
    # The client gives up after 0.5 s of a 20 s answer and closes the connection.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server.base_url + "/v1/completions", json=slow_body(400, stream=False), timeout=0.5
        )
    wait_for(lambda: gauge(server, "vllm:num_requests_running") == 0, 5, "the slot to be freed")


def test_a_missing_model_directory_fails_fast(tmp_path: Path) -> None:
    from modelserve.cli import main

    assert main(["serve", "--model", f"file://{tmp_path}/nothing-here"]) == 2
    assert main(["serve", "--model", "s3://bucket/model"]) == 2
