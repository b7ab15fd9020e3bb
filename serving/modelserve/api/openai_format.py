"""Shaping engine output into OpenAI response bodies and stream chunks."""

from __future__ import annotations

import time
import uuid
from typing import Any

from modelserve.engine.types import Finished, TokenLogprob


class TokenText:
    """The text of single tokens, as OpenAI's logprobs show them."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __call__(self, token_id: int) -> str:
        return str(self._tokenizer.decode([token_id], clean_up_tokenization_spaces=False))

    def text_length(self, token_ids: list[int]) -> int:
        """Length of the answer text of `token_ids` (special tokens add nothing)."""
        text = self._tokenizer.decode(
            token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return len(text)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# Tokens decoded together to measure text offsets: enough for a UTF-8 character.
_OFFSET_WINDOW = 4


class CompletionLogprobs:
    """Accumulates the legacy completions `logprobs` object (tokens, token_logprobs, ...)."""

    def __init__(self, token_text: TokenText, text_offset: int = 0) -> None:
        self._token_text = token_text
        self._offset = text_offset
        self._recent_ids: list[int] = []
        self.tokens: list[str] = []
        self.token_logprobs: list[float | None] = []
        self.top_logprobs: list[dict[str, float] | None] = []
        self.text_offset: list[int] = []

    def add(self, token_id: int, scored: TokenLogprob | None) -> None:
        text = self._token_text(token_id)
        self.tokens.append(text)
        self.text_offset.append(self._offset)
        # Offsets index the answer's text, which has no special tokens. A character
        # split over several byte-level tokens is counted once: the growth of the text
        # of the last few tokens, not the token's own text, gives the advance.
        before = self._recent_ids[-(_OFFSET_WINDOW - 1) :]
        self._recent_ids = [*before, token_id]
        self._offset += self._token_text.text_length(self._recent_ids) - (
            self._token_text.text_length(before) if before else 0
        )
        if scored is None:
            self.token_logprobs.append(None)
            self.top_logprobs.append(None)
            return
        self.token_logprobs.append(scored.logprob)
        top = {self._token_text(t): lp for t, lp in scored.top}
        top.setdefault(text, scored.logprob)
        self.top_logprobs.append(top)

    def take(self) -> dict[str, Any]:
        """The object for what was added since the last take (a stream chunk's share)."""
        body = {
            "tokens": self.tokens,
            "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top_logprobs,
            "text_offset": self.text_offset,
        }
        self.tokens, self.token_logprobs, self.top_logprobs, self.text_offset = [], [], [], []
        return body


def chat_logprobs(token_text: TokenText, scored: list[TokenLogprob]) -> dict[str, Any]:
    """The chat `logprobs` object: {"content": [{token, logprob, bytes, top_logprobs}]}."""

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        text = token_text(token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {
        "content": [
            {
                **entry(s.token_id, s.logprob),
                "top_logprobs": [entry(t, lp) for t, lp in s.top],
            }
            for s in scored
        ]
    }


def finish_reason(finished: Finished | None) -> str | None:
    return finished.reason.value if finished is not None else None
