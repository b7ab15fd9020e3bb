"""`modelserve eval`: perplexity of a served model on a text, through the OpenAI API.

It asks /v1/completions for prompt logprobs (echo, max_tokens=0), the same
request lm-evaluation-harness makes, so it works against vLLM too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class PerplexityResult:
    tokens_scored: int
    mean_negative_logprob: float

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_negative_logprob)


def perplexity(
    base_url: str, model: str, texts: list[str], timeout_s: float = 60.0
) -> PerplexityResult:
    """Perplexity over `texts`, each scored on its own (the first token of each has no logprob)."""
    total = 0.0
    count = 0
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s) as client:
        for text in texts:
            response = client.post(
                "/v1/completions",
                json={"model": model, "prompt": text, "max_tokens": 0, "echo": True, "logprobs": 0},
            )
            response.raise_for_status()
            token_logprobs = response.json()["choices"][0]["logprobs"]["token_logprobs"]
            scored = [lp for lp in token_logprobs if lp is not None]
            total -= sum(scored)
            count += len(scored)
    if count == 0:
        raise ValueError("no token was scored: the texts are too short")
    return PerplexityResult(tokens_scored=count, mean_negative_logprob=total / count)
