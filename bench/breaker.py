"""Circuit breaker: how fast an open breaker refuses, against a normal request.

Starts two `modelserve serve` processes on a generated random-weights model: a
healthy one, and one whose engine fails its first steps (engine-level fault
injection) so that its breaker opens and stays open (long cool-down). Sends
requests one after another on a kept-alive connection to each and prints the
latency percentiles of a normal generation and of an open breaker's 503.

    .venv/bin/python bench/breaker.py [--hidden-size 1024 --layers 4 --max-tokens 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from local_server import MODEL_NAME, bench_model, start_server
from modelserve.loadgen import percentile

BREAKER_FAILURES = 5


def timed(
    client: httpx.Client, url: str, body: dict[str, object], count: int, status: int
) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.post(url + "/v1/completions", json=body)
        latencies.append(time.perf_counter() - started)
        if response.status_code != status:
            raise RuntimeError(f"expected {status}, got {response.status_code}: {response.text}")
    return latencies


def _ms(latencies: list[float], q: float) -> float:
    value = percentile(latencies, q)
    assert value is not None
    return value * 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--hidden-size", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=50, help="normal generations timed")
    parser.add_argument("--refusals", type=int, default=500, help="open-breaker 503s timed")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="modelserve-breaker-bench-"))
    model_dir = bench_model(work / "model", args.hidden_size, args.layers, 8)
    print(
        f"model: Llama-style, hidden {args.hidden_size}, {args.layers} layers, vocab 512, fp32; "
        f"{args.max_tokens} output tokens per request, non-streaming, greedy; "
        f"{os.cpu_count()} CPUs; sequential requests on one kept-alive connection"
    )
    body = {
        "model": MODEL_NAME,
        "prompt": "Tell me a story",
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}
    healthy = start_server(model_dir, work / "healthy.log", env=one_thread)
    tripped = start_server(
        model_dir, work / "tripped.log",
        "--breaker-failures", str(BREAKER_FAILURES), "--breaker-cooldown", "3600",
        "--fault-injection", "--fault-engine-error-rate", "1", env=one_thread,
    )  # fmt: skip
    try:
        with httpx.Client(timeout=120) as client:
            timed(client, healthy.url, body, 3, 200)  # warm-up
            normal = timed(client, healthy.url, body, args.requests, 200)
            timed(client, tripped.url, body, BREAKER_FAILURES, 500)  # opens the breaker
            refused = timed(client, tripped.url, body, args.refusals, 503)
    finally:
        for server in (healthy, tripped):
            server.process.kill()
            server.process.wait(10)
    print("case                 |     n |  p50 ms |  p95 ms |  p99 ms")
    for name, latencies in (("normal generation", normal), ("open breaker (503)", refused)):
        p50, p95, p99 = (_ms(latencies, q) for q in (50, 95, 99))
        print(f"{name:<20} | {len(latencies):5d} | {p50:7.2f} | {p95:7.2f} | {p99:7.2f}")
    ratio = _ms(normal, 50) / _ms(refused, 50)
    print(f"p50 normal / p50 open-breaker refusal: {ratio:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
