"""Serving benchmark: continuous batching on vs. off on the same model, one run.

Starts two `modelserve serve` processes on a generated random-weights model
(batch size 32, and batch size 1 = sequential), drives each with the load
generator at concurrency 1, 8 and 32 (streaming, greedy, fixed output length)
and prints tokens/s and TTFT / end-to-end latency percentiles with the ratios.

    .venv/bin/python bench/serving.py [--hidden-size 1024 --layers 4 --max-tokens 32]
        [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

from local_server import MODEL_NAME, Server, bench_model, start_server
from modelserve.loadgen import LoadConfig, LoadResult, Target, run_load

CONCURRENCIES = (1, 8, 32)


def measure(server: Server, concurrency: int, requests: int, max_tokens: int) -> LoadResult:
    config = LoadConfig(
        targets=[Target(server.url)],
        model=MODEL_NAME,
        concurrency=concurrency,
        max_requests=requests,
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        ignore_eos=True,
        request_timeout_s=600,
    )
    result = run_load(config)
    if result.ok != result.requests:
        raise RuntimeError(f"failed requests: {result.errors_by_status}")
    return result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--hidden-size", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument(
        "--device", default="auto", help="modelserve's --device: auto, cpu, cuda or cuda:N"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="modelserve-bench-"))
    model_dir = bench_model(work / "model", args.hidden_size, args.layers, 8)
    print(
        f"model: Llama-style, hidden {args.hidden_size}, {args.layers} layers, vocab 512, fp32; "
        f"{args.max_tokens} output tokens per request, streaming, greedy; "
        f"device {args.device}; {os.cpu_count()} CPUs"
    )
    servers = {
        "batching": start_server(
            model_dir, work / "batching.log", "--max-batch-size", "32", "--device", args.device
        ),
        "sequential": start_server(
            model_dir, work / "sequential.log", "--max-batch-size", "1", "--device", args.device
        ),
    }
    try:
        results: dict[tuple[str, int], LoadResult] = {}
        for concurrency in CONCURRENCIES:
            requests = max(8, args.requests_per_client * concurrency)
            for mode, server in servers.items():
                measure(server, concurrency, min(concurrency, 4), args.max_tokens)  # warm-up
                results[mode, concurrency] = measure(server, concurrency, requests, args.max_tokens)
    finally:
        for server in servers.values():
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(60)

    header = (
        f"{'conc':>4} | {'mode':<10} | {'tok/s':>7} | {'TTFT p50':>8} | {'TTFT p95':>8} | "
        f"{'TTFT p99':>8} | {'e2e p50':>7} | {'e2e p95':>7} | {'e2e p99':>7} | {'tok/s ratio':>11}"
    )
    print(header + "\n" + "-" * len(header) + "   (latencies in ms)")
    for concurrency in CONCURRENCIES:
        sequential = results["sequential", concurrency]
        for mode in ("sequential", "batching"):
            r = results[mode, concurrency]
            ratio = r.tokens_per_s / sequential.tokens_per_s
            print(
                f"{concurrency:>4} | {mode:<10} | {r.tokens_per_s:>7.1f} | "
                f"{_ms(r.ttft_percentile(50)):>8} | {_ms(r.ttft_percentile(95)):>8} | "
                f"{_ms(r.ttft_percentile(99)):>8} | {_ms(r.e2e_percentile(50)):>7} | "
                f"{_ms(r.e2e_percentile(95)):>7} | {_ms(r.e2e_percentile(99)):>7} | {ratio:>10.2f}x"
            )
    batched, sequential = results["batching", 32], results["sequential", 32]
    speedup = batched.tokens_per_s / sequential.tokens_per_s
    ttft_p99 = batched.ttft_percentile(99) or float("inf")
    sequential_e2e_p50 = sequential.e2e_percentile(50) or 0.0
    print(
        f"\ntarget 1: batching at concurrency 32 >= 4x sequential tokens/s: {speedup:.2f}x "
        f"-> {'met' if speedup >= 4 else 'MISSED'}"
    )
    print(
        f"target 2: batching p99 TTFT ({ttft_p99 * 1000:.0f} ms) < sequential p50 e2e at "
        f"concurrency 32 ({sequential_e2e_p50 * 1000:.0f} ms) -> "
        f"{'met' if ttft_p99 < sequential_e2e_p50 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
