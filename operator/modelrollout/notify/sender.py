"""Delivers notifications in the background: a tick only hands them over, never waits.

`submit` (called by a tick, on its thread) puts a tick's notifications in a
bounded queue and returns at once; when the queue is full they are dropped
and counted. The sender, an asyncio task of the operator, reads each
rollout's sinks (notify/config.py: Secret reads, off the tick), applies
each sink's event filter and template, and delivers through one lane per
rollout and sink: a lane sends in order, one request at a time, retrying
a failure with backoff within the retry budget (notify/policy.py); lanes
run side by side, so a sink that is down or hangs delays only its own
lane. What cannot be delivered is dropped, counted, logged and told as a
Warning Event on the rollout (naming the field, never the URL); nothing
the sender does changes a rollout.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from modelrollout.engine.notifications import Notification
from modelrollout.kube.workloads import RolloutRef
from modelrollout.metrics import OperatorMetrics
from modelrollout.models.spec import Notifications
from modelrollout.notify.config import ConfigProblem, Target
from modelrollout.notify.policy import RetryPolicy, outcome
from modelrollout.notify.sinks import SINKS
from modelrollout.notify.sinks.base import Rendered, SinkCapability, render

logger = logging.getLogger("modelrollout.notify")

# What reads a rollout's sinks: (namespace, spec.notifications) -> (targets, problems).
Resolver = Callable[[str, Notifications | None], tuple[list[Target], list[ConfigProblem]]]
# What tells a rollout's users that a notification failed: (rollout, message); blocking.
Warner = Callable[[RolloutRef, str], None]

# How many notifications a batching sink gets in one request at most.
MAX_BATCH = 64


@dataclass(frozen=True)
class Notice:
    """One tick's notifications for one rollout, as the tick handed them over."""

    rollout: RolloutRef
    configured: Notifications | None
    notifications: tuple[Notification, ...]
    submitted: float


@dataclass
class _Message:
    target: Target
    rendered: Rendered
    submitted: float


@dataclass
class _Lane:
    messages: deque[_Message] = field(default_factory=deque)
    running: bool = False


class Notifier:
    def __init__(
        self,
        resolve: Resolver,
        warn: Warner,
        metrics: OperatorMetrics,
        policy: RetryPolicy,
        capacity: int,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`loop`: the one `run` will run on; ticks may hand over before it starts."""
        self._resolve = resolve
        self._warn = warn
        self._metrics = metrics
        self._policy = policy
        self._capacity = capacity
        self._clock = clock
        # Notifications submitted and not yet delivered or dropped: the queue's bound.
        self._queued = 0
        self._guard = threading.Lock()
        self._loop = loop
        self._intake: asyncio.Queue[Notice] = asyncio.Queue()
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._workers: set[asyncio.Task[None]] = set()

    def submit(
        self, rollout: RolloutRef, configured: Notifications | None, found: Sequence[Notification]
    ) -> None:
        """Hand a tick's notifications over; never blocks (thread-safe)."""
        if not found:
            return
        with self._guard:
            room = max(0, self._capacity - self._queued)
            taken = tuple(found[:room])
            self._queued += len(taken)
            self._metrics.notifications_queued.set(self._queued)
        dropped = len(found) - len(taken)
        if dropped:
            self._metrics.notifications_dropped.labels("queue_full").inc(dropped)
            logger.warning(
                "notification queue full: %d notification(s) of %s/%s dropped",
                dropped,
                rollout.namespace,
                rollout.name,
            )
        if taken:
            notice = Notice(rollout, configured, taken, self._clock())
            self._loop.call_soon_threadsafe(self._intake.put_nowait, notice)

    def _release(self, count: int) -> None:
        with self._guard:
            self._queued -= count
            self._metrics.notifications_queued.set(self._queued)

    async def run(self) -> None:
        """The sender; runs until cancelled, on the loop given at construction."""
        timeout = aiohttp.ClientTimeout(total=self._policy.timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                while True:
                    notice = await self._intake.get()
                    try:
                        await self._dispatch(session, notice)
                    except Exception:  # one notice lost, never the sender
                        logger.exception("notifications of %s lost", notice.rollout.name)
                        self._release(len(notice.notifications))
                        self._metrics.notifications_dropped.labels("error").inc(
                            len(notice.notifications)
                        )
            finally:
                workers = list(self._workers)
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    async def _dispatch(self, session: aiohttp.ClientSession, notice: Notice) -> None:
        count = len(notice.notifications)
        try:
            targets, problems = await asyncio.to_thread(
                self._resolve, notice.rollout.namespace, notice.configured
            )
        except Exception as error:  # the API unreachable: the notice is lost, the sender lives
            logger.warning("reading notification sinks failed: %s", type(error).__name__)
            targets, problems = [], [ConfigProblem("notifications", "could not be read")]
        for problem in problems:
            self._metrics.notifications_dropped.labels("config").inc(count)
            await self._tell(notice.rollout, f"{problem}: notifications dropped")
        messages = [
            _Message(target, render(notification, target.template), notice.submitted)
            for notification in notice.notifications
            for target in targets
            if target.accepts(notification.kind)
        ]
        with self._guard:
            # The notice's own count becomes its messages' (one per sink that takes it).
            self._queued -= count
            room = max(0, self._capacity - self._queued)
            kept = messages[:room]
            self._queued += len(kept)
            self._metrics.notifications_queued.set(self._queued)
        if len(messages) > len(kept):
            self._metrics.notifications_dropped.labels("queue_full").inc(len(messages) - len(kept))
        for message in kept:
            key = (notice.rollout.uid, message.target.name)
            lane = self._lanes.setdefault(key, _Lane())
            lane.messages.append(message)
            if not lane.running:
                lane.running = True
                worker = asyncio.create_task(self._drain(session, key, notice.rollout))
                self._workers.add(worker)
                worker.add_done_callback(self._workers.discard)

    async def _drain(
        self, session: aiohttp.ClientSession, key: tuple[str, str], rollout: RolloutRef
    ) -> None:
        lane = self._lanes[key]
        try:
            while lane.messages:
                first = lane.messages[0]
                sink = SINKS[first.target.sink_type]
                size = MAX_BATCH if SinkCapability.BATCH in sink.capabilities else 1
                # One request goes to one target: a rotated URL starts a new batch.
                batch: list[_Message] = []
                for message in itertools.islice(lane.messages, size):
                    if message.target != first.target:
                        break
                    batch.append(message)
                try:
                    await self._deliver(session, rollout, batch)
                except Exception:  # the batch lost, never the lane
                    logger.exception("notifications of %s lost", rollout.name)
                    self._metrics.notifications_dropped.labels("error").inc(len(batch))
                for _ in batch:
                    lane.messages.popleft()
                self._release(len(batch))
        finally:
            del self._lanes[key]

    async def _deliver(
        self, session: aiohttp.ClientSession, rollout: RolloutRef, batch: list[_Message]
    ) -> None:
        target = batch[0].target
        request = SINKS[target.sink_type].request(target.url, [m.rendered for m in batch])
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            status = await self._post(session, request.url, request.body, dict(request.headers))
            result = outcome(status)
            if result == "delivered":
                done = self._clock()
                for message in batch:
                    self._metrics.notification_delivery.labels(target.sink_type).observe(
                        done - message.submitted
                    )
                return
            answer = "no answer" if status is None else f"HTTP {status}"
            if result == "rejected":
                self._metrics.notifications_dropped.labels("rejected").inc(len(batch))
                await self._tell(
                    rollout,
                    f"{target.field_path} ({target.name}): the sink refused the notification "
                    f"({answer}); dropped",
                )
                return
            wait = self._policy.next_attempt_in(attempt, self._clock() - started)
            if wait is None:
                self._metrics.notifications_dropped.labels("retries_exhausted").inc(len(batch))
                await self._tell(
                    rollout,
                    f"{target.field_path} ({target.name}): gave up after {attempt} attempt(s) "
                    f"within the retry budget (last: {answer}); dropped",
                )
                return
            await asyncio.sleep(wait)

    @staticmethod
    async def _post(
        session: aiohttp.ClientSession, url: str, body: object, headers: dict[str, str]
    ) -> int | None:
        try:
            async with session.post(url, json=body, headers=headers) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def _tell(self, rollout: RolloutRef, message: str) -> None:
        logger.warning("notification for %s/%s: %s", rollout.namespace, rollout.name, message)
        try:
            await asyncio.to_thread(self._warn, rollout, message)
        except Exception as error:  # an Event lost is no reason to stop the sender
            logger.warning("could not post a NotificationFailed Event: %s", error)
