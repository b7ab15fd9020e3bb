"""Running one OpenAI request through the engine: events, metrics, faults and timeouts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field

from modelserve.api import errors
from modelserve.api.breaker import BreakerOpenError, BreakerOpenResponse, CircuitBreaker
from modelserve.engine.batcher import ContinuousBatcher
from modelserve.engine.types import (
    EngineEvent,
    EngineStoppedError,
    Finished,
    FinishReason,
    GenerationRequest,
    PromptScored,
    QueueFullError,
    SamplingParams,
    TokensGenerated,
)
from modelserve.faults import FaultDecider
from modelserve.metrics import ServingMetrics


@dataclass
class RequestClock:
    """Times one request the way vLLM does: from arrival, in the server."""

    metrics: ServingMetrics
    arrival: float
    last_token: float | None = None

    def tokens(self, count: int) -> None:
        now = time.monotonic()
        if self.last_token is None:
            self.metrics.time_to_first_token.observe(now - self.arrival)
        else:
            self.metrics.inter_token_latency.observe(now - self.last_token)
        self.last_token = now
        self.metrics.generation_tokens.inc(count)

    def finished(self, event: Finished) -> None:
        self.metrics.request_success[event.reason].inc()
        self.metrics.prompt_tokens.inc(event.prompt_tokens)
        if event.reason in (FinishReason.STOP, FinishReason.LENGTH):
            self.metrics.e2e_request_latency.observe(time.monotonic() - self.arrival)


class LoopDispatcher:
    """Hands engine events to the event loop with one wakeup for all events of a step.

    A wakeup per event (32 rows, one token each per step) costs the event loop
    and the engine thread more than the events themselves.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[tuple[asyncio.Queue[EngineEvent], EngineEvent]] = []
        self._lock = threading.Lock()
        self._scheduled = False

    def put(self, queue: asyncio.Queue[EngineEvent], event: EngineEvent) -> None:
        with self._lock:
            self._pending.append((queue, event))
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            pending, self._pending, self._scheduled = self._pending, [], False
        for queue, event in pending:
            queue.put_nowait(event)


@dataclass
class Generator:
    """What a request handler needs from the server to run generations."""

    batcher: ContinuousBatcher
    metrics: ServingMetrics
    faults: FaultDecider
    request_timeout_s: float
    # None: no breaker (--breaker-failures 0).
    breaker: CircuitBreaker | None = None
    _dispatcher: LoopDispatcher | None = None

    async def before_start(self) -> None:
        """Refuse at once while the breaker is open; apply injected latency and errors."""
        if self.breaker is not None:
            try:
                self.breaker.check()
            except BreakerOpenError as refusal:
                raise BreakerOpenResponse(refusal) from None
        if self.faults.faults.added_latency_s > 0:
            await asyncio.sleep(self.faults.faults.added_latency_s)
        if self.faults.should_fail():
            self.metrics.request_success[FinishReason.ERROR].inc()
            raise errors.injected_failure()

    async def generate(
        self, prompt_token_ids: list[int], params: SamplingParams, arrival: float
    ) -> AsyncGenerator[EngineEvent, None]:
        """Events of one generation; the engine request is cancelled if the caller stops early.

        `arrival` is when the HTTP request came in: latencies (injected ones too) count from it.
        """
        if self._dispatcher is None:
            self._dispatcher = LoopDispatcher(asyncio.get_running_loop())
        dispatcher = self._dispatcher
        queue: asyncio.Queue[EngineEvent] = asyncio.Queue()
        clock = RequestClock(self.metrics, arrival)

        def sink(event: EngineEvent) -> None:
            dispatcher.put(queue, event)

        request = GenerationRequest(prompt_token_ids, params, sink)
        try:
            trial = self.breaker.admit() if self.breaker is not None else False
        except BreakerOpenError as refusal:
            raise BreakerOpenResponse(refusal) from None
        # Only the engine's own verdict counts for the breaker: a full queue, a timeout
        # or a client that left says nothing about the engine (None).
        engine_failed: bool | None = None
        finished = False
        try:
            try:
                self.batcher.submit(request)
            except QueueFullError as error:
                raise errors.queue_full(str(error)) from error
            except EngineStoppedError as error:
                raise errors.unavailable(str(error)) from error
            deadline = clock.arrival + self.request_timeout_s
            try:
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), deadline - time.monotonic())
                    except TimeoutError:
                        raise errors.timed_out(self.request_timeout_s) from None
                    if isinstance(event, TokensGenerated):
                        clock.tokens(len(event.token_ids))
                    elif isinstance(event, Finished):
                        finished = True
                        clock.finished(event)
                        if event.reason is not FinishReason.ABORT:
                            engine_failed = event.reason is FinishReason.ERROR
                    yield event
                    if finished:
                        return
            finally:
                if not finished:
                    request.cancel()
                    # The abort is counted here: the engine's own Finished will find no reader.
                    self.metrics.request_success[FinishReason.ABORT].inc()
        finally:
            if self.breaker is not None:
                self.breaker.record(trial=trial, failed=engine_failed)


@dataclass
class CollectedGeneration:
    """A whole generation gathered for a non-streaming answer."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[TokensGenerated] = field(default_factory=list)
    prompt_scores: PromptScored | None = None
    finished: Finished | None = None


async def collect(events: AsyncGenerator[EngineEvent, None]) -> CollectedGeneration:
    collected = CollectedGeneration()
    async with aclosing(events):
        async for event in events:
            if isinstance(event, TokensGenerated):
                collected.token_ids.extend(event.token_ids)
                collected.text += event.text
                collected.logprobs.append(event)
            elif isinstance(event, PromptScored):
                collected.prompt_scores = event
            else:
                collected.text += event.text
                collected.finished = event
    if collected.finished is not None and collected.finished.reason is FinishReason.ERROR:
        raise errors.APIError(
            500, collected.finished.error or "generation failed", error_type="internal_error"
        )
    return collected
