"""Choosing the next token of every row of a batch, and the logprobs the caller asked for."""

from __future__ import annotations

import torch

from modelserve.engine.types import SamplingParams, TokenLogprob


def make_generator(params: SamplingParams) -> torch.Generator | None:
    """A per-request generator, so a seeded request gives the same tokens whatever its batch."""
    if params.greedy:
        return None
    generator = torch.Generator()
    if params.seed is None:
        generator.seed()
    else:
        generator.manual_seed(params.seed)
    return generator


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask out (to -inf) tokens outside the top-k and outside the top-p nucleus of a 1-D row."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, sorted_index = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already reach top_p; the first always stays.
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, sorted_index, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def choose_tokens(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
) -> list[int]:
    """Next token per row of `logits` [batch, vocab]: argmax for temperature 0, else a sample."""
    chosen = torch.argmax(logits, dim=-1).tolist()
    for row, row_params in enumerate(params):
        if row_params.greedy:
            continue
        # Sampled on the CPU, where the request's generator lives.
        row_logits = logits[row].float().cpu() / row_params.temperature
        row_logits = filter_top_k_top_p(row_logits, row_params.top_k, row_params.top_p)
        probabilities = torch.softmax(row_logits, dim=-1)
        sample = torch.multinomial(probabilities, 1, generator=generators[row])
        chosen[row] = int(sample.item())
    return [int(token) for token in chosen]


def token_logprobs(logprobs_row: torch.Tensor, token_id: int, num_top: int) -> TokenLogprob:
    """The logprob of `token_id` in a row of log-probabilities, with the `num_top` best tokens."""
    top: tuple[tuple[int, float], ...] = ()
    if num_top > 0:
        values, indices = torch.topk(logprobs_row, num_top)
        top = tuple(zip(indices.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token_id=token_id, logprob=float(logprobs_row[token_id]), top=top)
