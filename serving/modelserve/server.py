"""Running the app under uvicorn with a graceful drain on SIGTERM.

uvicorn's own SIGTERM handling closes the listening socket at once and, after
shutdown, re-raises the signal (the process then dies by it). A rollout needs
the opposite: keep answering, 503 on /health and on new requests so the
endpoint leaves the Service, let in-flight requests finish up to the drain
timeout, then exit 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

import uvicorn

from modelserve.api.app import ServerState, create_app
from modelserve.config.settings import ServeSettings
from modelserve.faults import announce

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self._state = state
        self._drain_started = False
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_started:
            logger.warning("second signal %s: exiting without waiting", signal.Signals(sig).name)
            self.should_exit = True
            self.force_exit = True
            return
        self._drain_started = True
        logger.info("signal %s: draining before exit", signal.Signals(sig).name)
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        finished = await self._state.drain(self._state.settings.drain_timeout_s)
        logger.info("drain %s; shutting down", "complete" if finished else "timed out")
        self.should_exit = True


def serve(settings: ServeSettings, host: str, port: int, log_level: str = "info") -> None:
    announce(settings.faults)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # Requests still running after the drain get this long once the drain is over.
        timeout_graceful_shutdown=5,
        timeout_keep_alive=int(settings.keep_alive_timeout_s),
        lifespan="on",
    )
    DrainingServer(config, app.state.serving).run()
