"""Fixtures for the cluster tests."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class _MetricsHandler(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, str]]:
    """A real HTTP /metrics endpoint on loopback exposing one uniquely valued gauge."""
    marker = str(uuid.uuid4().int % 1_000_000)
    handler = type("Handler", (_MetricsHandler,), {"body": f"smoke_marker {marker}\n".encode()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", marker
    finally:
        server.shutdown()
        server.server_close()
