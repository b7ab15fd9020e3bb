"""A real HTTP receiver of notifications, in the test process: it records what arrives.

It serves on 127.0.0.1 from a thread of its own (aiohttp on its own event
loop), so that a test, synchronous or not, and an operator process can both
reach it. Its behaviour is set per test: answer 500 to the first requests,
or accept requests and never answer them (a sink that hangs).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    body: Any
    at: float


class NotificationReceiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        # Requests answered 500 before any is accepted.
        self.failures_left = 0
        self.failed = 0
        self.hang = False
        # Paths answered 400: a sink that refuses what it is sent.
        self.refused_paths: set[str] = set()
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.hang:
            await self._release.wait()
            return web.Response(status=503)
        with self._changed:
            if request.path in self.refused_paths:
                self.failed += 1
                self._changed.notify_all()
                return web.Response(status=400, text="invalid_payload")
            if self.failures_left > 0:
                self.failures_left -= 1
                self.failed += 1
                self._changed.notify_all()
                return web.Response(status=500, text="down")
            self.received.append(Received(request.path, json.loads(body), time.monotonic()))
            self._changed.notify_all()
        return web.json_response({"ok": True})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def _stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def wait_for(self, count: int, timeout: float) -> list[Received]:
        """The first `count` requests accepted, once they have arrived; fails after `timeout`."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(
                    f"{len(self.received)} of {count} notifications arrived within {timeout}s: "
                    f"{[r.body for r in self.received]}"
                )
            return list(self.received[:count])

    def wait_for_failures(self, count: int, timeout: float) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.failed >= count, timeout):
                raise AssertionError(f"{self.failed} of {count} failed requests within {timeout}s")


@contextmanager
def notification_receiver() -> Iterator[NotificationReceiver]:
    receiver = NotificationReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
