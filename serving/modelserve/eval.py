"""`modelserve eval`: perplexity of a served model on a text, through the OpenAI API.

It asks /v1/completions for prompt logprobs (echo, max_tokens=0), the same
request lm-evaluation-harness makes, so it works against vLLM too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class PerplexityResult:
    tokens_scored: int
    mean_negative_logprob: float

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_negative_logprob)


# A connection that fails (refused, no route, a name not resolved yet) is tried again, 8 times
# over about 30 s (httpcore's backoff: 0, 0.5, 1, 2 ... 16 s): an evaluation Job starts as soon
# as the canary is Ready, which can be before the node's kube-proxy has the revision's new
# Service address (seen on the local real node: "[Errno 101] Network is unreachable").
CONNECT_RETRIES = 8


def server_client(base_url: str, timeout_s: float, **options: Any) -> httpx.Client:
    """An HTTP client of a model server that rides out the first seconds of a new Service."""
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        timeout=timeout_s,
        transport=httpx.HTTPTransport(retries=CONNECT_RETRIES),
        **options,
    )


def perplexity(
    base_url: str, model: str, texts: list[str], timeout_s: float = 60.0
) -> PerplexityResult:
    """Perplexity over `texts`, each scored on its own (the first token of each has no logprob)."""
    total = 0.0
    count = 0
    with server_client(base_url, timeout_s) as client:
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
