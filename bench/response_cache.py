"""Response cache benchmark: a cache hit against a generation of the same request.

Starts one `modelserve serve` with the response cache on, on a generated
random-weights model, and sends the same greedy non-streaming completion
sequentially: first with `Cache-Control: no-cache` (the cache is skipped, the
engine generates every time), then plainly (each one a hit after the first).
Prints client-side latency p50/p95/p99 of both and the hit path's speed-up.

    .venv/bin/python bench/response_cache.py [--requests 200 --max-tokens 32]
        [--hidden-size 64 --layers 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

from local_server import MODEL_NAME, bench_model, start_server
from modelserve.api.cache import CACHE_HEADER
from modelserve.loadgen import percentile


def timed_requests(
    client: httpx.Client, body: dict[str, object], count: int, expect: str, headers: dict[str, str]
) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.post("/v1/completions", json=body, headers=headers)
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200 or response.headers.get(CACHE_HEADER) != expect:
            raise RuntimeError(
                f"expected a {expect}: {response.status_code} {response.headers} {response.text}"
            )
    return latencies


def _ms(values: list[float], q: float) -> str:
    value = percentile(values, q)
    assert value is not None
    return f"{value * 1000:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--device", default="auto", help="modelserve's --device")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="modelserve-cache-bench-"))
    model_dir = bench_model(work / "model", args.hidden_size, args.layers, 4)
    print(
        f"model: Llama-style, hidden {args.hidden_size}, {args.layers} layers, vocab 512, fp32; "
        f"{args.max_tokens} output tokens, greedy, non-streaming, one client, "
        f"{args.requests} requests each; device {args.device}; {os.cpu_count()} CPUs"
    )
    body: dict[str, object] = {
        "model": MODEL_NAME,
        "prompt": "The response cache answers a repeated greedy request",
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    server = start_server(
        model_dir, work / "server.log", "--device", args.device, "--response-cache-size", "1024"
    )
    try:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            timed_requests(client, body, 5, "bypass", {"Cache-Control": "no-cache"})  # warm-up
            generated = timed_requests(
                client, body, args.requests, "bypass", {"Cache-Control": "no-cache"}
            )
            timed_requests(client, body, 5, "hit", {})  # the last generation was stored
            hits = timed_requests(client, body, args.requests, "hit", {})
    finally:
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(60)

    print(f"{'path':<12} | {'p50 ms':>8} | {'p95 ms':>8} | {'p99 ms':>8}")
    print("-" * 45)
    for name, values in (("generation", generated), ("cache hit", hits)):
        print(f"{name:<12} | {_ms(values, 50):>8} | {_ms(values, 95):>8} | {_ms(values, 99):>8}")
    ratio = (percentile(generated, 50) or 0.0) / (percentile(hits, 50) or 1.0)
    print(f"hit p50 is {ratio:.1f}x faster than a generation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
