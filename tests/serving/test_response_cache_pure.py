"""The response cache's policy, key and bounds, without a server (modelserve.api.cache)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CollectorRegistry
from starlette.requests import Request

from modelserve.api.cache import (
    CACHE_HEADER,
    CacheOutcome,
    ModelIdentity,
    ResponseCache,
    cache_key,
    canonical_request,
    is_determined,
)
from modelserve.api.protocol import ChatCompletionRequest, CompletionRequest

pytestmark = pytest.mark.unit

IDENTITY = ModelIdentity("chat", "pvc://models/chat-v1", 1)


def http_request(*headers: tuple[str, str]) -> Request:
    raw = [(name.lower().encode(), value.encode()) for name, value in headers]
    return Request({"type": "http", "method": "POST", "path": "/v1/completions", "headers": raw})


def completion(**fields: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"prompt": "Hi", **fields})


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def answer(text: str, size: int = 0) -> JSONResponse:
    return JSONResponse(
        {
            "id": "cmpl-original",
            "object": "text_completion",
            "created": 1,
            "choices": [{"index": 0, "text": text + " " * size}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }
    )


def new_cache(
    clock: FakeClock, *, max_entries: int = 8, max_bytes: int = 1 << 20, ttl_s: float = 300
) -> tuple[ResponseCache, CollectorRegistry]:
    registry = CollectorRegistry()
    cache = ResponseCache(
        IDENTITY, registry, ttl_s=ttl_s, max_entries=max_entries, max_bytes=max_bytes, timer=clock
    )
    return cache, registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, {"model_name": "chat", **labels})
    assert value is not None, name
    return value


@pytest.mark.parametrize(
    ("fields", "determined"),
    [
        ({"temperature": 0}, True),
        ({"temperature": 0.8, "top_k": 1}, True),
        ({"temperature": 0.8, "seed": 7}, True),
        ({"temperature": 0.8}, False),
        ({}, False),  # OpenAI's default temperature is 1: sampled
        ({"temperature": 0.8, "top_k": 5}, False),
    ],
)
def test_only_greedy_or_seeded_requests_are_determined(
    fields: dict[str, Any], determined: bool
) -> None:
    assert is_determined(completion(**fields)) is determined


def test_the_canonical_request_ignores_key_order_defaults_and_answer_neutral_fields() -> None:
    plain = completion(temperature=0, max_tokens=5)
    dressed = CompletionRequest.model_validate(
        {
            "max_tokens": 5,
            "user": "alice",
            "model": "chat",
            "top_p": 1.0,
            "stream": False,
            "temperature": 0.0,
            "prompt": "Hi",
            "unknown_field": 3,
        }
    )
    assert canonical_request("completions", plain) == canonical_request("completions", dressed)
    assert "user" not in canonical_request("completions", dressed)


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "Hello"},
        {"max_tokens": 6},
        {"stop": ["."]},
        {"logprobs": 1},
        {"echo": True},
        {"seed": 1},
        {"ignore_eos": True},
    ],
)
def test_every_field_that_changes_the_answer_changes_the_key(change: dict[str, Any]) -> None:
    base = {"temperature": 0, "max_tokens": 5}
    assert cache_key(IDENTITY, "completions", completion(**base)) != cache_key(
        IDENTITY, "completions", completion(**{**base, **change})
    )


def test_the_key_includes_the_endpoint_and_the_model_identity() -> None:
    body = completion(temperature=0)
    key = cache_key(IDENTITY, "completions", body)
    assert key != cache_key(IDENTITY, "chat/completions", body)
    for other in (
        ModelIdentity("chat", "pvc://models/chat-v2", 1),  # another revision's model
        ModelIdentity("chat", "pvc://models/chat-v1", 2),  # another load of the same URI
        ModelIdentity("chat-canary", "pvc://models/chat-v1", 1),
    ):
        assert cache_key(other, "completions", body) != key


def test_a_stored_answer_comes_back_under_a_new_id_and_counts_hits_and_misses() -> None:
    cache, registry = new_cache(FakeClock())
    body = completion(temperature=0)
    first = cache.lookup(http_request(), "completions", body)
    assert first.outcome is CacheOutcome.MISS and first.cached_response() is None
    stored = first.finish(answer("Paris"))
    assert stored.headers[CACHE_HEADER] == "miss"

    second = cache.lookup(http_request(), "completions", body)
    assert second.outcome is CacheOutcome.HIT
    replay = second.cached_response()
    assert replay is not None
    assert replay.headers[CACHE_HEADER] == "hit"
    replayed = json.loads(bytes(replay.body))
    assert replayed["choices"][0]["text"] == "Paris"
    assert replayed["id"].startswith("cmpl-") and replayed["id"] != "cmpl-original"
    assert replayed["created"] > 1
    assert replayed["usage"]["completion_tokens"] == 2
    assert sample(registry, "modelserve:response_cache_hits_total") == 1
    assert sample(registry, "modelserve:response_cache_misses_total") == 1
    assert sample(registry, "modelserve:response_cache_entries") == 1


def test_sampled_and_streaming_requests_bypass_without_counting() -> None:
    cache, registry = new_cache(FakeClock())
    for body in (completion(temperature=0.7), completion(temperature=0, stream=True)):
        lookup = cache.lookup(http_request(), "completions", body)
        assert lookup.outcome is CacheOutcome.BYPASS
        lookup.finish(answer("x"))
    streamed = cache.lookup(http_request(), "completions", completion(temperature=0, stream=True))
    response = streamed.finish(StreamingResponse(iter(["data: [DONE]\n\n"])))
    assert response.headers[CACHE_HEADER] == "bypass"
    assert sample(registry, "modelserve:response_cache_entries") == 0
    assert sample(registry, "modelserve:response_cache_misses_total") == 0


def test_no_cache_refreshes_the_entry_and_no_store_leaves_the_cache_alone() -> None:
    cache, registry = new_cache(FakeClock())
    body = completion(temperature=0)
    cache.lookup(http_request(), "completions", body).finish(answer("old"))

    no_store = cache.lookup(http_request(("Cache-Control", "no-store")), "completions", body)
    assert no_store.outcome is CacheOutcome.BYPASS
    no_store.finish(answer("ignored"))
    no_cache = cache.lookup(
        http_request(("cache-control", "max-age=0, No-Cache")), "completions", body
    )
    assert no_cache.outcome is CacheOutcome.BYPASS
    no_cache.finish(answer("fresh"))

    hit = cache.lookup(http_request(), "completions", body).cached_response()
    assert hit is not None and b"fresh" in bytes(hit.body)
    assert sample(registry, "modelserve:response_cache_hits_total") == 1


def test_errors_are_not_stored() -> None:
    cache, _ = new_cache(FakeClock())
    body = completion(temperature=0)
    cache.lookup(http_request(), "completions", body).finish(
        JSONResponse({"error": {"message": "queue full"}}, status_code=429)
    )
    assert cache.lookup(http_request(), "completions", body).outcome is CacheOutcome.MISS


def test_entries_expire_after_the_ttl_and_count_as_expired() -> None:
    clock = FakeClock()
    cache, registry = new_cache(clock, ttl_s=10)
    body = completion(temperature=0)
    cache.lookup(http_request(), "completions", body).finish(answer("a"))
    clock.now = 9.9
    assert cache.lookup(http_request(), "completions", body).outcome is CacheOutcome.HIT
    clock.now = 10.0
    assert cache.lookup(http_request(), "completions", body).outcome is CacheOutcome.MISS
    assert sample(registry, "modelserve:response_cache_evictions_total", reason="expired") == 1
    assert sample(registry, "modelserve:response_cache_entries") == 0


def test_the_least_recently_used_entry_is_evicted_past_the_entry_bound() -> None:
    cache, registry = new_cache(FakeClock(), max_entries=2)
    a, b, c = (completion(temperature=0, prompt=p) for p in ("a", "b", "c"))
    cache.lookup(http_request(), "completions", a).finish(answer("a"))
    cache.lookup(http_request(), "completions", b).finish(answer("b"))
    assert cache.lookup(http_request(), "completions", a).outcome is CacheOutcome.HIT
    cache.lookup(http_request(), "completions", c).finish(answer("c"))

    assert cache.lookup(http_request(), "completions", b).outcome is CacheOutcome.MISS
    assert cache.lookup(http_request(), "completions", a).outcome is CacheOutcome.HIT
    assert sample(registry, "modelserve:response_cache_evictions_total", reason="size") == 1
    assert sample(registry, "modelserve:response_cache_entries") == 2


def test_the_byte_bound_evicts_and_an_answer_larger_than_it_is_not_stored() -> None:
    size = len(bytes(answer("a", 400).body))
    cache, registry = new_cache(FakeClock(), max_bytes=size * 2 + 10)
    a, b, c = (completion(temperature=0, prompt=p) for p in ("a", "b", "c"))
    for body, text in ((a, "a"), (b, "b"), (c, "c")):
        cache.lookup(http_request(), "completions", body).finish(answer(text, 400))
    assert sample(registry, "modelserve:response_cache_evictions_total", reason="size") == 1
    assert sample(registry, "modelserve:response_cache_bytes") <= size * 2 + 10

    huge = completion(temperature=0, prompt="huge")
    cache.lookup(http_request(), "completions", huge).finish(answer("h", size * 3))
    assert cache.lookup(http_request(), "completions", huge).outcome is CacheOutcome.MISS


def test_chat_requests_are_keyed_by_their_messages() -> None:
    def chat(content: str) -> ChatCompletionRequest:
        return ChatCompletionRequest.model_validate(
            {"messages": [{"role": "user", "content": content}], "temperature": 0}
        )

    assert cache_key(IDENTITY, "chat/completions", chat("hi")) != cache_key(
        IDENTITY, "chat/completions", chat("ho")
    )
