"""Fetches each torch revision's GET /v1/model-record off the tick.

A tick asks for a revision's record (`wanted`) once the revision has a Ready
pod; the fetch runs on this fetcher's own threads and never blocks a tick.
It reads from a Ready pod's IP and its `http` container port (the pod's own
address works from inside a cluster and from the dev harness, whose pod
network the host reaches, where Service names do not resolve). A success is
kept until the rollout no longer has that revision running, and wakes the
rollout so the next tick folds it into status (engine/model_record.py); a
failure records nothing and is retried, at most MAX_ATTEMPTS times, with a
growing delay.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import urllib3

from modelrollout.kube.api import PODS, KubeApi, KubeApiError, is_ready
from modelrollout.kube.labels import label_selector, selector_labels
from modelrollout.kube.workloads import RolloutRef

RECORD_PATH = "/v1/model-record"
MAX_ATTEMPTS = 6
MAX_BYTES = 8192
FIRST_RETRY_SECONDS = 2.0
logger = logging.getLogger("modelrollout")

Wake = Callable[[str, str], None]


class RecordFetcher:
    def __init__(self, api: KubeApi, timeout_seconds: float = 5.0, workers: int = 2) -> None:
        self._api = api
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(total=timeout_seconds), retries=False
        )
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="model-record")
        self._guard = threading.Lock()
        self._records: dict[tuple[str, str], dict[str, Any]] = {}
        self._busy: set[tuple[str, str]] = set()
        self._given_up: set[tuple[str, str]] = set()
        self._stopped = threading.Event()
        self.wake: Wake = lambda namespace, name: None

    def records(self, uid: str, running: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The records fetched for the rollout's `running` revisions; forgets the others."""
        keep = set(running)
        with self._guard:
            for key in [k for k in (*self._records, *self._given_up) if k[0] == uid]:
                if key[1] not in keep:
                    self._records.pop(key, None)
                    self._given_up.discard(key)
            return {rev: rec for (u, rev), rec in self._records.items() if u == uid}

    def wanted(self, rollout: RolloutRef, revision: str) -> None:
        """Fetch `revision`'s record in the background unless known, in flight or given up."""
        key = (rollout.uid, revision)
        with self._guard:
            if key in self._records or key in self._busy or key in self._given_up:
                return
            self._busy.add(key)
        self._executor.submit(self._fetch, rollout, revision)

    def close(self) -> None:
        self._stopped.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _fetch(self, rollout: RolloutRef, revision: str) -> None:
        key = (rollout.uid, revision)
        record: dict[str, Any] | None = None
        try:
            delay = FIRST_RETRY_SECONDS
            for attempt in range(1, MAX_ATTEMPTS + 1):
                record = self._fetch_once(rollout, revision)
                if record is not None or attempt == MAX_ATTEMPTS:
                    break
                if self._stopped.wait(delay):
                    return
                delay *= 2
        finally:
            with self._guard:
                self._busy.discard(key)
                if record is not None:
                    self._records[key] = record
                else:
                    self._given_up.add(key)
        if record is not None:
            self.wake(rollout.namespace, rollout.name)
        else:
            logger.warning(
                "%s/%s: no model record from revision %s after %d attempts",
                rollout.namespace,
                rollout.name,
                revision,
                MAX_ATTEMPTS,
            )

    def _fetch_once(self, rollout: RolloutRef, revision: str) -> dict[str, Any] | None:
        try:
            pods = self._api.list(
                PODS, rollout.namespace, label_selector(selector_labels(rollout.name, revision))
            )
        except KubeApiError:
            return None
        for pod in pods:
            address = pod_address(pod)
            if address is None:
                continue
            try:
                response = self._http.request(
                    "GET", f"http://{address}{RECORD_PATH}", preload_content=False
                )
                body = response.read(MAX_BYTES + 1)
                response.release_conn()
            except urllib3.exceptions.HTTPError:
                continue
            if response.status != 200 or len(body) > MAX_BYTES:
                continue
            try:
                record = json.loads(body)
            except ValueError:
                continue
            if isinstance(record, Mapping):
                return dict(record)
        return None


def pod_address(pod: Mapping[str, Any]) -> str | None:
    """HOST:PORT of a Ready pod's `http` container port; None for a pod not serving."""
    ip = pod.get("status", {}).get("podIP")
    if not ip or not is_ready(pod):
        return None
    for container in pod.get("spec", {}).get("containers", []):
        for port in container.get("ports", []):
            if port.get("name") == "http" and port.get("containerPort"):
                host = f"[{ip}]" if ":" in ip else ip
                return f"{host}:{port['containerPort']}"
    return None
