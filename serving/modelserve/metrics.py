"""Prometheus metrics with vLLM's names, types, label names and buckets.

Names follow vLLM's v1 `PrometheusStatLogger` (labels `model_name` and
`engine`), so one PromQL check works for both engines. prometheus_client adds
`_total` to counter names: `vllm:request_success` is exposed as
`vllm:request_success_total`, as in vLLM. HTTP counts follow
prometheus-fastapi-instrumentator, which vLLM uses: `http_requests_total`
with `handler`, `method` and a status class (`2xx`).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from modelserve.engine.types import FinishReason

# vLLM's engine index label; this server runs one engine.
ENGINE_INDEX = "0"

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
INTER_TOKEN_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
    50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

_LABELS = ("model_name", "engine")

# vLLM exposes no `_created` series; neither do we (it only doubles the series count).
disable_created_metrics()  # type: ignore[no-untyped-call]


def status_class(status_code: int) -> str:
    """`2xx`, `4xx`, ...: the status label of prometheus-fastapi-instrumentator."""
    return f"{status_code // 100}xx"


class ServingMetrics:
    """The server's metrics, in a registry of their own (one per app)."""

    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = (model_name, ENGINE_INDEX)
        r = self.registry
        self.e2e_request_latency = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            _LABELS, registry=r, buckets=REQUEST_LATENCY_BUCKETS,
        ).labels(*labels)  # fmt: skip
        self.time_to_first_token = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            _LABELS, registry=r, buckets=TTFT_BUCKETS,
        ).labels(*labels)  # fmt: skip
        self.inter_token_latency = Histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            _LABELS, registry=r, buckets=INTER_TOKEN_BUCKETS,
        ).labels(*labels)  # fmt: skip
        self.num_requests_running = Gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            _LABELS, registry=r,
        ).labels(*labels)  # fmt: skip
        self.num_requests_waiting = Gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            _LABELS, registry=r,
        ).labels(*labels)  # fmt: skip
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", _LABELS, registry=r
        ).labels(*labels)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", _LABELS, registry=r
        ).labels(*labels)
        request_success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            (*_LABELS, "finished_reason"),
            registry=r,
        )
        # Every reason is exposed from the start, so rate() sees a zero before the first error.
        self.request_success = {
            reason: request_success.labels(*labels, reason.value) for reason in FinishReason
        }
        self.http_requests = Counter(
            "http_requests",
            "Total number of requests by method, status and handler.",
            ("method", "status", "handler"),
            registry=r,
        )

    def track_engine(self, running: Callable[[], int], waiting: Callable[[], int]) -> None:
        """Read the engine's running and waiting counts at every scrape."""
        self.num_requests_running.set_function(running)
        self.num_requests_waiting.set_function(waiting)

    def count_http_request(self, method: str, handler: str, status_code: int) -> None:
        self.http_requests.labels(method, status_class(status_code), handler).inc()
