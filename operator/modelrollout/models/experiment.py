"""Which experiment step, if any, a rollout runs now: read by the engine, analysis and routing."""

from __future__ import annotations

from modelrollout.models.spec import ExperimentStep, ModelRolloutSpec
from modelrollout.models.status import ACTIVE_CANARY_PHASES, ModelRolloutStatus


def running_experiment(
    spec: ModelRolloutSpec, status: ModelRolloutStatus
) -> tuple[int, ExperimentStep] | None:
    """(step index, step) of the experiment a live canary runs now; None: it runs none.

    Experiments are strategy.canary's only (parse_spec refuses them elsewhere).
    """
    canary = spec.strategy.canary
    index = status.current_step
    if (
        canary is None
        or status.canary_revision is None
        or status.phase not in ACTIVE_CANARY_PHASES
        or index is None
        or not 0 <= index < len(canary.steps)
    ):
        return None
    experiment = canary.steps[index].experiment
    return None if experiment is None else (index, experiment)


def segment_reaches_canary(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> bool:
    """Whether an experiment's segment brings the canary requests, whatever its weight: the
    step runs and the canary's pods are all Ready (before, a loading canary has no data)."""
    return running_experiment(spec, status) is not None and status.canary_unready_since is None
