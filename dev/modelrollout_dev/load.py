"""Steady client traffic through a gateway until stopped, counted by serving revision."""

from __future__ import annotations

import threading
from collections import Counter
from types import TracebackType

import httpx


class BackgroundLoad:
    """A few client threads sending completions; answers counted by (revision, status)."""

    def __init__(self, url: str, model: str, workers: int = 2) -> None:
        self.url = url
        self.model = model
        self.answers: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _count(self, revision: str, status: str) -> None:
        with self._lock:
            self.answers[(revision, status)] += 1

    def _run(self) -> None:
        body = {"model": self.model, "prompt": "A model rollout", "max_tokens": 4, "temperature": 0}
        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                try:
                    response = http.post(f"{self.url}/v1/completions", json=body)
                except httpx.HTTPError as error:
                    self._count("none", type(error).__name__)
                    continue
                self._count(
                    response.headers.get("x-served-by-revision", "none"), str(response.status_code)
                )

    def count(self, revision: str, status: str) -> int:
        with self._lock:
            return self.answers[(revision, status)]

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.answers)

    def start(self) -> BackgroundLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.ident is not None:  # started
                thread.join(timeout=60)

    def __enter__(self) -> BackgroundLoad:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
