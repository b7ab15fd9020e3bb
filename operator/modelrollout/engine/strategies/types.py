"""What a strategy sees (Observations) and what it returns (Decision).

The reconciler observes the world once per tick, hands it here, and applies
the Decision: if `rollback_now`, canary weight 0 in one write first; then
the new status (written only if it differs from the old one); then Events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from modelrollout.analysis.assessment import AnalysisVerdict
from modelrollout.analysis.experiment import ExperimentFigures
from modelrollout.models.status import GateStatus, ModelRolloutStatus
from modelrollout.traffic.base import RouterCapabilities

__all__ = [
    "AnalysisVerdict",
    "Commands",
    "Decision",
    "EvaluationResult",
    "Event",
    "Observations",
    "RevisionObservation",
]

# (type, reason, message), as Kubernetes Events take them.
Event = tuple[Literal["Normal", "Warning"], str, str]


@dataclass(frozen=True)
class RevisionObservation:
    """The pods of one revision as the cluster reports them."""

    revision: str
    desired_replicas: int
    ready_replicas: int
    # From Pending pods with PodScheduled=False, reason Unschedulable.
    unschedulable_message: str | None = None

    @property
    def fully_ready(self) -> bool:
        return self.desired_replicas > 0 and self.ready_replicas >= self.desired_replicas


@dataclass(frozen=True)
class Commands:
    """User commands not yet handled this rollout (see engine/commands.py)."""

    promote: bool = False
    promote_full: bool = False
    abort: bool = False
    pause: bool = False
    resume: bool = False
    retry: bool = False
    # Back to the revision kept warm by the last promotion (status.previousRevision).
    rollback: bool = False

    @classmethod
    def from_pending(cls, pending: Mapping[str, str]) -> Commands:
        """From the {command: nonce} map of annotations not yet handled."""
        return cls(
            promote="promote" in pending,
            promote_full="promote-full" in pending,
            abort="abort" in pending,
            pause="pause" in pending,
            resume="resume" in pending,
            retry="retry" in pending,
            rollback="rollback" in pending,
        )


@dataclass(frozen=True)
class EvaluationResult:
    """The finished quality-gate Job of one canary revision's evaluation step.

    passed: every gate passed; failed: a gate failed (the suite ran and judged);
    error: no judgement (the suite could not run, the Job failed or timed out,
    or its result could not be read), which never counts as a pass.
    """

    revision: str
    step: int
    outcome: Literal["passed", "failed", "error"]
    gates: tuple[GateStatus, ...] = ()
    message: str = ""


@dataclass(frozen=True)
class Observations:
    now: datetime
    spec_revision: str
    generation: int
    canary: RevisionObservation | None
    stable: RevisionObservation | None
    # (stable, canary) percentages the router reports as actually in effect.
    achieved_weights: tuple[int, int]
    analysis: AnalysisVerdict
    commands: Commands = field(default_factory=Commands)
    # Why a new revision cannot be placed now (engine/capacity.py); None: it fits,
    # or no new revision is about to start.
    capacity_shortfall: str | None = None
    # The current evaluation step's result; None while it runs or when there is none.
    evaluation: EvaluationResult | None = None
    # What the rollout's router can do (traffic/base.py). None of them: every
    # weight waits for the router to report it achieved.
    router_capabilities: RouterCapabilities = frozenset()
    # The revision the last promotion kept warm (status.previousRevision), if it has a Deployment.
    previous: RevisionObservation | None = None
    # What each revision's server reported at GET /v1/model-record (engine/model_record.py),
    # by revision: fetched off the tick once its first pod was Ready.
    model_records: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Both groups of the experiment step running now, measured once its time is up
    # (analysis/experiment.py); None: not measured this tick.
    experiment: ExperimentFigures | None = None


@dataclass(frozen=True)
class Decision:
    status: ModelRolloutStatus
    events: list[Event] = field(default_factory=list)
    # Set canary weight 0 in one write BEFORE writing `status`.
    rollback_now: bool = False
