"""The dashboard's HTTP server: pages, a JSON API, server-sent events, and the commands.

Commands run the plugin's own code (cli.send_command, cli.undo) with the
user's kubeconfig: what their RBAC forbids comes back as the API server's
403 and its message. A command needs the header `X-Modelrollout-Dashboard`,
which a page of another site cannot send without a CORS preflight this
server never grants, so no other site can steer a rollout through it.

Read-only (`--read-only`, the chart's default `dashboard.actions: false`): the
command endpoint refuses every command itself, before any call to the API
server, whatever the credentials allow; the pages hide the buttons.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from fastapi import Body, FastAPI, Header, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from modelrollout.kube.api import KubeApiError
from modelrollout.kubectl.cli import CliError, Target, send_command, undo
from modelrollout.kubectl.dashboard.hub import Hub
from modelrollout.kubectl.dashboard.series import (
    PrometheusRange,
    SeriesCache,
    SeriesUnavailable,
    series_request,
)
from modelrollout.kubectl.dashboard.views import COMMANDS

STATIC = Path(__file__).parent / "static"
COMMAND_HEADER = "X-Modelrollout-Dashboard"


READ_ONLY = (
    "this dashboard is read-only: it sends no commands (--read-only; in the chart, "
    "dashboard.actions: false)"
)


def create_app(
    target: Target, namespace: str, series: SeriesCache | None = None, actions: bool = True
) -> FastAPI:
    """The app for rollouts in `namespace` ("" for every namespace the user may list).

    `actions` False: read-only, every command refused here with 403.
    """
    hub = Hub(target.api, namespace)
    cache = series or SeriesCache(PrometheusRange(target.api))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        hub.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            hub.stop()

    app = FastAPI(title="modelrollout dashboard", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.hub = hub
    app.state.series = cache
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def list_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/rollouts/{rollout_namespace}/{name}", include_in_schema=False)
    async def rollout_page(rollout_namespace: str, name: str) -> FileResponse:
        return FileResponse(STATIC / "rollout.html")

    @app.get("/api/config")
    async def settings() -> dict[str, Any]:
        return {"actions": actions, "readOnly": None if actions else READ_ONLY}

    @app.get("/api/stats")
    async def stats() -> dict[str, Any]:
        return hub.stats_view()

    @app.get("/api/rollouts")
    async def rows(namespace: str = "") -> dict[str, Any]:
        return {"rows": hub.rows(namespace), "stats": hub.stats_view()}

    @app.get("/api/rollouts/{rollout_namespace}/{name}")
    async def rollout(rollout_namespace: str, name: str) -> dict[str, Any]:
        view = hub.detail(f"{rollout_namespace}/{name}")
        if view is None:
            raise HTTPException(404, f"modelrollout {rollout_namespace}/{name} not found")
        return view

    @app.get("/api/stream", response_class=EventSourceResponse)
    async def stream(
        request: Request, rollout: str | None = None, namespace: str = ""
    ) -> AsyncIterator[ServerSentEvent]:
        subscription = hub.subscribe(rollout, namespace)
        try:
            while not await request.is_disconnected():
                message = await subscription.queue.get()
                if message is None:
                    return
                yield ServerSentEvent(event=message.event, data=message.data)
        finally:
            hub.unsubscribe(subscription)

    @app.get("/api/rollouts/{rollout_namespace}/{name}/checks/{check}/series")
    async def check_series(rollout_namespace: str, name: str, check: str) -> JSONResponse:
        body = hub.rollouts.get(f"{rollout_namespace}/{name}")
        if body is None:
            raise HTTPException(404, f"modelrollout {rollout_namespace}/{name} not found")
        try:
            request = series_request(body, check, datetime.now(UTC))
            answer = await run_in_threadpool(cache.get, request)
        except SeriesUnavailable as unavailable:
            return JSONResponse({"detail": str(unavailable)}, status_code=503)
        return JSONResponse(answer)

    @app.post("/api/rollouts/{rollout_namespace}/{name}/commands/{command}")
    async def command(
        rollout_namespace: str,
        name: str,
        command: str,
        to_revision: str | None = Body(None, embed=True, alias="toRevision"),
        marker: str | None = Header(None, alias=COMMAND_HEADER),
    ) -> JSONResponse:
        if marker is None:
            raise HTTPException(403, f"a command needs the {COMMAND_HEADER} header")
        if not actions:
            raise HTTPException(403, READ_ONLY)
        if command not in (*COMMANDS, "undo"):
            raise HTTPException(404, f"no command {command!r}")
        where = Target(target.api, rollout_namespace)
        try:
            if command == "undo":
                done = await run_in_threadpool(undo, where, name, to_revision)
            else:
                done = await run_in_threadpool(send_command, where, name, command)
        except CliError as refused:
            return JSONResponse({"detail": str(refused)}, status_code=409)
        except KubeApiError as error:
            # The API server's own status and words: RBAC's 403 says who may not do what.
            return JSONResponse({"detail": error.message}, status_code=error.status or 502)
        return JSONResponse({"message": done})

    return app


class _Server(uvicorn.Server):
    """uvicorn, ending the pages' event streams first on Ctrl-C: it waits for open responses."""

    def __init__(self, config: uvicorn.Config, hub: Hub) -> None:
        super().__init__(config)
        self._hub = hub

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._hub.stop()
        super().handle_exit(sig, frame)


def serve(target: Target, namespace: str, address: str, port: int, actions: bool = True) -> int:
    where = f"namespace {namespace}" if namespace else "all namespaces"
    mode = "" if actions else ", read-only"
    print(f"modelrollout dashboard for {where}{mode}: http://{address}:{port}/ (Ctrl-C stops it)")
    app = create_app(target, namespace, actions=actions)
    config = uvicorn.Config(
        app, host=address, port=port, log_level="warning", timeout_graceful_shutdown=5
    )
    _Server(config, app.state.hub).run()
    return 0
