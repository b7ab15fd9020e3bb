"""Steady client traffic through a gateway until stopped, counted by serving revision."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import httpx

from modelrollout.kube.labels import revision_object_name
from modelrollout.traffic.session_affinity import PIN_HEADER
from modelserve.http_defaults import SERVED_BY_HEADER

# The project's proxy (modelrollout_dev.gateway) names the revision it routed to.
PROXY_REVISION_HEADER = "x-served-by-revision"


def served_revision(headers: httpx.Headers, rollout: str) -> str:
    """The revision that answered: the proxy's header, else from the pod modelserve names.

    A revision's pods are its Deployment's, `<rollout>-<revision>-<template hash>-<suffix>`.
    """
    if revision := headers.get(PROXY_REVISION_HEADER):
        return str(revision)
    pod = str(headers.get(SERVED_BY_HEADER, ""))
    prefix = revision_object_name(rollout, "x")[:-1]
    if not pod.startswith(prefix) or pod.count("-") < prefix.count("-") + 2:
        return "none"
    return pod.removeprefix(prefix).split("-", 1)[0]


def wait_until_served(url: str, model: str, timeout: float = 120) -> None:
    """Until a completion through `url` gets a 200: a gateway programs routes in its own time."""
    body = {"model": model, "prompt": "A model rollout", "max_tokens": 1}
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=30) as http:
        while True:
            try:
                if http.post(f"{url}/v1/completions", json=body).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no 200 through {url} within {timeout:.0f}s")
            time.sleep(0.2)


class _ClientThreads:
    """`workers` daemon threads running `_run` until stopped; a context manager."""

    def __init__(self, workers: int) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.ident is not None:  # started
                thread.join(timeout=60)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class BackgroundLoad(_ClientThreads):
    """A few client threads sending completions; answers counted by (revision, status).

    The model's name is the rollout's, as in the tests and benchmarks; `headers` go with
    every request (a blue-green preview's header, say)."""

    def __init__(
        self, url: str, model: str, workers: int = 2, headers: dict[str, str] | None = None
    ) -> None:
        self.url = url
        self.model = model
        self.headers = headers or {}
        self.answers: Counter[tuple[str, str]] = Counter()
        # (time.monotonic() when sent, revision, status) of every answer, in arrival order.
        self._timeline: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()
        super().__init__(workers)

    def _count(self, sent: float, revision: str, status: str) -> None:
        with self._lock:
            self.answers[(revision, status)] += 1
            self._timeline.append((sent, revision, status))

    def _run(self) -> None:
        body = {"model": self.model, "prompt": "A model rollout", "max_tokens": 4, "temperature": 0}
        with httpx.Client(timeout=30, headers=self.headers) as http:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    response = http.post(f"{self.url}/v1/completions", json=body)
                except httpx.HTTPError as error:
                    self._count(sent, "none", type(error).__name__)
                    continue
                self._count(
                    sent, served_revision(response.headers, self.model), str(response.status_code)
                )

    def count(self, revision: str, status: str) -> int:
        with self._lock:
            return self.answers[(revision, status)]

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.answers)

    def sent_since(self, moment: float) -> list[tuple[float, str, str]]:
        """(sent at, revision, status) of the answers to requests sent after `moment`
        (time.monotonic()), in the order they were sent."""
        with self._lock:
            return sorted(answer for answer in self._timeline if answer[0] > moment)


@dataclass
class Conversation:
    """One multi-turn session: its id and every turn's (sent at, revision, status)."""

    session_id: str
    turns: list[tuple[float, str, str]] = field(default_factory=list)

    @property
    def revisions(self) -> list[str]:
        """The revisions that answered, in turn order, each once."""
        return list(dict.fromkeys(revision for _, revision, _ in self.turns))

    @property
    def started(self) -> float:
        return self.turns[0][0]


class ConversationLoad(_ClientThreads):
    """Client threads each holding multi-turn chats, one after another, as a chat app does.

    A conversation has a fresh session id (a UUID's hex: its last digits are uniformly
    distributed) sent in `session_header` with every turn, and its turns go in sequence,
    each with the messages so far, `think` seconds apart. With `send_pin`, it sends back
    the revision header of the answers (PIN_HEADER), as docs/session-affinity.md asks.
    """

    def __init__(
        self,
        url: str,
        model: str,
        workers: int = 4,
        turns: int = 6,
        think: float = 0.5,
        session_header: str = "x-session-id",
        send_pin: bool = True,
    ) -> None:
        self.url = url
        self.model = model
        self.turns = turns
        self.think = think
        self.session_header = session_header
        self.send_pin = send_pin
        self._finished: list[Conversation] = []
        self._lock = threading.Lock()
        super().__init__(workers)

    def _converse(self, http: httpx.Client) -> Conversation:
        conversation = Conversation(uuid.uuid4().hex)
        headers = {self.session_header: conversation.session_id}
        messages: list[dict[str, str]] = []
        for turn in range(self.turns):
            messages.append({"role": "user", "content": f"Turn {turn}: tell me more."})
            body = {"model": self.model, "messages": messages, "max_tokens": 4, "temperature": 0}
            sent = time.monotonic()
            try:
                response = http.post(f"{self.url}/v1/chat/completions", json=body, headers=headers)
            except httpx.HTTPError as error:
                conversation.turns.append((sent, "none", type(error).__name__))
                break
            revision = served_revision(response.headers, self.model)
            conversation.turns.append((sent, revision, str(response.status_code)))
            if response.status_code != 200:
                break
            answer = response.json()["choices"][0]["message"]["content"]
            messages.append({"role": "assistant", "content": answer})
            if self.send_pin and (pin := response.headers.get(PIN_HEADER)):
                headers[PIN_HEADER] = pin
            if self._stop.wait(self.think):
                break
        return conversation

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                conversation = self._converse(http)
                with self._lock:
                    self._finished.append(conversation)

    def finished(self) -> list[Conversation]:
        """The conversations ended so far, in the order they ended."""
        with self._lock:
            return list(self._finished)
