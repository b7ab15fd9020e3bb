"""When each rollout is ticked: the one due earliest first, a change makes one due now.

A single loop over every rollout in turn made a rollout whose analysis was
due (or whose spec just changed) wait behind hundreds of others. Here each
rollout has its own due time: its period after its last tick (short while a
rollout progresses, long once it has settled), now when one of its children
changed, and before everything else when its spec changed or a command came.
At most `concurrency` ticks run at once, on their own threads; that also
bounds the Prometheus queries in flight, since a tick runs its checks in turn.
A rollout is never ticked twice at once; a change seen during its tick makes
it due again as soon as that tick ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("modelrollout")

Body = dict[str, Any]
# Before every due time: a spec change or a command jumps the queue.
URGENT = float("-inf")


@dataclass
class _Entry:
    body: Body
    due: float
    running: bool = False
    dirty: bool = False


class TickScheduler:
    def __init__(
        self,
        tick: Callable[[Body], None],
        concurrency: int,
        period_for: Callable[[Body], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tick = tick
        self._concurrency = concurrency
        self._period_for = period_for
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._uid_by_name: dict[tuple[str, str], str] = {}
        # (due, sequence, uid); entries whose due has since moved are skipped when popped.
        self._queue: list[tuple[float, int, str]] = []
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self._running = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def _schedule(self, uid: str, entry: _Entry, due: float) -> None:
        entry.due = due
        heapq.heappush(self._queue, (due, next(self._sequence), uid))

    def update(self, body: Body, urgent: bool) -> Body | None:
        """The latest body from the watch; `urgent` makes it due before anything else.

        Returns the body it replaces (None for a new rollout).
        """
        metadata = body["metadata"]
        uid = metadata["uid"]
        with self._lock:
            self._uid_by_name[(metadata["namespace"], metadata["name"])] = uid
            entry = self._entries.get(uid)
            previous = None if entry is None else entry.body
            if entry is None:
                entry = _Entry(body=body, due=URGENT)
                self._entries[uid] = entry
                self._schedule(uid, entry, URGENT)
            else:
                entry.body = body
                # The new body may bring a timer forward (a check just evaluated: the
                # next evaluation is one analysis interval from now). During its tick
                # the tick's end times it from this body: most bodies seen then are
                # that tick's own status write, and timing them may parse the spec.
                if urgent or not entry.running:
                    due = URGENT if urgent else self._clock() + self._period_for(body)
                    self._mark_due(uid, entry, due, dirty=urgent)
        self._signal()
        return previous

    def bodies(self) -> list[Body]:
        """The latest body of every rollout known (thread-safe)."""
        with self._lock:
            return [entry.body for entry in self._entries.values()]

    def wake(self, namespace: str, name: str) -> None:
        """Something the rollout owns changed: tick it now (thread-safe)."""
        with self._lock:
            uid = self._uid_by_name.get((namespace, name))
            entry = self._entries.get(uid) if uid is not None else None
            if uid is None or entry is None:
                return
            self._mark_due(uid, entry, self._clock(), dirty=True)
        self._signal()

    def _mark_due(self, uid: str, entry: _Entry, due: float, dirty: bool) -> None:
        """Move the next tick forward to `due`; `dirty`: tick again after a running one."""
        if entry.running:
            entry.dirty = entry.dirty or dirty
        elif due < entry.due:
            self._schedule(uid, entry, due)

    def forget(self, uid: str) -> None:
        with self._lock:
            entry = self._entries.pop(uid, None)
            if entry is not None:
                metadata = entry.body["metadata"]
                self._uid_by_name.pop((metadata["namespace"], metadata["name"]), None)
        self._compact_if_large()

    def take_due(self, now: float) -> list[tuple[str, Body]]:
        """The rollouts to tick now, earliest due first, within the free slots."""
        picked: list[tuple[str, Body]] = []
        with self._lock:
            while self._queue and self._running < self._concurrency:
                due, _, uid = self._queue[0]
                if due > now:
                    break
                heapq.heappop(self._queue)
                entry = self._entries.get(uid)
                if entry is None or entry.running or entry.due != due:
                    continue  # forgotten, already running, or rescheduled since
                entry.running = True
                self._running += 1
                picked.append((uid, entry.body))
        return picked

    def finished(self, uid: str, failed: bool = False) -> None:
        """A tick ended: due again after its period, or now if it changed meanwhile.

        A failed tick (the API server down, say) waits its period whatever changed:
        retrying at once would spin while the failure lasts.
        """
        now = self._clock()
        with self._lock:
            self._running -= 1
            entry = self._entries.get(uid)
            if entry is not None:
                entry.running = False
                due = now if entry.dirty and not failed else now + self._period_for(entry.body)
                entry.dirty = False
                self._schedule(uid, entry, due)

    def busy(self) -> bool:
        with self._lock:
            return self._running >= self._concurrency

    def next_due(self) -> float | None:
        with self._lock:
            return self._queue[0][0] if self._queue else None

    def _compact_if_large(self) -> None:
        with self._lock:
            if len(self._queue) > 4 * len(self._entries) + 64:
                self._queue = [
                    item
                    for item in self._queue
                    if (entry := self._entries.get(item[2])) is not None and entry.due == item[0]
                ]
                heapq.heapify(self._queue)

    def _signal(self) -> None:
        loop, changed = self._loop, self._changed
        if loop is not None and changed is not None:
            loop.call_soon_threadsafe(changed.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()
        with ThreadPoolExecutor(self._concurrency, thread_name_prefix="tick") as executor:
            while True:
                self._changed.clear()
                for uid, body in self.take_due(self._clock()):
                    task = asyncio.create_task(self._run_one(executor, uid, body))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                self._compact_if_large()
                next_due = self.next_due()
                # With every slot busy, the next thing to wait for is a tick ending.
                timeout = (
                    None if next_due is None or self.busy() else max(0.0, next_due - self._clock())
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout)

    async def _run_one(self, executor: ThreadPoolExecutor, uid: str, body: Body) -> None:
        assert self._loop is not None and self._changed is not None
        failed = False
        try:
            await self._loop.run_in_executor(executor, self._tick, body)
        except Exception:  # one broken rollout must not stop the others
            failed = True
            meta = body.get("metadata", {})
            logger.exception("tick of %s/%s failed", meta.get("namespace"), meta.get("name"))
        finally:
            self.finished(uid, failed)
            self._changed.set()
