"""What a decided status asks of the world: routes, pods, the status written."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Literal

import pytest

from modelrollout.engine.strategies.desired import (
    may_start_canary,
    revision_plan,
    route_weight,
    status_to_write,
    with_env_values_redacted,
    writes_now,
)
from modelrollout.engine.strategies.types import Commands
from modelrollout.models import ModelRolloutStatus, Weights, parse_spec
from modelrollout.models.status import CheckStatus, HistoryEntry
from tests.unit.operator.builders import T0, example_spec

pytestmark = pytest.mark.unit


def test_a_serving_canary_at_weight_zero_warms_up_without_a_route_change() -> None:
    warming = ModelRolloutStatus(phase="Progressing", canary_revision="c", weights=Weights())
    assert route_weight(warming) is None
    at_20 = warming.model_copy(update={"weights": Weights(stable=80, canary=20)})
    assert route_weight(at_20) == 20
    mirrored = warming.model_copy(update={"weights": Weights(stable=100, canary=0, mirror=30)})
    assert route_weight(mirrored) == 0
    rolled_back = at_20.model_copy(update={"phase": "RollingBack"})
    assert route_weight(rolled_back) == 0


@pytest.mark.parametrize(
    ("router", "capacity", "phase", "stable_replicas"),
    [
        ("service", "surge", "Progressing", 2),
        ("service", "surge", "Promoting", 2),
        ("service", "shift", "Promoting", 0),
        ("gatewayAPI", "surge", "Progressing", 0),
        ("gatewayAPI", "surge", "Promoting", 2),
    ],
)
def test_stable_keeps_its_pods_while_its_traffic_moves_to_a_canary_at_100(
    router: str, capacity: str, phase: Literal["Progressing", "Promoting"], stable_replicas: int
) -> None:
    """A route moves all traffic in one write; the service router's labels move it once the
    canary's pods are all Ready, so stable's pods stay until then (and, promoting, until done),
    unless the canary needs their GPUs (`capacity: shift`)."""
    spec = example_spec()
    spec["traffic"]["router"] = router
    spec["runtime"]["capacity"] = capacity
    status = ModelRolloutStatus(
        phase=phase,
        stable_revision="s",
        canary_revision="c",
        weights=Weights(stable=0, canary=100),
    )
    plan = {item.revision: item.replicas for item in revision_plan(parse_spec(spec), status, T0)}
    assert plan == {"s": stable_replicas, "c": 2}


def test_only_a_new_revision_or_a_retry_after_a_rollback_starts_a_canary() -> None:
    rolled_back = ModelRolloutStatus(phase="RolledBack", stable_revision="s", canary_revision="c")
    assert may_start_canary("n", rolled_back, Commands())
    assert not may_start_canary("c", rolled_back, Commands())
    assert may_start_canary("c", rolled_back, Commands(retry=True))
    running = rolled_back.model_copy(update={"phase": "Progressing"})
    assert not may_start_canary("c", running, Commands(retry=True))


def test_the_status_written_records_commands_generation_and_routing() -> None:
    decided = ModelRolloutStatus(phase="Succeeded", stable_revision="s")
    written = status_to_write(
        decided,
        {"promote": "n1"},
        4,
        None,
        (3, "modelrollout.dev/revision=s,modelrollout.dev/rollout=chat"),
        ("True", "Accepted", "route accepted"),
        T0,
    )
    assert written.handled_commands == {"promote": "n1"}
    assert written.observed_generation == 4
    # What `kubectl scale` and an HPA read through the scale subresource.
    assert written.to_patch()["replicas"] == 3
    assert (
        written.to_patch()["selector"]
        == "modelrollout.dev/revision=s,modelrollout.dev/rollout=chat"
    )
    routed = written.condition("TrafficRouted")
    assert routed is not None and (routed.status, routed.reason) == ("True", "Accepted")
    assert (
        status_to_write(decided, {}, 4, None, (None, None), None, T0).condition("TrafficRouted")
        is None
    )


def test_a_new_check_reading_alone_is_written_at_most_every_refresh_period() -> None:
    stored = ModelRolloutStatus(
        phase="Progressing",
        checks=(CheckStatus(name="errors", state="Passing", value=0.01, last_evaluated=T0),),
    )
    later = T0 + timedelta(seconds=15)
    reading = stored.with_checks(
        (CheckStatus(name="errors", state="Passing", value=0.02, last_evaluated=later),)
    )
    assert not writes_now(stored, reading, T0, later, 60)
    assert writes_now(stored, reading, T0, T0 + timedelta(seconds=60), 60)
    assert writes_now(stored, reading, None, later, 60)
    breached = stored.with_checks(
        (CheckStatus(name="errors", state="Breached", value=0.2, last_evaluated=later),)
    )
    assert writes_now(stored, breached, T0, later, 60)


def test_literal_env_values_in_history_become_hashes_and_references_stay() -> None:
    reference = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    runtime = {
        "engine": "vllm",
        "image": "i",
        "env": [{"name": "A", "value": "planted"}, reference],
    }
    entry = HistoryEntry(
        revision="r1", model="m", outcome="Promoted", at=T0, spec={"model": {}, "runtime": runtime}
    )
    bare = HistoryEntry(revision="r0", model="m", outcome="Superseded", at=T0)
    status = ModelRolloutStatus(stable_revision="r1", history=(entry, bare))

    redacted = with_env_values_redacted(status)

    stored = redacted.history[0].spec
    assert stored is not None
    assert stored["runtime"]["env"] == [
        {"name": "A", "valueHash": "sha256:" + hashlib.sha256(b"planted").hexdigest()},
        reference,
    ]
    assert redacted.history[1] == bare
    assert redacted.model_copy(update={"history": status.history}) == status
    # Once redacted there is nothing left to do: the next tick writes nothing for it.
    assert with_env_values_redacted(redacted) is redacted
    assert "planted" not in str(
        status_to_write(status, {}, 1, None, (None, None), None, T0).to_patch()
    )
