"""A response cache for answers the request alone determines (off by default).

What is cached: a non-streaming answer (status 200) to a request whose tokens
do not depend on chance: greedy (`temperature` 0, or `top_k` 1) or seeded
(`seed` given; the engine gives a seeded request its own generator, so its
tokens are the same alone or batched). Sampling without a seed is never cached.

Streaming requests bypass the cache, neither read nor written: a stream is
asked for its timing (first token early, then token by token), which a replay
of a stored answer would only imitate, and its chunking would differ from the
engine's. A non-streaming answer is where a repeat costs a whole generation.

The key is a digest of the served model's identity (served name, model URI
and this process's load of it: two revisions, or two loads, never share an
entry) and the canonical request: the validated body with defaults filled in,
keys sorted, less the fields that do not change the answer (`user`, `model`,
which must name the served model anyway, `stream`, `stream_options`).

A hit never reaches the engine (injected faults and engine metrics see none of
it) and gets a fresh `id` and `created`; `usage` is the original's. Every
answer of a cache-enabled server says in CACHE_HEADER whether it was a `hit`,
a `miss` (stored when cacheable) or a `bypass`. A client bypasses the cache
with `Cache-Control: no-cache` (not served from the cache, the fresh answer is
stored) or `no-store` (neither read nor written).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from cachetools import TTLCache
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel

from modelserve.api.openai_format import new_id, now

CACHE_HEADER = "x-modelserve-cache"

# Request fields that never change the answer.
ANSWER_NEUTRAL_FIELDS = frozenset({"user", "model", "stream", "stream_options"})


class CacheOutcome(Enum):
    HIT = "hit"
    MISS = "miss"
    BYPASS = "bypass"


@dataclass(frozen=True)
class ModelIdentity:
    """What the answers are answers of: one load of one model under one name."""

    served_model_name: str
    model_uri: str
    # Wall-clock nanoseconds of this process's start: a restart with new weights behind the
    # same URI is a different identity.
    loaded_at_ns: int

    def canonical(self) -> dict[str, Any]:
        return {
            "served_model_name": self.served_model_name,
            "model_uri": self.model_uri,
            "loaded_at_ns": self.loaded_at_ns,
        }


def is_determined(body: BaseModel) -> bool:
    """Whether the request's answer is the same every time: greedy or seeded sampling."""
    temperature = float(getattr(body, "temperature", 1.0))
    top_k = int(getattr(body, "top_k", -1))
    seed = getattr(body, "seed", None)
    return temperature == 0.0 or top_k == 1 or seed is not None


def canonical_request(endpoint: str, body: BaseModel) -> str:
    """The request as JSON with sorted keys, defaults filled in, answer-neutral fields dropped."""
    fields = body.model_dump(mode="json", exclude=set(ANSWER_NEUTRAL_FIELDS))
    return json.dumps(
        {"endpoint": endpoint, "request": fields},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def cache_key(identity: ModelIdentity, endpoint: str, body: BaseModel) -> str:
    identity_text = json.dumps(identity.canonical(), sort_keys=True, separators=(",", ":"))
    text = identity_text + "\n" + canonical_request(endpoint, body)
    return hashlib.sha256(text.encode()).hexdigest()


def bypass_directives(request: Request) -> set[str]:
    """The Cache-Control directives of the request that concern this cache."""
    header = request.headers.get("cache-control", "")
    directives = {part.strip().lower() for part in header.split(",")}
    return directives & {"no-cache", "no-store"}


@dataclass(frozen=True)
class CachedAnswer:
    body: dict[str, Any]
    size_bytes: int


class _CountingTTLCache(TTLCache[str, CachedAnswer]):
    """A TTL+LRU cache that counts what it evicts for room (expiry is counted by its owner)."""

    def __init__(
        self, max_bytes: int, ttl_s: float, timer: Callable[[], float], on_evict: Counter
    ) -> None:
        super().__init__(maxsize=max_bytes, ttl=ttl_s, timer=timer, getsizeof=self._size_of)
        self._on_evict = on_evict

    @staticmethod
    def _size_of(answer: CachedAnswer) -> int:
        return answer.size_bytes

    def popitem(self) -> tuple[str, CachedAnswer]:
        item = super().popitem()
        self._on_evict.inc()
        return item


class ResponseCache:
    """Looked up before a request reaches the engine; filled with the answers it gave."""

    def __init__(
        self,
        identity: ModelIdentity,
        registry: CollectorRegistry,
        *,
        ttl_s: float,
        max_entries: int,
        max_bytes: int,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identity = identity
        self.max_entries = max_entries
        labels = {"model_name": identity.served_model_name}
        names = ("model_name",)
        self.hits = Counter(
            "modelserve:response_cache_hits",
            "Answers served from the response cache.",
            names, registry=registry,
        ).labels(**labels)  # fmt: skip
        self.misses = Counter(
            "modelserve:response_cache_misses",
            "Cacheable requests the response cache did not hold.",
            names, registry=registry,
        ).labels(**labels)  # fmt: skip
        evictions = Counter(
            "modelserve:response_cache_evictions",
            "Entries removed from the response cache: for room (size) or past the TTL (expired).",
            (*names, "reason"), registry=registry,
        )  # fmt: skip
        self.evicted_for_room = evictions.labels(reason="size", **labels)
        self.expired = evictions.labels(reason="expired", **labels)
        self._cache = _CountingTTLCache(max_bytes, ttl_s, timer, self.evicted_for_room)
        Gauge(
            "modelserve:response_cache_entries",
            "Answers held in the response cache.",
            names, registry=registry,
        ).labels(**labels).set_function(lambda: len(self._cache))  # fmt: skip
        Gauge(
            "modelserve:response_cache_bytes",
            "Size of the answers held in the response cache (their JSON bodies).",
            names, registry=registry,
        ).labels(**labels).set_function(lambda: self._cache.currsize)  # fmt: skip

    def _expire(self) -> None:
        self.expired.inc(len(self._cache.expire()))

    def lookup(self, request: Request, endpoint: str, body: BaseModel) -> CacheLookup:
        """What to do with this request: answer it from the cache, or generate and maybe store."""
        directives = bypass_directives(request)
        if getattr(body, "stream", False) or not is_determined(body) or "no-store" in directives:
            return CacheLookup(self, None, CacheOutcome.BYPASS)
        key = cache_key(self.identity, endpoint, body)
        if "no-cache" in directives:
            return CacheLookup(self, key, CacheOutcome.BYPASS)
        with self._cache.timer:
            self._expire()
            answer = self._cache.get(key)
        if answer is None:
            self.misses.inc()
            return CacheLookup(self, key, CacheOutcome.MISS)
        self.hits.inc()
        return CacheLookup(self, key, CacheOutcome.HIT, answer)

    def store(self, key: str, response: JSONResponse) -> None:
        body = bytes(response.body)
        answer = CachedAnswer(json.loads(body), len(body))
        if answer.size_bytes > self._cache.maxsize:
            return
        with self._cache.timer:
            self._expire()
            self._cache[key] = answer
            while len(self._cache) > self.max_entries:
                self._cache.popitem()


@dataclass(frozen=True)
class CacheLookup:
    """One request's dealings with the cache."""

    cache: ResponseCache
    key: str | None
    outcome: CacheOutcome
    answer: CachedAnswer | None = None

    def cached_response(self) -> JSONResponse | None:
        """The stored answer under a new id and creation time, when this was a hit."""
        if self.answer is None:
            return None
        body = dict(self.answer.body)
        prefix = str(body.get("id", "cmpl")).split("-", 1)[0]
        body["id"], body["created"] = new_id(prefix), now()
        return JSONResponse(body, headers={CACHE_HEADER: CacheOutcome.HIT.value})

    def finish(self, response: Response) -> Response:
        """Store a fresh cacheable answer and say in a header what the cache did."""
        if (
            self.key is not None
            and isinstance(response, JSONResponse)
            and response.status_code == 200
        ):
            self.cache.store(self.key, response)
        response.headers[CACHE_HEADER] = self.outcome.value
        return response
