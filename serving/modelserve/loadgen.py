"""An async load generator for OpenAI-compatible servers (modelserve, vLLM).

Open loop (a fixed arrival rate: requests start whether or not earlier ones
finished, as real users do) or closed loop (a fixed number of concurrent
clients). Traffic can be split between several endpoints by weight, the way
a Service or an HTTPRoute would split it, with per-target counts and errors.
Usable as a library: `run_load(LoadConfig(...))` returns a LoadResult.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

DEFAULT_PROMPTS = (
    "What is the capital of France?",
    "Tell me a story about a robot who learns to paint the sea at night.",
    "How many legs does a spider have?",
    "Explain continuous batching in one paragraph.",
    "Kubernetes schedules pods onto nodes; a deployment keeps replicas running.",
)


@dataclass(frozen=True)
class Target:
    url: str
    weight: float = 1.0


def parse_target(text: str) -> Target:
    """`URL=WEIGHT` or `URL` (weight 1)."""
    url, sep, weight = text.rpartition("=")
    if not sep or "://" in weight:
        return Target(text.rstrip("/"), 1.0)
    value = float(weight)
    if value < 0:
        raise ValueError(f"target weight must not be negative: {text!r}")
    return Target(url.rstrip("/"), value)


@dataclass(frozen=True)
class LoadConfig:
    targets: Sequence[Target]
    model: str
    # Exactly one of rate (open loop, requests per second) and concurrency (closed loop).
    rate: float | None = None
    concurrency: int | None = None
    max_requests: int | None = None
    duration_s: float | None = None
    prompts: Sequence[str] = DEFAULT_PROMPTS
    max_tokens: int = 32
    temperature: float = 0.0
    stream: bool = True
    chat: bool = False
    ignore_eos: bool = True
    request_timeout_s: float = 60.0
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.rate is None) == (self.concurrency is None):
            raise ValueError("give exactly one of rate (open loop) and concurrency (closed loop)")
        if self.max_requests is None and self.duration_s is None:
            raise ValueError("bound the run by max_requests and/or duration_s")
        if not self.targets or sum(t.weight for t in self.targets) <= 0:
            raise ValueError("at least one target with a positive weight is needed")


@dataclass
class RequestOutcome:
    target: str
    status: str  # "200", "429", ..., or the exception name for transport errors
    e2e_s: float
    ttft_s: float | None = None
    completion_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "200"


# What the summary reports: p95 is the seed's latency target, beside p50 and p99.
SUMMARY_PERCENTILES = (50, 90, 95, 99)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class TargetStats:
    requests: int = 0
    ok: int = 0
    errors_by_status: dict[str, int] = field(default_factory=dict)


@dataclass
class LoadResult:
    outcomes: list[RequestOutcome]
    wall_s: float
    per_target: dict[str, TargetStats]

    @property
    def requests(self) -> int:
        return len(self.outcomes)

    @property
    def ok(self) -> int:
        return sum(o.ok for o in self.outcomes)

    @property
    def errors_by_status(self) -> dict[str, int]:
        return dict(Counter(o.status for o in self.outcomes if not o.ok))

    @property
    def requests_per_s(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        tokens = sum(o.completion_tokens for o in self.outcomes if o.ok)
        return tokens / self.wall_s if self.wall_s > 0 else 0.0

    def ttft_percentile(self, q: float) -> float | None:
        return percentile([o.ttft_s for o in self.outcomes if o.ok and o.ttft_s is not None], q)

    def e2e_percentile(self, q: float) -> float | None:
        return percentile([o.e2e_s for o in self.outcomes if o.ok], q)

    def summary(self) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value * 1000:.1f}ms"

        lines = [
            f"requests: {self.requests} ok: {self.ok} in {self.wall_s:.2f}s",
            f"throughput: {self.requests_per_s:.2f} req/s, {self.tokens_per_s:.1f} tokens/s",
            "ttft p50/p90/p95/p99: "
            + " / ".join(ms(self.ttft_percentile(q)) for q in SUMMARY_PERCENTILES),
            "e2e  p50/p90/p95/p99: "
            + " / ".join(ms(self.e2e_percentile(q)) for q in SUMMARY_PERCENTILES),
            f"errors by status: {self.errors_by_status or 'none'}",
        ]
        for url, stats in self.per_target.items():
            lines.append(
                f"  {url}: {stats.requests} requests, {stats.ok} ok, "
                f"errors {stats.errors_by_status or 'none'}"
            )
        return "\n".join(lines)


class WeightedPicker:
    """Smooth weighted round-robin (as nginx does): exact shares, evenly interleaved."""

    def __init__(self, targets: Sequence[Target]) -> None:
        self._targets = [t for t in targets if t.weight > 0]
        self._current = [0.0] * len(self._targets)
        self._total = sum(t.weight for t in self._targets)

    def pick(self) -> Target:
        for index, target in enumerate(self._targets):
            self._current[index] += target.weight
        best = max(range(len(self._targets)), key=self._current.__getitem__)
        self._current[best] -= self._total
        return self._targets[best]


async def _one_request(
    client: httpx.AsyncClient, config: LoadConfig, target: Target, prompt: str
) -> RequestOutcome:
    body: dict[str, object] = {
        "model": config.model,
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
        "stream": config.stream,
        "ignore_eos": config.ignore_eos,
    }
    if config.chat:
        path = "/v1/chat/completions"
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        path = "/v1/completions"
        body["prompt"] = prompt
    if config.stream:
        body["stream_options"] = {"include_usage": True}
    start = time.monotonic()
    try:
        if not config.stream:
            response = await client.post(target.url + path, json=body)
            elapsed = time.monotonic() - start
            tokens = 0
            if response.status_code == 200:
                tokens = int(response.json().get("usage", {}).get("completion_tokens", 0))
            return RequestOutcome(target.url, str(response.status_code), elapsed, None, tokens)
        async with client.stream("POST", target.url + path, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return RequestOutcome(
                    target.url, str(response.status_code), time.monotonic() - start
                )
            ttft: float | None = None
            tokens = 0
            chunks = 0
            status = "200"
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                payload = json.loads(line[6:])
                if "error" in payload:
                    status = "stream_error"
                    continue
                if payload.get("usage"):
                    tokens = int(payload["usage"]["completion_tokens"])
                for choice in payload.get("choices", ()):
                    text = choice.get("text") or choice.get("delta", {}).get("content")
                    if text:
                        chunks += 1
                        if ttft is None:
                            ttft = time.monotonic() - start
            return RequestOutcome(
                target.url, status, time.monotonic() - start, ttft, tokens or chunks
            )
    except (httpx.HTTPError, OSError) as error:
        return RequestOutcome(target.url, type(error).__name__, time.monotonic() - start)


async def run_load_async(config: LoadConfig) -> LoadResult:
    picker = WeightedPicker(config.targets)
    chooser = random.Random(config.seed)
    outcomes: list[RequestOutcome] = []
    started = time.monotonic()
    deadline = started + config.duration_s if config.duration_s is not None else None
    issued = 0

    def may_issue() -> bool:
        if config.max_requests is not None and issued >= config.max_requests:
            return False
        return deadline is None or time.monotonic() < deadline

    def next_request() -> tuple[Target, str]:
        nonlocal issued
        issued += 1
        return picker.pick(), chooser.choice(list(config.prompts))

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(config.request_timeout_s)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        if config.concurrency is not None:

            async def worker() -> None:
                while may_issue():
                    target, prompt = next_request()
                    outcomes.append(await _one_request(client, config, target, prompt))

            await asyncio.gather(*(worker() for _ in range(config.concurrency)))
        else:
            assert config.rate is not None
            tasks: list[asyncio.Task[RequestOutcome]] = []
            while may_issue():
                target, prompt = next_request()
                tasks.append(asyncio.create_task(_one_request(client, config, target, prompt)))
                # Poisson arrivals: exponential gaps at the configured mean rate.
                await asyncio.sleep(chooser.expovariate(config.rate))
            outcomes.extend(await asyncio.gather(*tasks))
    wall = time.monotonic() - started
    per_target: dict[str, TargetStats] = {t.url: TargetStats() for t in config.targets}
    for outcome in outcomes:
        stats = per_target[outcome.target]
        stats.requests += 1
        if outcome.ok:
            stats.ok += 1
        else:
            stats.errors_by_status[outcome.status] = (
                stats.errors_by_status.get(outcome.status, 0) + 1
            )
    return LoadResult(outcomes=outcomes, wall_s=wall, per_target=per_target)


def run_load(config: LoadConfig) -> LoadResult:
    """Run a load and return its result (starts its own event loop)."""
    return asyncio.run(run_load_async(config))
