"""CPU per Prometheus query: the provider's session against requests' default one.

requests looks the environment up at every request of a session that trusts it
(proxies, NO_PROXY, ~/.netrc); the provider's session reads it once. Both query
the same Prometheus through prometheus-api-client, one after the other:

    eval "$(modelrollout dev cluster env)"
    .venv/bin/python bench/prometheus_query.py --queries 500
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
from collections.abc import Callable

import requests
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from modelrollout.analysis.prometheus import PrometheusProvider
from modelrollout.models.spec import PrometheusProviderSpec

QUERY = 'max(up{job="prometheus"})'


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def per_query_ms(query: Callable[[], object], count: int) -> float:
    for _ in range(20):
        query()
    started = cpu_seconds()
    for _ in range(count):
        query()
    return 1000 * (cpu_seconds() - started) / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default=os.environ.get("MODELROLLOUT_PROMETHEUS_URL"))
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    if not args.prometheus:
        parser.error("--prometheus (or MODELROLLOUT_PROMETHEUS_URL) is required")
    default_session = PrometheusConnect(
        url=args.prometheus, retry=Retry(total=0), timeout=2, session=requests.Session()
    )
    provider = PrometheusProvider(
        PrometheusProviderSpec.model_validate({"type": "prometheus", "address": args.prometheus}),
        None,
        threading.BoundedSemaphore(8),
    )
    before = per_query_ms(lambda: default_session.custom_query(QUERY, timeout=2), args.queries)
    after = per_query_ms(lambda: provider.query(QUERY), args.queries)
    print(f"{args.queries} queries each, CPU per query:")
    print(f"  requests' default session (environment read per request): {before:.2f} ms")
    print(f"  the provider's session (environment read once):           {after:.2f} ms")
    print(f"  ratio: {after / before:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
