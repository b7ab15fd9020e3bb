"""What a decided status asks of the world, and what of it to write: pure.

decide() (canary.py) turns observations into the next status; the rules
here turn that status into what the reconciler applies: which revisions
run with how many replicas, which weight the router sets, when an aborted
canary's pods go, the status written (with the commands handled and the
generation observed), and whether a tick that only re-read its checks
writes at all. The reconciler observes, calls these and applies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Literal

from modelrollout.engine.capacity import min_stable_replicas
from modelrollout.engine.redaction import holds_env_values, redacted_spec
from modelrollout.engine.strategies.bluegreen import is_blue_green
from modelrollout.engine.strategies.types import Commands
from modelrollout.engine.workloads import DesiredRevision, plan_revisions
from modelrollout.models.durations import parse_duration
from modelrollout.models.spec import ModelRolloutSpec
from modelrollout.models.status import ACTIVE_CANARY_PHASES, GpuUsage, ModelRolloutStatus
from modelrollout.traffic import capabilities_of
from modelrollout.traffic.base import Capability

# (status, reason, message) of the TrafficRouted condition (traffic/base.py).
RoutedCondition = tuple[Literal["True", "False", "Unknown"], str, str]


def may_start_canary(spec_revision: str, status: ModelRolloutStatus, commands: Commands) -> bool:
    """Whether this tick may start a canary of `spec_revision` (then capacity is asked)."""
    return spec_revision not in (status.stable_revision, status.canary_revision) or (
        commands.retry and status.phase == "RolledBack"
    )


def status_to_write(
    decided: ModelRolloutStatus,
    handled: Mapping[str, str],
    generation: int,
    gpus: GpuUsage | None,
    scale: tuple[int | None, str | None],
    routed: RoutedCondition | None,
    now: datetime,
) -> ModelRolloutStatus:
    """The decided status with the commands handled, the generation seen, GPUs, the scale
    (stable's pods and their selector) and routing, and no literal env value in its history."""
    status = (
        with_env_values_redacted(decided)
        .with_handled_commands(handled)
        .with_observed_generation(generation)
        .with_gpus(gpus)
        .with_scale(*scale)
    )
    if routed is not None:
        status = status.with_condition("TrafficRouted", *routed, now)
    return status


def with_env_values_redacted(status: ModelRolloutStatus) -> ModelRolloutStatus:
    """`status` with every literal env value in history[].spec replaced by its hash.

    Operators before redaction stored the values themselves; the first tick of
    this one rewrites them (the status differs, so that tick writes it).
    """
    if not any(entry.spec and holds_env_values(entry.spec) for entry in status.history):
        return status
    history = tuple(
        entry.model_copy(update={"spec": redacted_spec(entry.spec)}) if entry.spec else entry
        for entry in status.history
    )
    return status.model_copy(update={"history": history})


def writes_now(
    stored: ModelRolloutStatus,
    new_status: ModelRolloutStatus,
    written_at: datetime | None,
    now: datetime,
    check_refresh_seconds: float,
) -> bool:
    """Whether `new_status` is written now, or only its check readings kept in memory.

    A check's latest reading is written with any other change, when a check's
    state changes, and otherwise at most every `check_refresh_seconds`.
    """
    return (
        written_at is None
        or (now - written_at).total_seconds() >= check_refresh_seconds
        or new_status.differs_beyond_check_readings(stored)
    )


def _exact_weights(spec: ModelRolloutSpec) -> bool:
    return Capability.EXACT_WEIGHTS in capabilities_of(spec.traffic.router)


def canary_serving(status: ModelRolloutStatus) -> bool:
    """Whether the canary takes its share (not rolled back, aborted or promoted)."""
    return status.phase in ACTIVE_CANARY_PHASES or status.phase == "Promoting"


def aborted_canary_kept_until(
    spec: ModelRolloutSpec, status: ModelRolloutStatus
) -> datetime | None:
    """Until when an aborted canary's pods stay (`abortScaleDownDelay`); None: not kept."""
    canary = spec.strategy.canary
    aborted_at = status.aborted_at
    if canary is not None and aborted_at is not None and _exact_weights(spec):
        return aborted_at + timedelta(seconds=parse_duration(canary.abort_scale_down_delay))
    return None


def _stable_plan_weight(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> int:
    """The stable weight that sizes stable's pods: it keeps them while traffic leaves it.

    With exact weights, traffic moves in the same tick as a scale-down would start:
    stable keeps its pods until the promotion completes, so no request meets a
    draining pod. The service router moves traffic by the pods' serving label, and
    only once the canary's pods are all Ready (traffic/service.py): under `capacity:
    surge` stable keeps its pods while the canary is to take everything, or their
    Service could, for a moment, select nothing Ready. Under `capacity: shift` the
    canary's last pods need stable's GPUs, so stable goes as the weight says.
    """
    if _exact_weights(spec):
        return 100 if status.phase == "Promoting" else status.weights.stable
    surge = spec.runtime.capacity == "surge"
    if surge and canary_serving(status) and status.weights.canary >= 100:
        return 100
    return status.weights.stable


def previous_replicas(spec: ModelRolloutSpec) -> int:
    """Pods of the revision kept warm after a promotion: a canary's rollbackWindow share
    (rounded up, at least one), blue-green's full size."""
    canary = spec.strategy.canary
    window = canary.rollback_window if canary is not None else None
    if window is None:
        return spec.runtime.replicas
    return max(1, math.ceil(spec.runtime.replicas * window.replica_percent / 100))


def revision_plan(
    spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime
) -> list[DesiredRevision]:
    """The revisions `status` asks for and their replicas (engine/workloads.py)."""
    serving = canary_serving(status)
    kept_until = aborted_canary_kept_until(spec, status)
    return plan_revisions(
        replicas=spec.runtime.replicas,
        stable=status.stable_revision,
        canary=status.canary_revision,
        stable_weight=_stable_plan_weight(spec, status),
        # A shadow's candidate is sized for the share of requests mirrored to it.
        canary_weight=max(status.weights.canary, status.weights.mirror),
        canary_serving=serving,
        keep_aborted_canary=kept_until is not None and now < kept_until,
        shift_min_stable=min_stable_replicas(spec)
        if spec.runtime.capacity == "shift" and spec.strategy.canary is not None
        else None,
        blue_green=is_blue_green(spec),
        previous=status.previous_revision,
        previous_replicas=previous_replicas(spec),
    )


def promoted(before: ModelRolloutStatus, after: ModelRolloutStatus) -> bool:
    """Whether a tick made its canary the stable revision."""
    return before.canary_revision is not None and after.stable_revision == before.canary_revision


def route_weight(status: ModelRolloutStatus) -> int | None:
    """The canary weight the router sets; None: leave the routes' weights as they are.

    A serving canary at weight 0 is warming up: the plan sized it, no route change.
    """
    serving = canary_serving(status)
    if status.weights.canary > 0 or status.weights.mirror > 0 or not serving:
        return status.weights.canary if serving else 0
    return None
