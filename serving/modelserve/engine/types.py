"""What goes into the engine and what comes out of it, free of torch."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelserve.engine.structured import OutputGrammar


class FinishReason(StrEnum):
    """Why a request ended; the values are vLLM's `finished_reason` label values."""

    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"
    ERROR = "error"


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one request (OpenAI semantics; top_k=-1 and top_p=1 disable)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    # Number of alternatives to report with each generated token; None: no logprobs.
    logprobs: int | None = None
    # Same, for every prompt token (echo with logprobs, used for perplexity).
    prompt_logprobs: int | None = None
    # Constrained decoding (structured output): only what the grammar allows is sampled.
    grammar: OutputGrammar | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of one token, with the most likely alternatives at its position."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class PromptScored:
    """Sent once after prefill when prompt logprobs were asked for; None for the first token."""

    prompt_logprobs: tuple[TokenLogprob | None, ...]


@dataclass(frozen=True)
class TokensGenerated:
    """New tokens of one request and the text they add (text is held back near a stop string)."""

    token_ids: tuple[int, ...]
    text: str
    logprobs: tuple[TokenLogprob, ...] | None


@dataclass(frozen=True)
class Finished:
    """The last event of every request."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    # Text not yet sent (held back while it could still start a stop string).
    text: str = ""
    error: str | None = None
    # With a grammar: whether the output is whole (the grammar reached its end). A
    # generation cut by max_tokens, a stop string or an abort is not.
    grammar_complete: bool | None = None


EngineEvent = PromptScored | TokensGenerated | Finished
EventSink = Callable[[EngineEvent], None]

_request_ids = itertools.count()


@dataclass(eq=False)
class GenerationRequest:
    """One prompt to complete; `sink` receives its events on the engine's thread."""

    prompt_token_ids: list[int]
    params: SamplingParams
    sink: EventSink
    request_id: int = field(default_factory=lambda: next(_request_ids))
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        """Ask the engine to drop this request (client gone, timeout); it then finishes as abort."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()


class QueueFullError(Exception):
    """The engine's waiting queue is full: the caller answers 429 at once."""


class EngineStoppedError(Exception):
    """The engine no longer takes requests (shutting down or failed)."""
