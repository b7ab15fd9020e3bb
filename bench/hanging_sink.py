"""A notification sink that hangs: accepts connections on loopback and never answers."""

from __future__ import annotations

import socket
import threading


class HangingSink:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self._held.append(self._listener.accept()[0])
            except OSError:
                return

    @property
    def accepted(self) -> int:
        return len(self._held)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/hook"

    def close(self) -> None:
        self._listener.close()
        for connection in self._held:
            connection.close()
