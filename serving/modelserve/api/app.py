"""The FastAPI application: OpenAI endpoints, health, metrics, draining."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelserve.api import errors
from modelserve.api.breaker import CircuitBreaker, metered_breaker
from modelserve.api.cache import CacheLookup, ModelIdentity, ResponseCache
from modelserve.api.generation import CollectedGeneration, Generator, collect
from modelserve.api.openai_format import (
    CompletionLogprobs,
    TokenText,
    chat_logprobs,
    finish_reason,
    new_id,
    now,
    usage,
)
from modelserve.api.protocol import ChatCompletionRequest, CompletionRequest, ResponseFormat
from modelserve.config.settings import ServeSettings
from modelserve.engine.batcher import ContinuousBatcher
from modelserve.engine.loader import LoadedModel, load_model
from modelserve.engine.structured import ConstrainedDecoding, GrammarError, OutputGrammar
from modelserve.engine.types import (
    Finished,
    FinishReason,
    GenerationRequest,
    PromptScored,
    SamplingParams,
    TokenLogprob,
    TokensGenerated,
)
from modelserve.faults import EngineFaultDecider, FaultDecider
from modelserve.http_defaults import SERVED_BY_HEADER
from modelserve.metrics import ServingMetrics
from modelserve.record import build_record

logger = logging.getLogger(__name__)

API_PREFIX = "/v1/"
HANDLERS = (
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/models",
    "/v1/model-record",
    "/health",
    "/live",
    "/metrics",
)


@dataclass
class ServerState:
    """Everything the handlers share; the model arrives after startup (503 on /health till then)."""

    settings: ServeSettings
    metrics: ServingMetrics
    loaded: LoadedModel | None = None
    # What was loaded (modelserve.record), for GET /v1/model-record.
    model_record: dict[str, Any] | None = None
    response_cache: ResponseCache | None = None
    generator: Generator | None = None
    load_error: str | None = None
    # Grammars for response_format over the model's vocabulary; None when the
    # tokenizer could not be read for them (grammar_error says why).
    grammars: ConstrainedDecoding | None = None
    grammar_error: str | None = None
    # None: the breaker is off.
    breaker: CircuitBreaker | None = None
    draining: bool = False
    in_flight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def ready(self) -> bool:
        return self.generator is not None and not self.draining

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests and wait for in-flight ones; True if all finished in time."""
        self.draining = True
        logger.info(
            "draining: %d request(s) in flight, waiting up to %gs", self.in_flight, timeout_s
        )
        if self.in_flight == 0:
            return True
        self._idle.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            logger.warning("drain timeout: %d request(s) still in flight", self.in_flight)
            return False

    def request_done(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()


class ServingMiddleware:
    """Counts HTTP requests by handler and status class, tracks in-flight API requests for
    draining, refuses API requests while loading or draining (503), and names the pod in
    every response."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.served_by = (SERVED_BY_HEADER.encode(), state.settings.pod_name.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        handler = path if path in HANDLERS else "none"
        status_code = 500

        async def send_counting(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                if self.served_by[1]:
                    message = {**message, "headers": [*message.get("headers", []), self.served_by]}
            await send(message)

        try:
            if not path.startswith(API_PREFIX):
                await self.app(scope, receive, send_counting)
                return
            if not self.state.ready():
                if self.state.draining:
                    reason = "draining"
                elif self.state.load_error:
                    reason = "without a model: it failed to load"
                else:
                    reason = "loading the model"
                await errors.unavailable(f"the server is {reason}").response()(
                    scope, receive, send_counting
                )
                return
            self.state.in_flight += 1
            try:
                await self.app(scope, receive, send_counting)
            finally:
                self.state.request_done()
        finally:
            self.state.metrics.count_http_request(scope["method"], handler, status_code)


async def _until_disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _unless_disconnected(request: Request, work: Awaitable[Response]) -> Response:
    """Run `work`, but cancel it (freeing its batch slot) when the client goes away."""
    work_task = asyncio.ensure_future(work)
    watch_task = asyncio.ensure_future(_until_disconnected(request))
    done, _ = await asyncio.wait({work_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
    if work_task in done:
        watch_task.cancel()
        return work_task.result()
    work_task.cancel()
    # Nobody reads this answer; 499 is what proxies log for a client that closed.
    return Response(status_code=499)


def _sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


class OpenAIHandlers:
    """Turns validated OpenAI requests into engine work and answers."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    @property
    def _loaded(self) -> LoadedModel:
        assert self.state.loaded is not None
        return self.state.loaded

    @property
    def _generator(self) -> Generator:
        assert self.state.generator is not None
        return self.state.generator

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.state.settings.served_model_name:
            raise errors.model_not_found(model)

    def _cache_lookup(
        self, request: Request, endpoint: str, body: CompletionRequest | ChatCompletionRequest
    ) -> CacheLookup | None:
        """After validation, so that an invalid request is refused the same way from the cache."""
        cache = self.state.response_cache
        return cache.lookup(request, endpoint, body) if cache is not None else None

    def _encode_prompt(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise errors.bad_request("prompt must not be empty", param="prompt")
            ids: list[int] = self._loaded.tokenizer(prompt).input_ids
            return ids
        if not prompt:
            raise errors.bad_request("prompt must not be empty", param="prompt")
        vocab = len(self._loaded.tokenizer)
        if any(not 0 <= t < vocab for t in prompt):
            raise errors.bad_request(f"prompt token ids must be within [0, {vocab})", "prompt")
        return list(prompt)

    def _max_tokens(self, prompt_len: int, requested: int | None) -> int:
        context = self._loaded.max_model_len
        if requested is None:
            requested = context - prompt_len
        if prompt_len + requested > context:
            raise errors.bad_request(
                f"This model's maximum context length is {context} tokens. However, you "
                f"requested {prompt_len + requested} tokens ({prompt_len} in the prompt, "
                f"{requested} for the completion). Reduce the prompt or max_tokens.",
                param="max_tokens",
            )
        if requested < 1 and prompt_len >= context:
            raise errors.bad_request("the prompt fills the model's context", param="prompt")
        return requested

    async def _grammar(self, response_format: ResponseFormat | None) -> OutputGrammar | None:
        """The grammar a response format asks for (None: free text); 400 for one that cannot
        be enforced. Compiled off the event loop (a large vocabulary takes a while)."""
        if response_format is None or response_format.type == "text":
            return None
        grammars = self.state.grammars
        if grammars is None:
            raise errors.bad_request(
                f"response_format {response_format.type} is not available for this model: "
                f"{self.state.grammar_error}",
                param="response_format",
            )
        if response_format.type == "json_object":
            return await asyncio.to_thread(grammars.json_object)
        assert response_format.json_schema is not None
        schema = response_format.json_schema.json_schema
        try:
            return await asyncio.to_thread(grammars.json_schema, schema)
        except GrammarError as error:
            raise errors.bad_request(
                f"response_format.json_schema.schema: {error}",
                param="response_format.json_schema.schema",
            ) from None

    # --- /v1/completions -------------------------------------------------------------

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        arrival = time.monotonic()
        self._check_model(body.model)
        if body.n != 1:
            raise errors.bad_request("only n=1 is supported", param="n")
        prompts = self._split_prompts(body.prompt)
        if body.stream and len(prompts) > 1:
            raise errors.bad_request("streaming takes a single prompt", param="prompt")
        if body.max_tokens == 0 and not body.echo:
            raise errors.bad_request("max_tokens=0 needs echo=true", param="max_tokens")
        encoded = [self._encode_prompt(p) for p in prompts]
        grammar = await self._grammar(body.response_format)
        params = [self._completion_params(body, len(ids), grammar) for ids in encoded]
        cache = self._cache_lookup(request, "completions", body)
        if cache is not None and (cached := cache.cached_response()) is not None:
            return cached
        await self._generator.before_start()
        response: Response
        if body.stream:
            response = self._stream_completion(body, prompts[0], encoded[0], params[0], arrival)
        else:
            response = await _unless_disconnected(
                request, self._complete(body, prompts, encoded, params, arrival)
            )
        return cache.finish(response) if cache is not None else response

    @staticmethod
    def _split_prompts(prompt: str | list[int] | list[str] | list[list[int]]) -> list[Any]:
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            raise errors.bad_request("prompt must not be empty", param="prompt")
        if all(isinstance(p, int) for p in prompt):
            return [prompt]
        return list(prompt)

    def _completion_params(
        self, body: CompletionRequest, prompt_len: int, grammar: OutputGrammar | None
    ) -> SamplingParams:
        return SamplingParams(
            max_tokens=self._max_tokens(prompt_len, body.max_tokens),
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k if body.top_k > 0 else -1,
            seed=body.seed,
            stop=body.stop_strings(),
            ignore_eos=body.ignore_eos,
            logprobs=body.logprobs,
            prompt_logprobs=body.logprobs if body.echo and body.logprobs is not None else None,
            grammar=grammar,
        )

    def _prompt_text(self, prompt: str | list[int]) -> str:
        if isinstance(prompt, str):
            return prompt
        return str(self._loaded.tokenizer.decode(prompt, clean_up_tokenization_spaces=False))

    def _echo_logprobs(
        self, logprobs: CompletionLogprobs, ids: list[int], scores: PromptScored | None
    ) -> None:
        per_token: tuple[TokenLogprob | None, ...] = (
            scores.prompt_logprobs if scores else (None,) * len(ids)
        )
        for token_id, scored in zip(ids, per_token, strict=True):
            logprobs.add(token_id, scored)

    async def _complete(
        self,
        body: CompletionRequest,
        prompts: list[Any],
        encoded: list[list[int]],
        params: list[SamplingParams],
        arrival: float,
    ) -> Response:
        results: list[CollectedGeneration] = await asyncio.gather(
            *(
                collect(self._generator.generate(ids, p, arrival))
                for ids, p in zip(encoded, params, strict=True)
            )
        )
        token_text = TokenText(self._loaded.tokenizer)
        choices = []
        prompt_tokens = completion_tokens = 0
        for index, (prompt, ids, result) in enumerate(zip(prompts, encoded, results, strict=True)):
            text = (self._prompt_text(prompt) if body.echo else "") + result.text
            logprobs_body = None
            if body.logprobs is not None:
                logprobs = CompletionLogprobs(token_text)
                if body.echo:
                    self._echo_logprobs(logprobs, ids, result.prompt_scores)
                for event in result.logprobs:
                    for token_id, scored in zip(event.token_ids, event.logprobs or (), strict=True):
                        logprobs.add(token_id, scored)
                logprobs_body = logprobs.take()
            choices.append(
                {
                    "index": index,
                    "text": text,
                    "logprobs": logprobs_body,
                    "finish_reason": finish_reason(result.finished),
                    **structured_output_fields(params[index], result.finished),
                }
            )
            prompt_tokens += len(ids)
            completion_tokens += len(result.token_ids)
        return JSONResponse(
            {
                "id": new_id("cmpl"),
                "object": "text_completion",
                "created": now(),
                "model": self.state.settings.served_model_name,
                "choices": choices,
                "usage": usage(prompt_tokens, completion_tokens),
            }
        )

    def _stream_completion(
        self,
        body: CompletionRequest,
        prompt: Any,
        ids: list[int],
        params: SamplingParams,
        arrival: float,
    ) -> StreamingResponse:
        completion_id, created = new_id("cmpl"), now()
        model = self.state.settings.served_model_name
        token_text = TokenText(self._loaded.tokenizer)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(
            text: str,
            logprobs: dict[str, Any] | None,
            reason: str | None,
            finished: Finished | None = None,
        ) -> str:
            choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason}
            if finished is not None:
                choice.update(structured_output_fields(params, finished))
            return _sse(
                {
                    "id": completion_id,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [choice],
                }
            )

        async def stream() -> AsyncIterator[str]:
            logprobs = CompletionLogprobs(token_text) if body.logprobs is not None else None
            if body.echo and params.prompt_logprobs is None:
                if logprobs is not None:
                    self._echo_logprobs(logprobs, ids, None)
                yield chunk(self._prompt_text(prompt), logprobs.take() if logprobs else None, None)
            completion_tokens = 0
            # Closed at once when the client leaves, so the engine drops the request.
            async with aclosing(self._generator.generate(ids, params, arrival)) as events:
                async for event in events:
                    if isinstance(event, PromptScored) and logprobs is not None:
                        self._echo_logprobs(logprobs, ids, event)
                        yield chunk(self._prompt_text(prompt), logprobs.take(), None)
                    elif isinstance(event, TokensGenerated):
                        completion_tokens += len(event.token_ids)
                        if logprobs is not None:
                            for token_id, scored in zip(
                                event.token_ids, event.logprobs or (), strict=True
                            ):
                                logprobs.add(token_id, scored)
                        if event.text or logprobs is not None:
                            yield chunk(event.text, logprobs.take() if logprobs else None, None)
                    elif isinstance(event, Finished):
                        yield _stream_end(event, chunk(event.text, None, event.reason.value, event))
                        if include_usage:
                            yield _sse(
                                {
                                    "id": completion_id,
                                    "object": "text_completion",
                                    "created": created,
                                    "model": model,
                                    "choices": [],
                                    "usage": usage(len(ids), completion_tokens),
                                }
                            )
            yield _sse("[DONE]")

        return StreamingResponse(_guard_stream(stream()), media_type="text/event-stream")

    # --- /v1/chat/completions ----------------------------------------------------------

    async def chat_completions(self, body: ChatCompletionRequest, request: Request) -> Response:
        arrival = time.monotonic()
        self._check_model(body.model)
        if body.n != 1:
            raise errors.bad_request("only n=1 is supported", param="n")
        _refuse_tool_calling(body)
        tokenizer = self._loaded.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise errors.bad_request("this model has no chat template: use /v1/completions")
        ids: list[int] = tokenizer.apply_chat_template(
            body.template_messages(), add_generation_prompt=True, tokenize=True
        )
        top = body.top_logprobs or 0
        grammar = await self._grammar(body.response_format)
        params = SamplingParams(
            max_tokens=self._max_tokens(len(ids), body.requested_max_tokens()),
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k if body.top_k > 0 else -1,
            seed=body.seed,
            stop=body.stop_strings(),
            ignore_eos=body.ignore_eos,
            logprobs=top if body.logprobs else None,
            grammar=grammar,
        )
        cache = self._cache_lookup(request, "chat/completions", body)
        if cache is not None and (cached := cache.cached_response()) is not None:
            return cached
        await self._generator.before_start()
        response: Response
        if body.stream:
            response = self._stream_chat(body, ids, params, arrival)
        else:
            response = await _unless_disconnected(request, self._chat(body, ids, params, arrival))
        return cache.finish(response) if cache is not None else response

    async def _chat(
        self, body: ChatCompletionRequest, ids: list[int], params: SamplingParams, arrival: float
    ) -> Response:
        result = await collect(self._generator.generate(ids, params, arrival))
        logprobs_body = None
        if body.logprobs:
            scored = [s for event in result.logprobs for s in (event.logprobs or ())]
            logprobs_body = chat_logprobs(TokenText(self._loaded.tokenizer), scored)
        return JSONResponse(
            {
                "id": new_id("chatcmpl"),
                "object": "chat.completion",
                "created": now(),
                "model": self.state.settings.served_model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.text},
                        "logprobs": logprobs_body,
                        "finish_reason": finish_reason(result.finished),
                        **structured_output_fields(params, result.finished),
                    }
                ],
                "usage": usage(len(ids), len(result.token_ids)),
            }
        )

    def _stream_chat(
        self, body: ChatCompletionRequest, ids: list[int], params: SamplingParams, arrival: float
    ) -> StreamingResponse:
        chat_id, created = new_id("chatcmpl"), now()
        model = self.state.settings.served_model_name
        token_text = TokenText(self._loaded.tokenizer)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(
            delta: dict[str, Any],
            logprobs: dict[str, Any] | None,
            reason: str | None,
            finished: Finished | None = None,
        ) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
            if finished is not None:
                choice.update(structured_output_fields(params, finished))
            return _sse(
                {
                    "id": chat_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [choice],
                }
            )

        async def stream() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""}, None, None)
            completion_tokens = 0
            # Closed at once when the client leaves, so the engine drops the request.
            async with aclosing(self._generator.generate(ids, params, arrival)) as events:
                async for event in events:
                    if isinstance(event, TokensGenerated):
                        completion_tokens += len(event.token_ids)
                        logprobs = (
                            chat_logprobs(token_text, list(event.logprobs or ()))
                            if body.logprobs
                            else None
                        )
                        if event.text or logprobs is not None:
                            yield chunk({"content": event.text}, logprobs, None)
                    elif isinstance(event, Finished):
                        delta = {"content": event.text} if event.text else {}
                        yield _stream_end(event, chunk(delta, None, event.reason.value, event))
                        if include_usage:
                            yield _sse(
                                {
                                    "id": chat_id,
                                    "object": "chat.completion.chunk",
                                    "created": created,
                                    "model": model,
                                    "choices": [],
                                    "usage": usage(len(ids), completion_tokens),
                                }
                            )
            yield _sse("[DONE]")

        return StreamingResponse(_guard_stream(stream()), media_type="text/event-stream")


# In every choice of a structured request (response_format json_object or json_schema;
# the last chunk's when streaming): whether the output is whole. False when max_tokens
# (finish_reason "length"), a stop string or an abort cut it: the JSON may be incomplete.
STRUCTURED_COMPLETE_FIELD = "structured_output_complete"


def structured_output_fields(params: SamplingParams, finished: Finished | None) -> dict[str, bool]:
    if params.grammar is None:
        return {}
    return {STRUCTURED_COMPLETE_FIELD: finished is not None and finished.grammar_complete is True}


def _refuse_tool_calling(body: ChatCompletionRequest) -> None:
    """This server calls no tools: a request that offers or demands them is refused by name,
    not answered as if they were not there."""
    for param, value in (("tools", body.tools), ("functions", body.functions)):
        if value:
            raise errors.bad_request(
                f"{param}: tool calling is not supported by this server (send no {param})",
                param=param,
            )
    for param, value in (("tool_choice", body.tool_choice), ("function_call", body.function_call)):
        if value not in (None, "none", "auto"):
            raise errors.bad_request(
                f"{param}: tool calling is not supported by this server "
                '(only "none" or "auto" with no tools)',
                param=param,
            )


def _stream_end(event: Finished, last_chunk: str) -> str:
    """The last chunk of a stream, or an error event when the engine failed the request."""
    if event.reason is FinishReason.ERROR:
        return _sse(errors.error_body(event.error or "generation failed", "internal_error"))
    return last_chunk


async def _guard_stream(stream: AsyncIterator[str]) -> AsyncIterator[str]:
    """Once streaming has begun the status is sent: errors become an error event, then [DONE]."""
    try:
        async for line in stream:
            yield line
    except errors.APIError as error:
        yield _sse(error.body())
        yield _sse("[DONE]")


def load_engine(state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
    """Load the model and warm it up (on a worker thread), then open the API."""
    settings = state.settings
    try:
        loaded = load_model(
            settings.model_uri,
            pvc_mount_root=settings.pvc_mount_root,
            dtype=settings.dtype,
            device=settings.device,
            max_model_len=settings.max_model_len,
        )
        record = build_record(
            uri=settings.model_uri,
            served_model_name=settings.served_model_name,
            config=loaded.model.config.to_dict(),
            parameters=sum(p.numel() for p in loaded.model.parameters()),
            context_length=loaded.max_model_len,
            serving_dtype=settings.dtype,
            directory=loaded.directory,
        )
        batcher = ContinuousBatcher(
            loaded.model,
            loaded.tokenizer,
            max_batch_size=settings.max_batch_size,
            max_queue_size=settings.max_queue_size,
            eos_token_ids=loaded.eos_token_ids,
            pad_token_id=loaded.pad_token_id,
            token_delay_s=settings.faults.token_delay_s,
        )
        batcher.start()
        _warm_up(batcher, loaded)
        # After the warm-up, which must succeed for the server to turn ready.
        if settings.faults.engine_error_rate > 0:
            batcher.inject_step_faults(EngineFaultDecider(settings.faults).check_step)
    except Exception as error:
        logger.exception("model load failed")
        state.load_error = f"{type(error).__name__}: {error}"
        return
    state.metrics.track_engine(lambda: batcher.num_running, lambda: batcher.num_waiting)
    grammars: ConstrainedDecoding | None = None
    grammar_error: str | None = None
    try:
        grammars = ConstrainedDecoding(
            loaded.tokenizer, int(loaded.model.config.vocab_size), loaded.eos_token_ids
        )
    except Exception as error:  # structured output is one feature; serving goes on without it
        logger.warning("no constrained decoding for this tokenizer: %s", error)
        grammar_error = f"its tokenizer could not be read for constrained decoding ({error})"
    generator = Generator(
        batcher,
        state.metrics,
        FaultDecider(settings.faults),
        settings.request_timeout_s,
        breaker=state.breaker,
    )

    def publish() -> None:
        state.loaded, state.generator, state.model_record = loaded, generator, record
        state.grammars, state.grammar_error = grammars, grammar_error
        logger.info("model %s loaded and warm; serving", settings.served_model_name)

    loop.call_soon_threadsafe(publish)


def _warm_up(batcher: ContinuousBatcher, loaded: LoadedModel) -> None:
    """One short generation, so the first real request does not pay for lazy initialisation."""
    done = threading.Event()

    def sink(event: object) -> None:
        if isinstance(event, Finished):
            done.set()

    prompt = loaded.tokenizer("warm up").input_ids or [loaded.pad_token_id]
    batcher.submit(GenerationRequest(prompt, SamplingParams(max_tokens=2, temperature=0.0), sink))
    done.wait()


def create_app(settings: ServeSettings) -> FastAPI:
    """The application; the model loads in the background once the app starts."""
    state = ServerState(settings=settings, metrics=ServingMetrics(settings.served_model_name))
    if settings.breaker_failure_threshold > 0:
        state.breaker = metered_breaker(
            settings.breaker_failure_threshold,
            settings.breaker_cooldown_s,
            state.metrics.registry,
            settings.served_model_name,
        )
    if settings.response_cache_size > 0:
        state.response_cache = ResponseCache(
            ModelIdentity(settings.served_model_name, settings.model_uri, time.time_ns()),
            state.metrics.registry,
            ttl_s=settings.response_cache_ttl_s,
            max_entries=settings.response_cache_size,
            max_bytes=settings.response_cache_max_bytes,
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        loader = threading.Thread(
            target=load_engine, args=(state, loop), name="modelserve-load", daemon=True
        )
        loader.start()
        yield
        state.draining = True
        if state.generator is not None:
            await asyncio.to_thread(state.generator.batcher.stop)

    app = FastAPI(title="modelserve", lifespan=lifespan)
    app.state.serving = state
    handlers = OpenAIHandlers(state)

    @app.exception_handler(errors.APIError)
    async def _api_error(request: Request, error: errors.APIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        location = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            return errors.bad_request("the request body is not valid JSON").response()
        else:
            message = f"{'.'.join(location) or 'body'}: {first.get('msg', 'invalid request')}"
        return errors.bad_request(message, param=location[0] if location else None).response()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await handlers.completions(body, request)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await handlers.chat_completions(body, request)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        loaded = state.loaded
        return {
            "object": "list",
            "data": [
                {
                    "id": settings.served_model_name,
                    "object": "model",
                    "created": now(),
                    "owned_by": "modelserve",
                    "root": settings.model_uri,
                    "max_model_len": loaded.max_model_len if loaded else None,
                }
            ],
        }

    @app.get("/v1/model-record")
    async def model_record() -> dict[str, Any]:
        # The middleware answers 503 until the model is loaded, and the record comes with it.
        if state.model_record is None:
            raise errors.unavailable("the server has no model record yet")
        return state.model_record

    @app.get("/health")
    async def health() -> Response:
        if state.load_error is not None:
            return JSONResponse({"status": "failed", "error": state.load_error}, status_code=503)
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if state.generator is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        if state.breaker is not None and not state.breaker.accepting():
            # Unready, so the pod leaves the endpoints until the half-open trial.
            retry_after = state.breaker.retry_after_s()
            return JSONResponse(
                {"status": "circuit-open", "retry_after_s": round(retry_after, 3)},
                status_code=503,
                headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
            )
        return JSONResponse({"status": "ok"})

    @app.get("/live")
    async def live() -> Response:
        # Liveness: the process answers. Readiness (/health) may say 503 for a while
        # (loading, draining, an open breaker) without the kubelet restarting it.
        return JSONResponse({"status": "alive"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(ServingMiddleware, state=state)
    return app
