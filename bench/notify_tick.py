"""A rollback tick with a notification sink that never answers, and with none: no cluster.

The real Reconciler on the unit tests' in-memory API server (as
bench/tick_cpu.py), handing its notifications to the operator's real sender
(notify/sender.py, on its own event loop in a thread, the operator's default
timeout, backoff and retry budget) whose one sink, a webhook on loopback,
accepts connections and never answers. Each run rolls out a new revision,
walks it to its analysis step, makes its alert fire, and times the tick that
rolls it back (weight 0, status, Event, notifications handed over), wall
clock; the same runs without notifications, and with a sink that answers at
once (a receiver on loopback), are the baselines.

    PYTHONPATH=operator:serving:dev:. .venv/bin/python bench/notify_tick.py --runs 30

The end-to-end figure with the real operator and API server is
bench/rollback.py --hanging-sink.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time

from tests.support.notify_receiver import notification_receiver
from tests.unit.operator.builders import HEALTHY_ANSWERS, with_model_uri
from tests.unit.operator.test_reconciler_ticks import FIRING, Cluster, canary_spec

from hanging_sink import HangingSink
from modelrollout.engine.reconciler import Reconciler
from modelrollout.metrics import OperatorMetrics
from modelrollout.notify.config import Target
from modelrollout.notify.policy import RetryPolicy
from modelrollout.notify.sender import Notifier


def rollback_ticks(runs: int, notifier: Notifier | None) -> list[float]:
    cluster = Cluster()
    if notifier is not None:
        cluster.reconciler = Reconciler(
            cluster.api,
            clock=lambda: cluster.now,
            provider_factory=lambda spec: cluster.provider,
            notify=notifier.submit,
        )
    spec = canary_spec()
    cluster.apply(spec)
    cluster.tick()
    cluster.settle()
    cluster.tick()
    seconds: list[float] = []
    for index in range(runs):
        cluster.provider.answers.update(HEALTHY_ANSWERS)
        cluster.apply(with_model_uri(spec, f"pvc://models/bench/v{index}"))
        cluster.run_until_checked_at_step(3)
        cluster.provider.answers["ALERTS"] = FIRING
        started = time.perf_counter()
        cluster.tick(15)
        seconds.append(time.perf_counter() - started)
        assert cluster.status.phase == "RollingBack", cluster.status.phase
        cluster.run_until_phase("RolledBack")
    return seconds


def summary(name: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"{name:<28} p50 {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
        f"max {ordered[-1] * 1000:.2f} ms ({len(ordered)} rollback ticks)"
    )


class RunningSender:
    """The operator's sender on its own loop in a thread, its one webhook sink at `url`."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.metrics = OperatorMetrics()
        target = Target("spec.notifications.sinks[0]", "sink", "webhook", url, frozenset(), None)
        self.notifier = Notifier(
            lambda namespace, configured: ([target], []),
            lambda rollout, message: None,
            self.metrics,
            RetryPolicy(),
            1000,
            self.loop,
        )
        self._sender = asyncio.run_coroutine_threadsafe(self.notifier.run(), self.loop)

    def queued(self) -> float:
        return self.metrics.registry.get_sample_value("modelrollout_notifications_queued") or 0.0

    def stop(self) -> None:
        sender = self._sender

        async def stop() -> None:
            sender.cancel()
            await asyncio.gather(asyncio.wrap_future(sender), return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    print(summary("no notifications         ", rollback_ticks(args.runs, None)))
    with notification_receiver() as receiver:
        healthy = RunningSender(receiver.url)
        try:
            seconds = rollback_ticks(args.runs, healthy.notifier)
        finally:
            healthy.stop()
        print(summary("a sink that answers at once", seconds))
    sink = HangingSink()
    hanging = RunningSender(sink.url)
    try:
        seconds = rollback_ticks(args.runs, hanging.notifier)
        queued = hanging.queued()
    finally:
        hanging.stop()
    print(summary("a sink that never answers", seconds))
    print(f"  (it accepted {sink.accepted} connection(s); {queued:.0f} notification(s) queued)")
    sink.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
