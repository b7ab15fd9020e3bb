"""What one comparison measures: pure functions of a request and the two answers.

Answers are compared as text: the concatenation of every choice's content (a
chat message, a completion's text, or a stream's deltas). Tokens are
whitespace-separated words, so the measures do not depend on either side's
tokenizer (a candidate may change it):

- exact match: the texts are identical; counted only for greedy or seeded
  requests (temperature 0, top_k 1 or a seed), where the same weights must
  give the same answer;
- token agreement: difflib's SequenceMatcher ratio over the two token lists
  (2 * matches / total tokens; 1.0 for two empty answers);
- length ratio: candidate tokens / stable tokens (1.0 for two empty answers; an
  empty stable answer counts as one token, so the ratio stays finite);
- empty: nothing but whitespace, or an answer opening with a refusal phrase;
- JSON validity: where the request's response_format asked for JSON
  (json_object or json_schema), whether the answer parses as JSON.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

REFUSAL_OPENINGS = (
    "i'm sorry",
    "i am sorry",
    "i cannot",
    "i can't",
    "i can not",
    "i won't",
    "as an ai",
)


@dataclass(frozen=True)
class Measures:
    deterministic: bool
    exact_match: bool
    token_agreement: float
    length_ratio: float
    stable_empty: bool
    candidate_empty: bool
    json_asked: bool
    stable_json_valid: bool
    candidate_json_valid: bool


def is_deterministic(request: dict[str, Any]) -> bool:
    """Greedy or seeded: the same weights must give the same answer (OpenAI's default
    temperature is 1)."""
    temperature = request.get("temperature", 1.0)
    return (
        (isinstance(temperature, int | float) and float(temperature) == 0.0)
        or request.get("top_k") == 1
        or request.get("seed") is not None
    )


def asks_json(request: dict[str, Any]) -> bool:
    response_format = request.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    )


def _choice_text(choice: Any) -> str:
    if not isinstance(choice, dict):
        return ""
    for holder in (choice.get("message"), choice.get("delta")):
        if isinstance(holder, dict) and isinstance(holder.get("content"), str):
            return str(holder["content"])
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def _choices_text(payload: Any) -> str:
    choices = payload.get("choices") if isinstance(payload, dict) else None
    return "".join(_choice_text(choice) for choice in choices or [])


def answer_text(body: bytes, streamed: bool) -> str:
    """The answer's text from a response body: JSON, or server-sent events when `streamed`."""
    if not streamed:
        try:
            return _choices_text(json.loads(body))
        except ValueError:
            return ""
    return "".join(_choices_text(event) for event in _events(body.decode("utf-8", "replace")))


def _events(stream: str) -> Iterable[Any]:
    for line in stream.splitlines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except ValueError:
            continue


def is_empty(text: str) -> bool:
    stripped = text.strip().lower()
    return not stripped or stripped.startswith(REFUSAL_OPENINGS)


def _valid_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def token_agreement(stable: list[str], candidate: list[str]) -> float:
    if not stable and not candidate:
        return 1.0
    return difflib.SequenceMatcher(None, stable, candidate, autojunk=False).ratio()


def length_ratio(stable: list[str], candidate: list[str]) -> float:
    if not stable and not candidate:
        return 1.0
    return len(candidate) / max(len(stable), 1)


def measure(request: dict[str, Any], stable: str, candidate: str) -> Measures:
    stable_tokens, candidate_tokens = stable.split(), candidate.split()
    json_asked = asks_json(request)
    return Measures(
        deterministic=is_deterministic(request),
        exact_match=stable == candidate,
        token_agreement=token_agreement(stable_tokens, candidate_tokens),
        length_ratio=length_ratio(stable_tokens, candidate_tokens),
        stable_empty=is_empty(stable),
        candidate_empty=is_empty(candidate),
        json_asked=json_asked,
        stable_json_valid=json_asked and _valid_json(stable),
        candidate_json_valid=json_asked and _valid_json(candidate),
    )
