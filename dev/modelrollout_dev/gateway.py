"""A loopback HTTP proxy that routes as the cluster says: a stand-in for the gateway, nothing else.

Pods here are processes (see `podprocesses`), so there is no kube-proxy and
no Gateway implementation. This proxy re-reads the routing objects every
0.2 s and sends each request where they say: for a Service, uniformly over
the healthy processes of the pods its selector matches (what kube-proxy
does); for an HTTPRoute, to a backendRef chosen by weight, then uniformly
over that Service's healthy pods (what a Gateway API implementation does);
a RequestMirror filter on the rule also sends that percent of requests to
its backend, whose answers are dropped (what a Gateway does with a mirror).
Responses, streamed ones included, pass through unchanged. A request with
nowhere to go gets 503; a failed upstream connection 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from modelrollout.kube.api import HTTPROUTES, SERVICES, KubeApi
from modelrollout_dev.podprocesses import Endpoint, PodProcesses

REFRESH_SECONDS = 0.2


@dataclass(frozen=True)
class Backend:
    weight: int
    endpoints: tuple[Endpoint, ...]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


class Gateway:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        pods: PodProcesses,
        *,
        service: str | None = None,
        httproute: str | None = None,
    ) -> None:
        if (service is None) == (httproute is None):
            raise ValueError("route by exactly one of service or httproute")
        self._api = api
        self._namespace = namespace
        self._pods = pods
        self._service = service
        self._httproute = httproute
        self._backends: tuple[Backend, ...] = ()
        self._mirror: Backend | None = None  # weight: percent of requests copied
        self.routed: Counter[str] = Counter()  # revision -> requests answered through it
        self.mirrored: Counter[str] = Counter()  # revision -> copies it answered
        self.failed: Counter[str] = Counter()  # "502" / "503" -> count
        self._random = random.Random(0)
        self._port = self._free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _free_port() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def _selector_endpoints(self, selector: dict[str, str]) -> tuple[Endpoint, ...]:
        return tuple(
            endpoint
            for endpoint in self._pods.endpoints().values()
            if endpoint.healthy and _matches(selector, endpoint.pod_labels)
        )

    def _service_selector(self, name: str) -> dict[str, str] | None:
        service = self._api.get(SERVICES, self._namespace, name)
        if service is None:
            return None
        selector: dict[str, str] = service["spec"].get("selector") or {}
        return selector

    def refresh(self) -> None:
        """Re-read the routing objects; the proxy routes by the latest answer."""
        if self._service is not None:
            selector = self._service_selector(self._service)
            self._backends = (
                () if selector is None else (Backend(1, self._selector_endpoints(selector)),)
            )
            return
        assert self._httproute is not None
        route = self._api.get(HTTPROUTES, self._namespace, self._httproute)
        backends: list[Backend] = []
        mirror: Backend | None = None
        for rule in (route or {}).get("spec", {}).get("rules", [])[:1]:
            for ref in rule.get("backendRefs", []):
                selector = self._service_selector(ref["name"])
                if selector is not None:
                    endpoints = self._selector_endpoints(selector)
                    backends.append(Backend(int(ref.get("weight", 1)), endpoints))
            for route_filter in rule.get("filters") or []:
                spec = route_filter.get("requestMirror") or {}
                selector = self._service_selector(spec.get("backendRef", {}).get("name", ""))
                if route_filter.get("type") == "RequestMirror" and selector is not None:
                    mirror = Backend(
                        int(spec.get("percent", 100)), self._selector_endpoints(selector)
                    )
        self._backends = tuple(backends)
        self._mirror = mirror

    def pick(self) -> Endpoint | None:
        candidates = [b for b in self._backends if b.weight > 0]
        if not candidates:
            return None
        (backend,) = self._random.choices(candidates, weights=[b.weight for b in candidates])
        if not backend.endpoints:
            return None
        return self._random.choice(backend.endpoints)

    def pick_mirror(self) -> Endpoint | None:
        mirror = self._mirror
        if mirror is None or not mirror.endpoints or self._random.uniform(0, 100) >= mirror.weight:
            return None
        return self._random.choice(mirror.endpoints)

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as error:  # keep routing on the last table through API hiccups
                print(f"[gateway] refresh failed: {error}", flush=True)
            await asyncio.sleep(REFRESH_SECONDS)

    def _app(self) -> Starlette:
        client = httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=2.0))

        mirrors: set[asyncio.Task[None]] = set()

        async def send_mirror(copy: httpx.Request, mirror: Endpoint) -> None:
            # Fire and forget: the client never waits for, nor sees, the mirror's answer.
            try:
                answer = await client.send(copy)
                self.mirrored[f"{mirror.revision} {answer.status_code}"] += 1
            except httpx.HTTPError:
                self.mirrored[f"{mirror.revision} error"] += 1
            finally:
                mirrors.discard(asyncio.current_task())

        async def proxy(request: Request) -> Response:
            endpoint = self.pick()
            if endpoint is None:
                self.failed["503"] += 1
                return JSONResponse({"error": {"message": "no healthy endpoint"}}, status_code=503)
            url = f"http://{endpoint.address}{request.url.path}"
            content = await request.body()
            content_type = request.headers.get("content-type", "application/json")
            upstream_request = client.build_request(
                request.method, url, content=content, headers={"content-type": content_type}
            )
            mirror = self.pick_mirror()
            if mirror is not None:
                copy = client.build_request(
                    request.method,
                    f"http://{mirror.address}{request.url.path}",
                    content=content,
                    headers={"content-type": content_type},
                )
                mirrors.add(asyncio.create_task(send_mirror(copy, mirror)))
            try:
                upstream = await client.send(upstream_request, stream=True)
            except httpx.TransportError as error:
                self.failed["502"] += 1
                return JSONResponse(
                    {"error": {"message": f"upstream {endpoint.pod}: {error!r}"}}, status_code=502
                )
            self.routed[endpoint.revision] += 1

            async def body() -> AsyncIterator[bytes]:
                try:
                    async for chunk in upstream.aiter_raw():
                        yield chunk
                finally:
                    await upstream.aclose()

            headers = {
                key: value
                for key, value in upstream.headers.items()
                if key.lower() in ("content-type", "cache-control")
            }
            headers["x-served-by-revision"] = endpoint.revision
            headers["x-served-by-pod"] = endpoint.pod
            return StreamingResponse(body(), status_code=upstream.status_code, headers=headers)

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            refresher = asyncio.create_task(self._refresh_forever())
            try:
                yield
            finally:
                refresher.cancel()
                await client.aclose()

        return Starlette(
            routes=[Route("/{path:path}", proxy, methods=["GET", "POST"])],
            lifespan=lifespan,
        )

    def start(self) -> Gateway:
        self.refresh()
        config = uvicorn.Config(
            self._app(), host="127.0.0.1", port=self._port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="gateway", daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the gateway failed to start")
            threading.Event().wait(0.05)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def snapshot(self) -> dict[str, Any]:
        return {
            "routed": dict(self.routed),
            "failed": dict(self.failed),
            "mirrored": dict(self.mirrored),
        }
