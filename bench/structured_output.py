"""Constrained decoding's cost per token: response_format against free text.

1. Through a server: one `modelserve serve` on a generated random-weights model (vocab
   512), greedy streamed chat completions of free text (ignore_eos) and of two JSON
   schemas too long to finish, so every request decodes exactly max_tokens tokens. A
   request's time per token after the first is (end - first token) / (tokens - 1).
   The cases take turns, round by round, so load on the machine falls on all alike.
   Prints p50/p95/p99 per case and concurrency, and the p50 overhead over free text.
2. The mask alone, in process, at real vocabulary sizes (a synthetic vocabulary of
   32k and 128k tokens: byte tokens plus random words): modelserve's own
   mask_disallowed plus the matcher's accept, per token and row, for 1 and 8 rows.

    .venv/bin/python bench/structured_output.py [--hidden-size 256 --layers 2 --requests 24]
        [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import product
from pathlib import Path
from typing import Any

import httpx
import torch
import xgrammar as xgr

from local_server import MODEL_NAME, bench_model, start_server
from modelserve.engine.structured import GrammarState, OutputGrammar, allowed_bits, mask_disallowed
from modelserve.loadgen import percentile

# Both schemas need more than max_tokens tokens, so every case decodes exactly max_tokens
# tokens (finish_reason "length"): the same batch occupancy, the same work but the mask.
LONG_STRING: dict[str, Any] = {"type": "string", "minLength": 120, "maxLength": 120}
ORDERS: dict[str, Any] = {
    "type": "array",
    "minItems": 100,
    "items": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1, "maximum": 99999},
            "status": {"enum": ["pending", "shipped", "delivered"]},
            "express": {"type": "boolean"},
        },
        "required": ["id", "status", "express"],
        "additionalProperties": False,
    },
}


def schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


CASES: dict[str, dict[str, Any]] = {
    "free text": {"ignore_eos": True},
    "json string": {"response_format": schema_format("text", LONG_STRING)},
    "json orders": {"response_format": schema_format("orders", ORDERS)},
}
PROMPTS = ["Give me the order.", "Order status?", "Describe the shipment.", "JSON please."]


def per_token_s(client: httpx.Client, body: dict[str, Any]) -> float | None:
    """Seconds per output token after the first, for one streamed request that ran to
    max_tokens (None otherwise: a shorter answer would not compare)."""
    first: float | None = None
    tokens = 0
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
            elif first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.monotonic()
    end = time.monotonic()
    if first is None or tokens != body["max_tokens"]:
        return None
    return (end - first) / (tokens - 1)


def measure(
    url: str, case: dict[str, Any], concurrency: int, requests: int, max_tokens: int
) -> list[float]:
    bodies = [
        {
            "model": MODEL_NAME,
            "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            **case,
        }
        for i in range(requests)
    ]
    with httpx.Client(base_url=url, timeout=600) as client, ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda body: per_token_s(client, body), bodies))
    return [r for r in results if r is not None]


def synthetic_grammar(vocab_size: int, schema: dict[str, Any]) -> OutputGrammar:
    """`schema`'s grammar over a synthetic vocabulary: token 0 ends, then the 256 bytes,
    then random words of 2 to 8 printable characters (as a BPE vocabulary has)."""
    chooser = random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,:{}[]\"'"
    words = {
        "".join(chooser.choices(alphabet, k=chooser.randint(2, 8))).encode()
        for _ in range(vocab_size * 2)
    }
    vocab = [b"</s>", *(bytes([b]) for b in range(256)), *sorted(words)][:vocab_size]
    info = xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=vocab_size, stop_token_ids=[0])
    compiled = xgr.GrammarCompiler(info, max_threads=1).compile_json_schema(
        json.dumps(schema), any_whitespace=False
    )
    return OutputGrammar(compiled, [0], allowed_bits(set(), vocab_size))


def mask_cost_us(grammar: OutputGrammar, vocab_size: int, rows: int, steps: int) -> float:
    """Median microseconds per token and row spent masking the logits (modelserve's
    mask_disallowed) and advancing the grammar by the chosen token; the sampling between
    is not the grammar's and is not timed. The median: the machine's load comes in spikes."""
    generator = torch.Generator().manual_seed(0)
    states: list[GrammarState | None] = [grammar.start() for _ in range(rows)]
    per_step: list[float] = []
    for _ in range(steps):
        logits = torch.randn(rows, vocab_size, generator=generator)
        begin = time.perf_counter()
        mask_disallowed(logits, states)
        spent = time.perf_counter() - begin
        chosen = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).flatten()
        begin = time.perf_counter()
        for row, token in enumerate(chosen.tolist()):
            state = states[row]
            assert state is not None and state.accept(token)
        spent += time.perf_counter() - begin
        per_step.append(spent / rows)
        for row, state in enumerate(states):
            if state is not None and state.complete:  # a short answer: the next one starts
                states[row] = grammar.start()
    return (percentile(per_step, 50) or 0.0) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--device", default="auto", help="modelserve's --device: auto, cpu, cuda")
    parser.add_argument("--vocab-sizes", type=int, nargs="*", default=[32000, 128000])
    parser.add_argument("--mask-only", action="store_true", help="only part 2, in process")
    args = parser.parse_args()

    if not args.mask_only:
        server_cases(args)
    print("\nthe mask alone, in process (synthetic vocabulary), per token and row:")
    print(f"{'vocab':>7} | {'schema':<11} | {'rows':>4} | {'median us/token':>15}")
    for vocab_size in args.vocab_sizes:
        for name, schema in (("json string", LONG_STRING), ("json orders", ORDERS)):
            grammar = synthetic_grammar(vocab_size, schema)
            for rows in (1, 8):
                cost = mask_cost_us(grammar, vocab_size, rows, 200)
                print(f"{vocab_size:>7} | {name:<11} | {rows:>4} | {cost:>15.0f}")
    return 0


def server_cases(args: argparse.Namespace) -> None:
    """Part 1: the server, free text against the two schemas."""
    work = Path(tempfile.mkdtemp(prefix="modelserve-structured-bench-"))
    model_dir = bench_model(work / "model", args.hidden_size, args.layers, 4)
    print(
        f"model: Llama-style, hidden {args.hidden_size}, {args.layers} layers, vocab 512, fp32; "
        f"greedy chat, streaming, max_tokens {args.max_tokens}; device {args.device}; "
        f"{os.cpu_count()} CPUs"
    )
    server = start_server(
        model_dir, work / "server.log", "--max-batch-size", "32", "--device", args.device
    )
    try:
        results: dict[tuple[str, int], list[float]] = {
            key: [] for key in product(CASES, args.concurrency)
        }
        for concurrency in args.concurrency:
            for case in CASES.values():
                measure(server.url, case, concurrency, concurrency, args.max_tokens)  # warm-up
            # Rounds of every case in turn: the machine's load drifts alike over all of them.
            for _ in range(max(1, args.requests // concurrency)):
                for name, case in CASES.items():
                    results[name, concurrency] += measure(
                        server.url, case, concurrency, concurrency, args.max_tokens
                    )
    finally:
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(60)

    print(
        f"{'conc':>4} | {'case':<11} | {'n':>3} | {'p50 ms/tok':>10} | {'p95':>6} | "
        f"{'p99':>6} | overhead p50"
    )
    print("-" * 72)
    for concurrency in args.concurrency:
        free = percentile(results["free text", concurrency], 50) or float("nan")
        for name in CASES:
            values = results[name, concurrency]
            p50, p95, p99 = (percentile(values, q) or float("nan") for q in (50, 95, 99))
            overhead = f"{(p50 / free - 1) * 100:+.0f}%" if name != "free text" else "-"
            print(
                f"{concurrency:>4} | {name:<11} | {len(values):>3} | {p50 * 1000:>10.2f} | "
                f"{p95 * 1000:>6.2f} | {p99 * 1000:>6.2f} | {overhead}"
            )


if __name__ == "__main__":
    sys.exit(main())
