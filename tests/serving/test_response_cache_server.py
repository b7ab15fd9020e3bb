"""The response cache of a real `modelserve serve` process on the tiny model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelserve.api.cache import CACHE_HEADER
from tests.serving.conftest import (
    TINY_MODEL_NAME,
    ServerProcess,
    metric,
    scrape,
    start_server,
)

pytestmark = pytest.mark.serving

GREEDY = {"prompt": "The cache", "max_tokens": 6, "temperature": 0, "ignore_eos": True}
TTL_S = 4.0


@pytest.fixture(scope="module")
def cached_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server whose cache holds two answers for five minutes."""
    process = start_server(
        tiny_model_dir, tmp_path_factory.mktemp("logs"), "--response-cache-size", "2"
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def short_ttl_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    process = start_server(
        tiny_model_dir,
        tmp_path_factory.mktemp("logs"),
        "--response-cache-size",
        "16",
        "--response-cache-ttl",
        str(TTL_S),
    )
    yield process
    process.stop()


def post(
    server: ServerProcess, body: dict[str, Any], path: str = "/v1/completions", **headers: str
) -> httpx.Response:
    response = httpx.post(
        server.base_url + path,
        json={"model": TINY_MODEL_NAME, **body},
        headers=headers,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response


def cache_metric(server: ServerProcess, name: str, **labels: str) -> float:
    return metric(scrape(server.base_url), f"modelserve:response_cache_{name}", **labels)


def test_the_second_identical_greedy_request_is_served_from_the_cache(
    cached_server: ServerProcess,
) -> None:
    hits, misses = (
        cache_metric(cached_server, "hits_total"),
        cache_metric(cached_server, "misses_total"),
    )
    generated_tokens = metric(scrape(cached_server.base_url), "vllm:generation_tokens_total")
    body = {**GREEDY, "prompt": "second identical request", "user": "alice"}

    first = post(cached_server, body)
    second = post(cached_server, {**body, "user": "bob"})  # `user` does not change the answer

    assert first.headers[CACHE_HEADER] == "miss"
    assert second.headers[CACHE_HEADER] == "hit"
    assert second.json()["choices"] == first.json()["choices"]
    assert second.json()["usage"] == first.json()["usage"]
    assert second.json()["id"] != first.json()["id"]
    values = scrape(cached_server.base_url)
    assert metric(values, "modelserve:response_cache_hits_total") == hits + 1
    assert metric(values, "modelserve:response_cache_misses_total") == misses + 1
    # The hit never reached the engine: only the first request generated tokens.
    assert metric(values, "vllm:generation_tokens_total") == generated_tokens + 6


def test_chat_and_seeded_sampling_are_cached_too(cached_server: ServerProcess) -> None:
    chat = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "temperature": 0}
    post(cached_server, chat, "/v1/chat/completions")
    again = post(cached_server, chat, "/v1/chat/completions")
    assert again.headers[CACHE_HEADER] == "hit"
    assert again.json()["id"].startswith("chatcmpl-")

    seeded = {**GREEDY, "temperature": 0.9, "seed": 11}
    first = post(cached_server, seeded)
    second = post(cached_server, seeded)
    assert (first.headers[CACHE_HEADER], second.headers[CACHE_HEADER]) == ("miss", "hit")
    assert second.json()["choices"] == first.json()["choices"]


def test_sampling_without_a_seed_is_never_cached(cached_server: ServerProcess) -> None:
    hits, misses = (
        cache_metric(cached_server, "hits_total"),
        cache_metric(cached_server, "misses_total"),
    )
    sampled = {**GREEDY, "temperature": 0.9}
    answers = [post(cached_server, sampled) for _ in range(3)]
    assert [a.headers[CACHE_HEADER] for a in answers] == ["bypass"] * 3
    assert cache_metric(cached_server, "hits_total") == hits
    assert cache_metric(cached_server, "misses_total") == misses


def test_cache_control_bypasses_the_cache(cached_server: ServerProcess) -> None:
    body = {**GREEDY, "prompt": "bypass me"}
    post(cached_server, body)
    assert post(cached_server, body).headers[CACHE_HEADER] == "hit"
    hits = cache_metric(cached_server, "hits_total")

    for directive in ("no-cache", "no-store"):
        fresh = post(cached_server, body, **{"Cache-Control": directive})
        assert fresh.headers[CACHE_HEADER] == "bypass"
    assert cache_metric(cached_server, "hits_total") == hits


def test_a_streamed_request_bypasses_the_cache(cached_server: ServerProcess) -> None:
    body = {**GREEDY, "prompt": "streamed"}
    post(cached_server, body)
    hits = cache_metric(cached_server, "hits_total")
    with httpx.stream(
        "POST",
        cached_server.base_url + "/v1/completions",
        json={"model": TINY_MODEL_NAME, **body, "stream": True},
        timeout=60,
    ) as response:
        assert response.headers[CACHE_HEADER] == "bypass"
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][len("data: ") :])["object"] == "text_completion"
    assert cache_metric(cached_server, "hits_total") == hits


def test_the_size_bound_evicts_the_least_recently_used_answer(
    cached_server: ServerProcess,
) -> None:
    evicted = cache_metric(cached_server, "evictions_total", reason="size")
    first, second, third = ({**GREEDY, "prompt": f"bounded {n}"} for n in range(3))
    for body in (first, second, third):
        assert post(cached_server, body).headers[CACHE_HEADER] == "miss"

    assert cache_metric(cached_server, "evictions_total", reason="size") >= evicted + 1
    assert cache_metric(cached_server, "entries") == 2
    assert post(cached_server, third).headers[CACHE_HEADER] == "hit"
    assert post(cached_server, first).headers[CACHE_HEADER] == "miss"


def test_an_answer_expires_after_the_ttl(short_ttl_server: ServerProcess) -> None:
    body = {**GREEDY, "prompt": "expiring"}
    expired = cache_metric(short_ttl_server, "evictions_total", reason="expired")
    assert post(short_ttl_server, body).headers[CACHE_HEADER] == "miss"
    stored_by = time.monotonic()  # the server stored it before this answer arrived
    assert post(short_ttl_server, body).headers[CACHE_HEADER] == "hit"

    # Waiting for the condition itself: the TTL has passed since the entry was stored.
    time.sleep(max(0.0, stored_by + TTL_S - time.monotonic()))
    assert post(short_ttl_server, body).headers[CACHE_HEADER] == "miss"
    assert cache_metric(short_ttl_server, "evictions_total", reason="expired") == expired + 1


def test_two_servers_never_share_answers(
    cached_server: ServerProcess, short_ttl_server: ServerProcess
) -> None:
    """Each load of a model keys its own answers (the key holds its identity: unit-tested)."""
    body = {**GREEDY, "prompt": "one server only"}
    post(cached_server, body)
    assert post(cached_server, body).headers[CACHE_HEADER] == "hit"
    assert post(short_ttl_server, body).headers[CACHE_HEADER] == "miss"


def test_the_cache_is_off_by_default(server: ServerProcess) -> None:
    answers = [post(server, GREEDY) for _ in range(2)]
    assert all(CACHE_HEADER not in a.headers for a in answers)
    assert "modelserve:response_cache" not in httpx.get(server.base_url + "/metrics").text


def test_quality_gates_measure_the_model_not_the_cache(cached_server: ServerProcess) -> None:
    from modelserve.gates import load_suite, run_suite

    suite = load_suite(
        'prompts: [{name: a, prompt: "Gate me", maxTokens: 4}]\n'
        "latency: {percentile: 95, maxMs: 60000}\n"
    )
    hits = cache_metric(cached_server, "hits_total")
    for _ in range(2):
        assert run_suite(suite, cached_server.base_url, None, TINY_MODEL_NAME).passed
    assert cache_metric(cached_server, "hits_total") == hits
