"""The comparison proxy's HTTP server: every answer from stable, a sampled copy to the candidate.

Each request is forwarded to stable and its answer streamed back as it comes
(status, headers and body as stable gave them), so users only ever see
stable. For a sampled share of the OpenAI generation requests (POST
/v1/completions, /v1/chat/completions) the same request goes to the candidate
at the same time, in the background; once both answers are in, they are
compared (compare.py) and the measures counted (metrics.py), and both are
dropped. Nothing of a request or answer is logged or stored: a comparison
lives in memory for at most `window` seconds, at most `max_pending` at once;
past either it is dropped and counted as such. The candidate's failure never
touches the user's answer.

The proxy's own paths: /metrics (Prometheus) and /healthz (its readiness).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from modelrollout.shadowproxy import metrics
from modelrollout.shadowproxy.compare import answer_text, measure

COMPARED_PATHS = ("/v1/completions", "/v1/chat/completions")
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        # The client decompresses: what is passed on is the plain body.
        "content-encoding",
    }
)
AGREEMENT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
RATIO_BUCKETS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 4.0)


@dataclass(frozen=True)
class ProxyConfig:
    stable: str
    candidate: str
    sample_percent: float
    window_seconds: float
    max_pending: int
    candidate_revision: str


class Measurements:
    """The proxy's series, each labelled with the candidate revision."""

    def __init__(self, candidate: str) -> None:
        self.registry = CollectorRegistry()
        labels = ["candidate"]

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(
                name.removesuffix("_total"), doc, [*labels, *extra], registry=self.registry
            )

        def histogram(name: str, doc: str, buckets: tuple[float, ...], extra: tuple[str, ...] = ()
                      ) -> Histogram:  # fmt: skip
            return Histogram(name, doc, [*labels, *extra], buckets=buckets, registry=self.registry)

        self.requests = counter(metrics.REQUESTS, "Requests answered from stable.").labels(
            candidate
        )
        self.sampled = counter(metrics.SAMPLED, "Requests also sent to the candidate.").labels(
            candidate
        )
        self.compared = counter(metrics.COMPARISONS, "Comparisons completed.").labels(candidate)
        self.exact_compared = counter(
            metrics.EXACT_COMPARISONS, "Comparisons of greedy or seeded requests."
        ).labels(candidate)
        self.exact_matches = counter(
            metrics.EXACT_MATCHES, "Greedy or seeded answers identical to stable's."
        ).labels(candidate)
        self.agreement = histogram(
            metrics.TOKEN_AGREEMENT, "Token-level agreement with stable.", AGREEMENT_BUCKETS
        ).labels(candidate)
        self.length_ratio = histogram(
            metrics.LENGTH_RATIO, "Candidate answer length over stable's.", RATIO_BUCKETS
        ).labels(candidate)
        empty = counter(metrics.EMPTY_ANSWERS, "Empty or refusing answers.", ("side",))
        self.empty = {side: empty.labels(candidate, side) for side in ("stable", "candidate")}
        self.json_requests = counter(
            metrics.JSON_REQUESTS, "Compared requests that asked for JSON."
        ).labels(candidate)
        valid = counter(metrics.JSON_VALID, "Valid JSON answers where JSON was asked.", ("side",))
        self.json_valid = {side: valid.labels(candidate, side) for side in ("stable", "candidate")}
        latency = histogram(
            metrics.LATENCY,
            "Seconds to the last byte of compared answers.",
            (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            ("side",),
        )
        self.latency = {side: latency.labels(candidate, side) for side in ("stable", "candidate")}
        dropped = counter(metrics.DROPPED, "Sampled requests not compared.", ("reason",))
        self.dropped = {
            reason: dropped.labels(candidate, reason)
            for reason in ("candidate_error", "stable_error", "timeout", "full")
        }

    def record(self, request: dict[str, Any], stable: Answer, candidate: Answer) -> None:
        measured = measure(request, stable.text, candidate.text)
        self.compared.inc()
        if measured.deterministic:
            self.exact_compared.inc()
            if measured.exact_match:
                self.exact_matches.inc()
        self.agreement.observe(measured.token_agreement)
        self.length_ratio.observe(measured.length_ratio)
        if measured.stable_empty:
            self.empty["stable"].inc()
        if measured.candidate_empty:
            self.empty["candidate"].inc()
        if measured.json_asked:
            self.json_requests.inc()
            if measured.stable_json_valid:
                self.json_valid["stable"].inc()
            if measured.candidate_json_valid:
                self.json_valid["candidate"].inc()
        self.latency["stable"].observe(stable.seconds)
        self.latency["candidate"].observe(candidate.seconds)


@dataclass(frozen=True)
class Answer:
    text: str
    seconds: float


def _passed_headers(headers: Any) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key.lower() not in HOP_BY_HOP}


def _is_streamed(headers: Any) -> bool:
    return "text/event-stream" in headers.get("Content-Type", "")


class ShadowProxy:
    def __init__(self, config: ProxyConfig, sample: Callable[[], float] = random.random) -> None:
        self.config = config
        self.measurements = Measurements(config.candidate_revision)
        self._sample = sample
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._health)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _: web.Application) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10),
            auto_decompress=True,
        )

    async def _close(self, _: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.measurements.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    def _wants_copy(self, request: web.Request) -> bool:
        if request.method != "POST" or request.path not in COMPARED_PATHS:
            return False
        return self._sample() * 100 < self.config.sample_percent

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = _passed_headers(request.headers)
        started = time.monotonic()
        candidate: asyncio.Future[Answer | None] | None = None
        if self._wants_copy(request):
            self.measurements.sampled.inc()
            if self._pending >= self.config.max_pending:
                self.measurements.dropped["full"].inc()
            else:
                # Counted from here: the candidate's request is in memory from now on.
                self._pending += 1
                candidate = asyncio.ensure_future(
                    self._ask(self.config.candidate, request.path_qs, body, headers)
                )
        self.measurements.requests.inc()
        stable: Answer | None = None
        try:
            response, stable = await self._answer_from_stable(request, body, headers, candidate)
        finally:
            if candidate is not None:
                if stable is None:
                    # Stable failed (or the client went away): nothing to compare with.
                    candidate.cancel()
                    self._pending -= 1
                    self.measurements.dropped["stable_error"].inc()
                else:
                    self._compare_later(body, started, stable, candidate)
        return response

    async def _answer_from_stable(
        self,
        request: web.Request,
        body: bytes,
        headers: dict[str, str],
        candidate: asyncio.Future[Answer | None] | None,
    ) -> tuple[web.StreamResponse, Answer | None]:
        """Stable's answer streamed to the client; its text and time where it is compared."""
        assert self._session is not None
        started = time.monotonic()
        collected: list[bytes] = []
        try:
            upstream = await self._session.request(
                request.method, self.config.stable + request.path_qs, data=body, headers=headers
            )
        except aiohttp.ClientError:
            return web.Response(status=502, text="stable is unreachable"), None
        async with upstream:
            response = web.StreamResponse(
                status=upstream.status, headers=_passed_headers(upstream.headers)
            )
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                if candidate is not None:
                    collected.append(chunk)
                await response.write(chunk)
            await response.write_eof()
            if candidate is None or upstream.status >= 400:
                return response, None
            text = answer_text(b"".join(collected), _is_streamed(upstream.headers))
            return response, Answer(text, time.monotonic() - started)

    async def _ask(self, base: str, path: str, body: bytes, headers: dict[str, str]
                   ) -> Answer | None:  # fmt: skip
        """The candidate's answer, or None where it failed."""
        assert self._session is not None
        started = time.monotonic()
        try:
            async with self._session.post(base + path, data=body, headers=headers) as answer:
                payload = await answer.read()
                if answer.status >= 400:
                    return None
                return Answer(
                    answer_text(payload, _is_streamed(answer.headers)), time.monotonic() - started
                )
        except aiohttp.ClientError:
            return None

    def _compare_later(
        self,
        body: bytes,
        started: float,
        stable: Answer,
        candidate: asyncio.Future[Answer | None],
    ) -> None:
        task = asyncio.ensure_future(self._compare(body, started, stable, candidate))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compare(
        self,
        body: bytes,
        started: float,
        stable: Answer,
        candidate: asyncio.Future[Answer | None],
    ) -> None:
        """Wait for the candidate within the window (from the request's arrival), compare, and
        let both answers go."""
        try:
            left = self.config.window_seconds - (time.monotonic() - started)
            try:
                answer = await asyncio.wait_for(candidate, max(left, 0))
            except TimeoutError:
                self.measurements.dropped["timeout"].inc()
                return
            if answer is None:
                self.measurements.dropped["candidate_error"].inc()
                return
            try:
                request = json.loads(body)
            except ValueError:
                request = {}
            self.measurements.record(request if isinstance(request, dict) else {}, stable, answer)
        finally:
            self._pending -= 1
