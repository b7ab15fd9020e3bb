"""An A/B experiment's verdict as a pure function of the groups' figures.

Group A is stable's requests (the control), group B the segment's, which the
router sends to the candidate for the step's duration (traffic/segment.py).
Once the duration is up, the reconciler measures both groups over the
experiment's window (analysis/experiment.py) and `judge` decides:

- Rollback when a quality gate an earlier evaluation step measured on B
  failed;
- Pending while a group has fewer than `minRequests` requests, or a check
  has no value (no data is never a pass): the step goes on, segment routed,
  and is judged again at the next analysis interval;
- Rollback when B breaches a builtin check of spec.analysis: its absolute
  threshold, or with `compareTo: stable` the ratio B / A;
- Promote otherwise: the rollout goes on to its next step (or promotion).
"""

from __future__ import annotations

from datetime import datetime

from modelrollout.analysis.builtins import ratio
from modelrollout.analysis.experiment import ExperimentFigures, GroupFigures
from modelrollout.models.spec import ExperimentStep, ModelRolloutSpec
from modelrollout.models.status import (
    ExperimentCheck,
    ExperimentGroup,
    ExperimentReport,
    GateStatus,
)


def _group(name: str, revision: str, figures: GroupFigures) -> ExperimentGroup:
    return ExperimentGroup.model_validate(
        {
            "name": name,
            "revision": revision,
            # increase() extrapolates to the window's edges: a count is a whole number.
            "requests": None if figures.requests is None else float(round(figures.requests)),
            "error_rate": figures.values.get("errorRate"),
            "ttft_p99": figures.values.get("ttftP99"),
        }
    )


def _difference(b: float | None, a: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _checks(spec: ModelRolloutSpec, figures: ExperimentFigures) -> tuple[ExperimentCheck, ...]:
    checks = []
    for check in spec.analysis.checks:
        if check.builtin is None:
            continue
        b = figures.b.values.get(check.builtin)
        a = figures.a.values.get(check.builtin)
        value = b if check.compare_to is None or b is None else (None if a is None else ratio(b, a))
        checks.append(
            ExperimentCheck(
                name=check.name,
                value=value,
                threshold=check.breach_when,
                breached=value is not None and check.threshold.breached_by(value),
            )
        )
    return tuple(checks)


def _describe(value: float | None) -> str:
    return "no data" if value is None else f"{value:.4g}"


def judge(
    spec: ModelRolloutSpec,
    step: ExperimentStep,
    stable: str,
    figures: ExperimentFigures,
    gates: tuple[GateStatus, ...],
    now: datetime,
) -> ExperimentReport:
    """The report of the experiment `figures` measured; `gates`: B's quality gates, if any."""
    groups = (
        _group("A", stable, figures.a),
        _group("B", figures.revision, figures.b),
    )
    checks = _checks(spec, figures)
    report = ExperimentReport(
        revision=figures.revision,
        step=figures.step,
        window_seconds=figures.window_seconds,
        measured_at=now,
        groups=groups,
        error_rate_difference=_difference(groups[1].error_rate, groups[0].error_rate),
        ttft_p99_difference=_difference(groups[1].ttft_p99, groups[0].ttft_p99),
        checks=checks,
        gates=gates,
    )
    failed_gates = [gate.name for gate in gates if not gate.passed]
    if failed_gates:
        failed = ", ".join(failed_gates)
        return report.model_copy(
            update={"decision": "Rollback", "reason": f"B fails quality gates {failed}"}
        )
    if figures.error is not None:
        return report.model_copy(update={"reason": f"metrics unavailable: {figures.error}"})
    short = [
        f"group {group.name} has {_describe(group.requests)} of {step.min_requests} requests"
        for group in groups
        if group.requests is None or group.requests < step.min_requests
    ]
    missing = [check.name for check in checks if check.value is None]
    if short or missing:
        reasons = short + ([f"no data for {', '.join(missing)}"] if missing else [])
        return report.model_copy(update={"reason": "; ".join(reasons)})
    breached = [check for check in checks if check.breached]
    if breached:
        why = ", ".join(
            f"{c.name} {_describe(c.value)} (breach when {c.threshold})" for c in breached
        )
        return report.model_copy(update={"decision": "Rollback", "reason": f"B breaches {why}"})
    judged = f"{len(checks)} check(s)" if checks else "no builtin check"
    return report.model_copy(
        update={
            "decision": "Promote",
            "reason": f"B meets {judged} over {groups[1].requests:.0f} requests "
            f"(A: {groups[0].requests:.0f})",
        }
    )


def summary(report: ExperimentReport) -> str:
    """One line for the ExperimentVerdict Event."""
    parts = [
        f"{group.name} ({group.revision}): {_describe(group.requests)} requests, "
        f"errors {_describe(group.error_rate)}, TTFT p99 {_describe(group.ttft_p99)}s"
        for group in report.groups
    ]
    return (
        f"experiment {report.decision}: {report.reason}; {'; '.join(parts)}; "
        f"B-A errors {_describe(report.error_rate_difference)}, "
        f"TTFT p99 {_describe(report.ttft_p99_difference)}s"
    )
