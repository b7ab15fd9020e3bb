"""Shadow as the canary engine's steps: mirror first, then what `then` says.

The candidate comes up beside stable and the HTTPRoute's RequestMirror
filter copies `mirrorPercent` of live requests to it; users only ever get
stable's answers. One analysis step of `duration` judges it on that mirrored
traffic (checks with `compareTo: stable` give latency ratios); no data is
never taken as healthy. Then:

- promote: all traffic moves to it (no canary steps);
- canary: it continues as a canary, through `canarySteps` when given, else
  setWeight 10, analysis, setWeight 50, analysis (each analysis as long as
  the shadow's `duration`);
- stop: it is torn down whatever the verdict, never promoted; the verdict
  stays in status.checks for the user to read.

A breach during the shadow rolls back like a canary's: the mirror is
removed and the candidate torn down.
"""

from __future__ import annotations

from modelrollout.models.spec import AnalysisStep, CanaryStep, ShadowStrategy


def shadow_steps(shadow: ShadowStrategy) -> list[CanaryStep]:
    judged = CanaryStep(analysis=AnalysisStep(duration=shadow.duration))
    if shadow.then != "canary":
        return [judged]
    if shadow.canary_steps is not None:
        return [judged, *shadow.canary_steps]
    return [
        judged,
        CanaryStep(set_weight=10),
        CanaryStep(analysis=AnalysisStep(duration=shadow.duration)),
        CanaryStep(set_weight=50),
        CanaryStep(analysis=AnalysisStep(duration=shadow.duration)),
    ]
