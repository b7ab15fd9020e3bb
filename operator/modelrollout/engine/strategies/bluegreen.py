"""Blue-green as the canary engine's steps, so both share one tested state machine.

The preview (the canary revision, at full size, weight 0) comes up beside
the active one; a pause step waits `autoPromotionAfter` (or for promote);
an evaluation step runs `prePromotionEvaluation`'s quality gates against
the preview when set; one setWeight 100 step is the switch, a single write
(Service selector, or route weights 0/100); an analysis step at 100 is the post-promotion window,
where a breach is a rollback: weight 0, the previous color takes everything
back at once, because it was kept at full size. What differs from a canary
is decided where the engine asks `is_blue_green`: the preview must be fully
ready before the switch, no data is never taken as healthy (a preview has
no user traffic, so its checks need test traffic or they hold it), and the
previous color stays up `scaleDownDelay` after promotion.
"""

from __future__ import annotations

from datetime import datetime

from modelrollout.engine.strategies.shadow import shadow_steps
from modelrollout.models.spec import (
    AnalysisStep,
    CanaryStep,
    CanaryStrategy,
    ModelRolloutSpec,
    PauseStep,
)
from modelrollout.models.status import ModelRolloutStatus

AUTO_PROMOTION_STEP = 0


def waits_for_ready_preview(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> bool:
    """Whether the current step is blue-green's `autoPromotionAfter`, which counts from
    `status.previewReadyAt` (a preview still starting up is no preview yet)."""
    return is_blue_green(spec) and status.current_step == AUTO_PROMOTION_STEP


def timed_step_started(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> datetime | None:
    """When the current timed step's time started running."""
    if waits_for_ready_preview(spec, status):
        return status.preview_ready_at
    return status.step_started_at


def is_blue_green(spec: ModelRolloutSpec) -> bool:
    return spec.strategy.blue_green is not None


def steps_strategy(spec: ModelRolloutSpec) -> CanaryStrategy:
    """The canary steps that run `spec`'s strategy (shadow's too, see shadow.py)."""
    if spec.strategy.canary is not None:
        return spec.strategy.canary
    if spec.strategy.shadow is not None:
        return CanaryStrategy(steps=shadow_steps(spec.strategy.shadow))
    blue_green = spec.strategy.blue_green
    if blue_green is None:
        raise ValueError("parse_spec guarantees exactly one strategy")
    # The first step (AUTO_PROMOTION_STEP): autoPromotionAfter.
    steps = [CanaryStep(pause=PauseStep(duration=blue_green.auto_promotion_after))]
    if blue_green.pre_promotion_evaluation is not None:
        # Quality gates judge the preview last, right before the switch.
        steps.append(CanaryStep(evaluation=blue_green.pre_promotion_evaluation))
    steps.append(CanaryStep(set_weight=100))
    if blue_green.post_promotion_analysis is not None:
        steps.append(
            CanaryStep(analysis=AnalysisStep(duration=blue_green.post_promotion_analysis.duration))
        )
    return CanaryStrategy(steps=steps)
