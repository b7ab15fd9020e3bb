"""Incremental detokenization with stop strings, one instance per request."""

from __future__ import annotations

from typing import Protocol


class Decoder(Protocol):
    def decode(
        self, token_ids: list[int], *, skip_special_tokens: bool, clean_up_tokenization_spaces: bool
    ) -> str: ...


class IncrementalDetokenizer:
    """Turns the growing list of generated tokens into text deltas.

    Text that could still be the start of a stop string is held back, and an
    incomplete UTF-8 sequence (decoded as U+FFFD) waits for its next byte, so
    every delta sent is final. Like vLLM's detokenizer, a sequence still incomplete
    when the request ends is never sent, and the stop string is not part of the
    output: the same greedy tokens give the same text from either engine.
    """

    def __init__(self, decoder: Decoder, stop: tuple[str, ...]) -> None:
        self._decoder = decoder
        self._stop = tuple(s for s in stop if s)
        self._hold_back = max((len(s) for s in self._stop), default=1) - 1
        self._token_ids: list[int] = []
        self._text = ""
        self._sent = 0
        self.stopped = False

    def add_token(self, token_id: int) -> str:
        """Add one token; return the text now safe to send. Sets `stopped` on a stop string."""
        self._token_ids.append(token_id)
        text = self._decoder.decode(
            self._token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        if text.endswith("\ufffd"):
            return ""
        self._text = text
        if self._stop:
            search_from = max(0, self._sent - self._hold_back)
            hits = [i for i in (text.find(s, search_from) for s in self._stop) if i >= 0]
            if hits:
                self.stopped = True
                self._text = text[: min(hits)]
                return self.flush()
        safe_end = max(self._sent, len(text) - self._hold_back)
        delta = text[self._sent : safe_end]
        self._sent = safe_end
        return delta

    def flush(self) -> str:
        """Everything not sent yet: call when the request ends."""
        delta = self._text[self._sent :]
        self._sent = len(self._text)
        return delta
