"""The ModelRollout status: all progress of a rollout, nothing else.

The operator may be killed at any point; the next tick resumes from this
status alone, so everything a strategy needs to continue lives here: which
revisions are stable and canary, the current step and when it started, when
a pause or the canary's unreadiness began, every check's breach timer, and
the nonces of user commands already handled.

Models are frozen: strategies build a new status, never mutate the one they
were given, and a tick with nothing to do returns an equal object.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Phase = Literal[
    "Pending",
    "Progressing",
    "Paused",
    "Promoting",
    "Succeeded",
    "RollingBack",
    "RolledBack",
]
CheckState = Literal["Pending", "Passing", "Breaching", "Breached", "Unavailable"]
ConditionType = Literal[
    "Progressing",
    "Available",
    "Paused",
    "InvalidSpec",
    "Unschedulable",
    "MetricsUnavailable",
    "TrafficRouted",
    "InsufficientGPUCapacity",
]
Outcome = Literal["Promoted", "RolledBack", "Aborted", "Superseded"]

ACTIVE_CANARY_PHASES: frozenset[str] = frozenset({"Progressing", "Paused"})


class StatusModel(BaseModel):
    # `extra="ignore"`: a status written by a newer operator must still load.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class Weights(StatusModel):
    """Traffic percentages the operator asks the router for."""

    stable: int = Field(default=0, ge=0, le=100)
    canary: int = Field(default=0, ge=0, le=100)
    mirror: int = Field(default=0, ge=0, le=100)


class GpuUsage(StatusModel):
    """GPUs each revision's pods request (pods that exist, Pending ones included)."""

    resource: str = "nvidia.com/gpu"
    per_pod: int = 0
    stable: int = 0
    canary: int = 0


class CheckStatus(StatusModel):
    """One check (or `alert:<alertname>`) as of its last evaluation.

    `breaching_since` is the first evaluation of the current unbroken run of
    breaching samples (`for:` semantics); `unavailable_since` likewise for
    samples that could not be had. `value` is None when there was no finite
    value; `message` then says why.
    """

    name: str
    value: float | None = None
    threshold: str = ""
    state: CheckState = "Pending"
    breaching_since: datetime | None = None
    unavailable_since: datetime | None = None
    last_evaluated: datetime | None = None
    message: str = ""


class GateStatus(StatusModel):
    """One quality gate of the last evaluation step (`modelserve eval --suite`)."""

    name: str
    passed: bool
    value: float | None = None
    threshold: str = ""
    message: str = ""


class Condition(StatusModel):
    # Any string on read: a status written by a newer operator may carry new types.
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: datetime


class HistoryEntry(StatusModel):
    """One revision's outcome, newest first in `status.history`.

    `spec` holds the revision's `model` and `runtime` as the user wrote them
    (defaults left out), so `kubectl modelrollout undo` can put them back;
    None where the operator no longer knew them when it recorded the entry.
    """

    revision: str
    model: str
    outcome: Outcome
    at: datetime
    reason: str = ""
    spec: dict[str, Any] | None = None


class ModelRolloutStatus(StatusModel):
    phase: Phase = "Pending"
    stable_revision: str | None = None
    stable_model: str | None = None
    canary_revision: str | None = None
    canary_model: str | None = None
    current_step: int | None = None
    step_started_at: datetime | None = None
    paused_at: datetime | None = None
    # Why the rollout is paused: PauseStep, UserPaused, CheckBreached, MetricsUnavailable,
    # EvaluationError.
    pause_reason: str | None = None
    # Since when the canary has had fewer ready pods than desired (progressDeadline).
    canary_unready_since: datetime | None = None
    aborted_at: datetime | None = None
    # Blue-green: the color promotion switched away from, kept at full size until then.
    previous_revision: str | None = None
    previous_scale_down_at: datetime | None = None
    weights: Weights = Weights()
    gpus: GpuUsage | None = None
    checks: tuple[CheckStatus, ...] = ()
    # The last evaluation step's gates, and which canary revision and step they judged.
    gates: tuple[GateStatus, ...] = ()
    gates_revision: str | None = None
    gates_step: int | None = None
    conditions: tuple[Condition, ...] = ()
    observed_generation: int | None = None
    history: tuple[HistoryEntry, ...] = ()
    message: str = ""
    handled_commands: dict[str, str] = {}

    def to_patch(self) -> dict[str, Any]:
        """The camelCase status for a JSON merge patch.

        Unset top-level fields are sent as null, which a merge patch deletes,
        so a cleared `canaryRevision` really disappears; nested objects leave
        unset fields out (lists are replaced whole by a merge patch).
        """
        patch: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            key = field.alias or name
            if value is None:
                patch[key] = None
            elif isinstance(value, BaseModel):
                patch[key] = value.model_dump(mode="json", by_alias=True, exclude_none=True)
            elif isinstance(value, tuple):
                patch[key] = [
                    item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in value
                ]
            elif isinstance(value, datetime):
                patch[key] = _timestamp(value)
            else:
                patch[key] = value
        return patch

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def with_condition(
        self,
        type_: ConditionType,
        status: Literal["True", "False", "Unknown"],
        reason: str,
        message: str,
        now: datetime,
    ) -> ModelRolloutStatus:
        """Set a condition; `lastTransitionTime` moves only when its status flips."""
        current = self.condition(type_)
        if (
            current is not None
            and current.status == status
            and current.reason == reason
            and current.message == message
        ):
            return self
        since = current.last_transition_time if current and current.status == status else now
        updated = Condition(
            type=type_, status=status, reason=reason, message=message, last_transition_time=since
        )
        others = tuple(c for c in self.conditions if c.type != type_)
        return self.model_copy(update={"conditions": (*others, updated)})

    def without_true_condition(
        self, type_: ConditionType, reason: str, message: str, now: datetime
    ) -> ModelRolloutStatus:
        """Turn a True condition False; add nothing when it is absent or already False."""
        current = self.condition(type_)
        if current is None or current.status != "True":
            return self
        return self.with_condition(type_, "False", reason, message, now)

    def with_checks(
        self, checks: tuple[CheckStatus, ...] | list[CheckStatus]
    ) -> ModelRolloutStatus:
        checks = tuple(checks)
        return self if checks == self.checks else self.model_copy(update={"checks": checks})

    def differs_beyond_check_readings(self, other: ModelRolloutStatus) -> bool:
        """Whether anything but the checks' latest readings (value, message, time) differs.

        A check's state (and when it started breaching or went unavailable)
        counts as a difference: those are what the rollout decides on.
        """

        def settled(status: ModelRolloutStatus) -> ModelRolloutStatus:
            return status.with_checks(
                tuple(
                    check.model_copy(update={"value": None, "message": "", "last_evaluated": None})
                    for check in status.checks
                )
            )

        return settled(self) != settled(other)

    def with_handled_commands(self, nonces: Mapping[str, str]) -> ModelRolloutStatus:
        """Record the nonces of the commands this tick acted on (see engine/commands.py)."""
        merged = {**self.handled_commands, **nonces}
        if merged == self.handled_commands:
            return self
        return self.model_copy(update={"handled_commands": merged})

    def with_gpus(self, gpus: GpuUsage | None) -> ModelRolloutStatus:
        return self if gpus == self.gpus else self.model_copy(update={"gpus": gpus})

    def with_observed_generation(self, generation: int) -> ModelRolloutStatus:
        if self.observed_generation == generation:
            return self
        return self.model_copy(update={"observed_generation": generation})

    def with_invalid_spec(self, message: str, generation: int, now: datetime) -> ModelRolloutStatus:
        """Condition InvalidSpec with the message; nothing else changes (nothing running moves)."""
        return (
            self.with_condition("InvalidSpec", "True", "InvalidSpec", message, now)
            .model_copy(update={"message": f"invalid spec: {message}"})
            .with_observed_generation(generation)
        )


def _timestamp(value: datetime) -> str:
    text = value.isoformat()
    return text.replace("+00:00", "Z")
