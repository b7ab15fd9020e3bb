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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from modelrollout.models.schema import FREE_FORM

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
    # A field's docstring is its description in the CRD and docs/reference.md (models/crd.py).
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
    )


class Weights(StatusModel):
    """Traffic percentages the operator asks the router for."""

    stable: int = Field(default=0, ge=0, le=100)
    """Percent of traffic for the stable revision."""
    canary: int = Field(default=0, ge=0, le=100)
    """Percent of traffic for the canary revision."""
    mirror: int = Field(default=0, ge=0, le=100)
    """Percent of requests mirrored to a shadow revision."""


class GpuUsage(StatusModel):
    """GPUs each revision's pods request (pods that exist, Pending ones included)."""

    resource: str = "nvidia.com/gpu"
    """The extended resource counted."""
    per_pod: int = Field(default=0, ge=0)
    """GPUs one pod of the spec's revision requests."""
    stable: int = Field(default=0, ge=0)
    """GPUs requested by the stable revision's pods."""
    canary: int = Field(default=0, ge=0)
    """GPUs requested by the canary revision's pods."""


class CheckStatus(StatusModel):
    """One check (or `alert:<alertname>`) as of its last evaluation.

    `breaching_since` is the first evaluation of the current unbroken run of
    breaching samples (`for:` semantics); `unavailable_since` likewise for
    samples that could not be had. `value` is None when there was no finite
    value; `message` then says why.
    """

    name: str
    """The check's name, or alert:ALERTNAME for an alert."""
    value: float | None = None
    """The latest value written (canary over stable with compareTo); absent when there was none or
    it was infinite."""
    threshold: str = ""
    """The check's breachWhen (firing for an alert)."""
    state: CheckState = "Pending"
    """Pending (not evaluated yet), Passing, Breaching (breaches, not yet for its for), Breached, or
    Unavailable (no data)."""
    breaching_since: datetime | None = None
    """The first evaluation of the current unbroken run of breaching values."""
    unavailable_since: datetime | None = None
    """The first evaluation of the current unbroken run without data."""
    last_evaluated: datetime | None = None
    """When the reading shown (value, message) was taken. A reading whose state did not change is
    written at most every operator.checkStatusRefresh (60 s), so the check may have been
    evaluated since."""
    message: str = ""
    """Why there is no value, or that it was infinite."""


class GateStatus(StatusModel):
    """One quality gate of the last evaluation step (`modelserve eval --suite`)."""

    name: str
    """The gate, as modelserve names it (agreement, perplexity, latency, contains:PROMPT,
    notContains:PROMPT, regex:PROMPT, json:PROMPT, jsonSchema:PROMPT)."""
    passed: bool
    """Whether the gate passed."""
    value: float | None = None
    """The measured value (agreement ratio, perplexity increase in percent, latency in ms); absent
    for text checks."""
    threshold: str = ""
    """What the gate requires."""
    message: str = ""
    """What was seen; for a failure a short diff of the answers."""


class ExperimentGroup(StatusModel):
    """One group of an A/B experiment over its window, as Prometheus counted it."""

    name: Literal["A", "B"]
    """A: stable's requests (the control); B: the segment's, on the candidate."""
    revision: str
    """The revision that answered the group."""
    requests: float | None = None
    """Requests answered in the window; None: no data."""
    error_rate: float | None = None
    """Share of them that failed (0 to 1), as builtin errorRate."""
    ttft_p99: float | None = None
    """99th percentile time to first token, in seconds, as builtin ttftP99."""


class ExperimentCheck(StatusModel):
    """One of the analysis' builtin checks judged on group B over the experiment's window."""

    name: str
    """The check's name in spec.analysis.checks."""
    value: float | None = None
    """B's value, or B / A with compareTo stable; None: no data."""
    threshold: str = ""
    """Its breachWhen."""
    breached: bool = False
    """Whether the value breaches it."""


class ExperimentReport(StatusModel):
    """The A/B experiment of an experiment step: both groups, their difference, the checks and
    quality gates, and the decision. Pending until each group has minRequests requests."""

    revision: str
    """The candidate revision (group B)."""
    step: int
    """Index (from 0) of the experiment step."""
    window_seconds: int = 0
    """How long the groups were measured: from the step's start to measuredAt."""
    measured_at: datetime
    """When the groups were last measured."""
    groups: tuple[ExperimentGroup, ...] = ()
    """Group A (stable, the control) and group B (the segment, on the candidate)."""
    error_rate_difference: float | None = None
    """B's error rate minus A's."""
    ttft_p99_difference: float | None = None
    """B's TTFT p99 minus A's, in seconds."""
    checks: tuple[ExperimentCheck, ...] = ()
    """The analysis' builtin checks judged on B over the window."""
    gates: tuple[GateStatus, ...] = ()
    """Quality gates an earlier evaluation step of this rollout measured on B, if any."""
    decision: Literal["Pending", "Promote", "Rollback"] = "Pending"
    """Promote: B meets every check, the rollout goes on (next step, or promotion); Rollback: B
    breaches one; Pending: not enough data yet."""
    reason: str = ""
    """Why, in words."""


class Condition(StatusModel):
    # Any string on read: a status written by a newer operator may carry new types.
    type: str
    """The condition's type."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str
    """Why, in one CamelCase word."""
    message: str = ""
    """Why, in words."""
    last_transition_time: datetime
    """When status last changed."""


class RecordQuantization(StatusModel):
    """How the weights are quantized, from config.json's quantization_config."""

    method: str
    """GPTQ, AWQ, bitsandbytes, ..."""
    bits: int | None = None
    """Bits per weight."""
    group_size: int | None = None
    """Quantization group size."""


class RecordWeights(StatusModel):
    """The weight files the server loaded."""

    digest: str
    """sha256: over the weight files' names and SHA-256 digests, sorted by name."""
    files: int = Field(default=0, ge=0)
    """How many weight files."""
    bytes: int = Field(default=0, ge=0)
    """Their total size in bytes."""


class RecordZooName(StatusModel):
    """A model URI's parts under the model-zoo naming convention."""

    org: str
    """ORG, the publisher."""
    name: str
    """NAME, the model."""
    version: str
    """VERSION, without its leading v."""
    quantization: str | None = None
    """QUANT, where the name carries one."""


class RecordCard(StatusModel):
    """spec.model.card, as declared."""

    license: str | None = None
    """The declared license."""
    parameters: int | None = None
    """The declared number of parameters."""
    context_length: int | None = None
    """The declared context length."""
    quantization: str | None = None
    """The declared quantization."""
    weights_digest: str | None = None
    """The declared weights digest."""


class ModelRecord(StatusModel):
    """What a revision's model is: what its spec says and, for engine torch, what its server
    reported (GET /v1/model-record once its first pod was Ready). Bounded: strings clipped, at
    most 16 gates; never a credential (the URI loses user, password, query and fragment)."""

    uri: str
    """spec.model.uri without credentials."""
    name: str = ""
    """spec.model.name, the name clients send."""
    engine: str = ""
    """spec.runtime.engine."""
    image: str = ""
    """spec.runtime.image."""
    reported: bool = False
    """Whether the server's own record was folded in (the fields below)."""
    architecture: str | None = None
    """config.json's architectures[0]."""
    model_type: str | None = None
    """config.json's model_type."""
    parameters: int | None = None
    """Number of parameters."""
    context_length: int | None = None
    """Context length the server allows."""
    dtype: str | None = None
    """The dtype the checkpoint declares."""
    serving_dtype: str | None = None
    """The dtype the server computes in."""
    quantization: RecordQuantization | None = None
    """How the weights are quantized, if they are."""
    license: str | None = None
    """The model card's license, else config.json's."""
    weights: RecordWeights | None = None
    """Digest of the loaded weight files; absent for a model read from a hub."""
    gates: tuple[GateStatus, ...] = ()
    """The quality gates the rollout measured on this revision."""
    zoo: RecordZooName | None = None
    """The URI's ORG/NAME/VERSION[-QUANT] parts, with spec.model.naming zoo."""
    declared: RecordCard | None = None
    """spec.model.card: what the model's owner declares (not checked against the weights)."""


class HistoryEntry(StatusModel):
    """One revision's outcome, newest first in `status.history`.

    `spec` holds the revision's `model` and `runtime` as the user wrote them
    (defaults left out), so `kubectl modelrollout undo` can put them back;
    None where the operator no longer knew them when it recorded the entry.
    """

    revision: str
    """The revision."""
    model: str
    """Its spec.model.uri."""
    outcome: Outcome
    """Promoted, RolledBack, Aborted (by the user or a spec reverted to stable) or Superseded (by a
    newer spec)."""
    at: datetime
    """When it happened."""
    reason: str = ""
    """Why, in words."""
    spec: Annotated[dict[str, Any], Field(json_schema_extra=FREE_FORM)] | None = None
    """The revision's model and runtime as written (defaults left out), for undo."""
    record: ModelRecord | None = None
    """What the revision's model is (`kubectl modelrollout history NAME --details`)."""


class ModelRolloutStatus(StatusModel):
    phase: Phase = "Pending"
    """Where the rollout is: Pending, Progressing (the canary walks its steps), Paused, Promoting
    (all traffic moving to the canary), Succeeded (one stable revision), RollingBack or
    RolledBack."""
    stable_revision: str | None = None
    """The revision serving as stable: a hash of spec.model and spec.runtime; its Deployment is
    NAME-REVISION."""
    stable_model: str | None = None
    """spec.model.uri of the stable revision."""
    canary_revision: str | None = None
    """The revision being rolled out, while there is one."""
    canary_model: str | None = None
    """spec.model.uri of the canary revision."""
    current_step: int | None = None
    """Index (from 0) of the canary step running now; the number of steps once promoting."""
    step_started_at: datetime | None = None
    """When the current step started, moved later by the time spent paused."""
    paused_at: datetime | None = None
    """When the rollout was paused."""
    pause_reason: str | None = None
    """Why it is paused: PauseStep, UserPaused, CheckBreached, MetricsUnavailable or
    EvaluationError."""
    canary_unready_since: datetime | None = None
    """Since when the canary has had fewer ready pods than desired (measured against
    progressDeadline)."""
    preview_ready_at: datetime | None = None
    """Blue-green: when the preview first had all its pods ready (autoPromotionAfter counts
    from here), moved later by the time spent paused."""
    aborted_at: datetime | None = None
    """When the canary was last rolled back or aborted (abortScaleDownDelay counts from here)."""
    previous_revision: str | None = None
    """The revision the last promotion moved traffic away from, kept warm without traffic until
    previousScaleDownAt: blue-green's previous color (at full size, for scaleDownDelay) or a
    canary's previous stable (strategy.canary.rollbackWindow), to which `kubectl modelrollout
    rollback` moves all traffic back in one write."""
    previous_model: str | None = None
    """spec.model.uri of the previous revision."""
    previous_scale_down_at: datetime | None = None
    """When the previous revision is scaled down: the end of the rollback window."""
    weights: Weights = Weights()
    """The traffic percentages the operator asks the router for."""
    gpus: GpuUsage | None = None
    """GPUs requested by each revision's existing pods (Pending ones included); absent for a rollout
    without GPUs."""
    replicas: int | None = None
    """Pods of the stable revision (its Deployment's status.replicas): the scale subresource's
    status.replicas, which an autoscaler reads as the current count."""
    selector: str | None = None
    """The stable revision's pods as a label selector: the scale subresource's selector, over
    whose pods an HPA averages its metrics."""
    checks: tuple[CheckStatus, ...] = ()
    """Every check and alert as of its last evaluation, in spec order."""
    gates: tuple[GateStatus, ...] = ()
    """The quality gates of the last evaluation step, as the suite judged them."""
    gates_revision: str | None = None
    """The canary revision the gates judged."""
    gates_step: int | None = None
    """Index (from 0) of the evaluation step the gates belong to."""
    experiment: ExperimentReport | None = None
    """The last A/B experiment step's report (groups, difference, decision); kept after it ends,
    until the next rollout starts."""
    conditions: tuple[Condition, ...] = ()
    """Conditions Progressing, Available, Paused, InvalidSpec, Unschedulable, MetricsUnavailable and
    TrafficRouted."""
    observed_generation: int | None = None
    """The metadata.generation this status reflects."""
    history: tuple[HistoryEntry, ...] = ()
    """Outcomes of past revisions, newest first, at most revisionHistoryLimit entries."""
    message: str = ""
    """What the rollout is doing now, in words."""
    handled_commands: dict[str, str] = {}
    """Nonce of the last handled command annotation, by command."""

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

    def with_scale(self, replicas: int | None, selector: str | None) -> ModelRolloutStatus:
        if (replicas, selector) == (self.replicas, self.selector):
            return self
        return self.model_copy(update={"replicas": replicas, "selector": selector})

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
