"""The tick scheduler: who is ticked when, with a fake clock and a recording tick."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from modelrollout.scheduler import TickScheduler

pytestmark = pytest.mark.unit


def body(name: str, phase: str = "Progressing") -> dict[str, Any]:
    return {
        "metadata": {"uid": f"uid-{name}", "namespace": "ns", "name": name, "generation": 1},
        "status": {"phase": phase, "observedGeneration": 1},
    }


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scheduler(clock: Clock, concurrency: int = 2, period: float = 2.0) -> TickScheduler:
    return TickScheduler(lambda b: None, concurrency, lambda b: period, clock)


def names(picked: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [b["metadata"]["name"] for _, b in picked]


def test_a_new_rollout_is_due_at_once_and_then_after_its_period() -> None:
    clock = Clock()
    ticks = scheduler(clock)
    ticks.update(body("a"), urgent=False)
    assert names(ticks.take_due(clock.now)) == ["a"]
    assert ticks.take_due(clock.now) == []  # running: never twice at once
    ticks.finished("uid-a")
    assert ticks.take_due(clock.now + 1.9) == []
    assert names(ticks.take_due(clock.now + 2.0)) == ["a"]


def test_the_earliest_due_goes_first_and_slots_bound_concurrency() -> None:
    clock = Clock()
    ticks = scheduler(clock, concurrency=2)
    for name in "abc":
        ticks.update(body(name), urgent=False)
        ticks.take_due(clock.now)
        ticks.finished(f"uid-{name}")
        clock.now += 0.5
    # Due at 102.0, 102.5 and 103.0; at 104 all are due but two slots are free.
    assert names(ticks.take_due(104.0)) == ["a", "b"]
    assert ticks.busy()
    ticks.finished("uid-a")
    assert names(ticks.take_due(104.0)) == ["c"]


def test_a_spec_change_jumps_ahead_of_rollouts_that_are_overdue() -> None:
    clock = Clock()
    ticks = scheduler(clock, concurrency=1)
    for name in "ab":
        ticks.update(body(name), urgent=False)
        ticks.take_due(clock.now)
        ticks.finished(f"uid-{name}")
    ticks.update(body("b"), urgent=True)
    assert names(ticks.take_due(clock.now + 60)) == ["b"]


def test_a_child_change_makes_the_owner_due_now_not_earlier_than_overdue_ones() -> None:
    clock = Clock()
    ticks = scheduler(clock, concurrency=1, period=30.0)
    for name in "ab":
        ticks.update(body(name), urgent=False)
        ticks.take_due(clock.now)
        ticks.finished(f"uid-{name}")
    assert ticks.take_due(clock.now + 1) == []
    clock.now += 1
    ticks.wake("ns", "b")
    assert names(ticks.take_due(clock.now)) == ["b"]
    ticks.wake("ns", "unknown")  # not tracked: nothing happens
    ticks.finished("uid-b")
    assert ticks.take_due(clock.now) == []


def test_a_change_during_a_tick_makes_it_due_again_when_the_tick_ends() -> None:
    clock = Clock()
    ticks = scheduler(clock, period=30.0)
    ticks.update(body("a"), urgent=False)
    assert names(ticks.take_due(clock.now)) == ["a"]
    ticks.wake("ns", "a")
    ticks.update(body("a"), urgent=True)
    ticks.finished("uid-a")
    assert names(ticks.take_due(clock.now)) == ["a"]


def test_a_body_seen_during_its_tick_is_timed_once_when_the_tick_ends() -> None:
    """Most bodies seen mid-tick are that tick's own status write: timing each as it came
    (which may parse the spec) was spent for nothing, the tick's end times it again."""
    clock = Clock()
    timed: list[str] = []

    def period(b: dict[str, Any]) -> float:
        timed.append(b["status"]["phase"])
        return 2.0

    ticks = TickScheduler(lambda b: None, 1, period, clock)
    ticks.update(body("a"), urgent=False)
    assert names(ticks.take_due(clock.now)) == ["a"]
    ticks.update(body("a", phase="Paused"), urgent=False)
    ticks.update(body("a", phase="Promoting"), urgent=False)
    assert timed == []
    ticks.finished("uid-a")
    assert timed == ["Promoting"]
    assert ticks.take_due(clock.now + 1.9) == []
    assert [b["status"]["phase"] for _, b in ticks.take_due(clock.now + 2)] == ["Promoting"]


def test_the_period_is_asked_of_the_latest_body() -> None:
    clock = Clock()
    ticks = TickScheduler(
        lambda b: None,
        1,
        lambda b: 30.0 if b["status"]["phase"] == "Succeeded" else 2.0,
        clock,
    )
    ticks.update(body("a"), urgent=False)
    ticks.take_due(clock.now)
    ticks.update(body("a", phase="Succeeded"), urgent=False)
    ticks.finished("uid-a")
    assert ticks.take_due(clock.now + 2) == []
    assert names(ticks.take_due(clock.now + 30)) == ["a"]


def test_a_forgotten_rollout_is_never_ticked_again() -> None:
    clock = Clock()
    ticks = scheduler(clock)
    ticks.update(body("a"), urgent=False)
    ticks.forget("uid-a")
    assert ticks.take_due(clock.now + 100) == []
    assert len(ticks) == 0


def test_run_ticks_every_rollout_with_at_most_concurrency_at_once() -> None:
    running = 0
    most = 0
    ticked: list[str] = []
    guard = threading.Lock()
    release = threading.Event()

    def tick(b: dict[str, Any]) -> None:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        release.wait(5)
        with guard:
            running -= 1
            ticked.append(b["metadata"]["name"])
        if b["metadata"]["name"] == "e":
            raise RuntimeError("a broken rollout must not stop the others")

    async def scenario() -> None:
        ticks = TickScheduler(tick, 3, lambda b: 3600.0)
        loop_task = asyncio.create_task(ticks.run())
        for name in "abcdefgh":
            ticks.update(body(name), urgent=False)
        await asyncio.sleep(0.3)
        release.set()
        for _ in range(100):
            if len(ticked) == 8:
                break
            await asyncio.sleep(0.05)
        loop_task.cancel()

    asyncio.run(scenario())
    assert sorted(ticked) == list("abcdefgh")
    assert most == 3


def test_a_new_body_can_bring_the_next_tick_forward_but_never_back() -> None:
    clock = Clock()
    periods = {"slow": 10.0, "soon": 1.0}
    ticks = TickScheduler(lambda b: None, 1, lambda b: periods[b["status"]["phase"]], clock)
    ticks.update(body("a", phase="slow"), urgent=False)
    ticks.take_due(clock.now)
    ticks.finished("uid-a")  # due at 110
    ticks.update(body("a", phase="soon"), urgent=False)  # e.g. a check just evaluated
    assert names(ticks.take_due(clock.now + 1)) == ["a"]
    ticks.finished("uid-a")
    ticks.update(body("a", phase="slow"), urgent=False)
    assert names(ticks.take_due(clock.now + 1)) == ["a"]  # still due at 101, not pushed to 110


def test_a_failed_tick_waits_its_period_even_if_changes_came_meanwhile() -> None:
    clock = Clock()
    ticks = scheduler(clock, period=2.0)
    ticks.update(body("a"), urgent=False)
    ticks.take_due(clock.now)
    ticks.wake("ns", "a")  # e.g. a watch event while the API server was failing the tick
    ticks.finished("uid-a", failed=True)
    assert ticks.take_due(clock.now + 1.9) == []
    assert names(ticks.take_due(clock.now + 2.0)) == ["a"]
