"""The build lock: two processes on a cold cache build one after the other."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from modelrollout_dev import toolchain

pytestmark = pytest.mark.unit


def _hold(cache: str, spans: multiprocessing.Queue[tuple[float, float]]) -> None:
    os.environ["MODELROLLOUT_CACHE"] = cache
    with toolchain.build_lock():
        started = time.monotonic()
        time.sleep(0.5)
        spans.put((started, time.monotonic()))


def test_two_processes_never_hold_the_build_lock_together(tmp_path: Path) -> None:
    spans: multiprocessing.Queue[tuple[float, float]] = multiprocessing.Queue()
    builders = [
        multiprocessing.Process(target=_hold, args=(str(tmp_path), spans)) for _ in range(2)
    ]
    for builder in builders:
        builder.start()
    for builder in builders:
        builder.join(30)
    first, second = sorted([spans.get(timeout=5), spans.get(timeout=5)])
    assert second[0] >= first[1], (first, second)


def test_the_lock_is_reentrant_within_a_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELROLLOUT_CACHE", str(tmp_path))
    with toolchain.build_lock(), toolchain.build_lock():
        assert (tmp_path / ".build.lock").is_file()
