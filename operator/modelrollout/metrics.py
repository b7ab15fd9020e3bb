"""The operator's own metrics, for its `/metrics` endpoint.

Derived from what a tick decided, never counted on a side path: step
transitions and rollbacks from the strategy's Events, check evaluations
from the checks' `lastEvaluated`, phase and weight from the status written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from modelrollout.models.status import CheckStatus, ModelRolloutStatus, Phase

PHASES: tuple[str, ...] = get_args(Phase)


# The strategy's Events that start a step: the first step comes with CanaryStarted.
STEP_STARTED_REASONS = frozenset({"CanaryStarted", "StepStarted"})


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # Label values used per rollout, so a deleted rollout's series can be removed.
        self._series: dict[tuple[str, str], set[tuple[Gauge | Counter, tuple[str, ...]]]] = {}
        # Per rollout, the phase and weight the gauges show: set again only when they change
        # (ten label lookups a tick otherwise, for gauges that move a few times a rollout).
        self._shown: dict[tuple[str, str], tuple[str, int]] = {}
        labels = ("namespace", "rollout")
        self.phase = Gauge(
            "modelrollout_rollout_phase",
            "1 for the rollout's current phase, 0 for the others.",
            (*labels, "phase"),
            registry=self.registry,
        )
        self.canary_weight = Gauge(
            "modelrollout_rollout_canary_weight",
            "The canary's traffic weight (percent) the operator has set.",
            labels,
            registry=self.registry,
        )
        self.step_transitions = Counter(
            "modelrollout_step_transitions_total",
            "Canary steps started.",
            labels,
            registry=self.registry,
        )
        self.check_evaluations = Counter(
            "modelrollout_check_evaluations_total",
            "Evaluations of checks and alerts, by the state they gave.",
            (*labels, "check", "state"),
            registry=self.registry,
        )
        self.rollbacks = Counter(
            "modelrollout_rollbacks_total",
            "Rollbacks started, by reason (the Progressing condition's reason).",
            (*labels, "reason"),
            registry=self.registry,
        )
        self.leader = Gauge(
            "modelrollout_leader",
            "1 while this replica drives rollouts (holds the Lease, or runs alone).",
            registry=self.registry,
        )
        self.tick_duration = Histogram(
            "modelrollout_tick_duration_seconds",
            "Time one tick of one rollout takes, API calls and queries included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

        self.notifications_dropped = Counter(
            "modelrollout_notifications_dropped_total",
            "Notifications not delivered, by reason: queue_full (the bounded queue was full), "
            "retries_exhausted (the retry budget ran out), rejected (the sink answered a 4xx), "
            "config (the sink's configuration could not be used), error (a fault in the "
            "sender, logged).",
            ("reason",),
            registry=self.registry,
        )
        self.notification_delivery = Histogram(
            "modelrollout_notification_delivery_seconds",
            "From a tick's decision to the sink's 2xx answer, retries included, by sink type.",
            ("sink",),
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600),
            registry=self.registry,
        )
        self.notifications_queued = Gauge(
            "modelrollout_notifications_queued",
            "Notifications waiting to be delivered (the queue is bounded).",
            registry=self.registry,
        )

    def _track(self, metric: Gauge | Counter, labels: tuple[str, ...]) -> tuple[str, ...]:
        self._series.setdefault((labels[0], labels[1]), set()).add((metric, labels))
        return labels

    def observe_tick(
        self,
        namespace: str,
        rollout: str,
        before: ModelRolloutStatus,
        after: ModelRolloutStatus,
        events: Iterable[tuple[str, str, str]],
    ) -> None:
        shown = (after.phase, after.weights.canary)
        if self._shown.get((namespace, rollout)) != shown:
            for phase in PHASES:
                labels = self._track(self.phase, (namespace, rollout, phase))
                self.phase.labels(*labels).set(1 if after.phase == phase else 0)
            self.canary_weight.labels(*self._track(self.canary_weight, (namespace, rollout))).set(
                after.weights.canary
            )
            self._shown[(namespace, rollout)] = shown
        for _, reason, _ in events:
            if reason in STEP_STARTED_REASONS:
                self.step_transitions.labels(
                    *self._track(self.step_transitions, (namespace, rollout))
                ).inc()
            elif reason == "RollingBack":
                progressing = after.condition("Progressing")
                why = progressing.reason if progressing is not None else "Unknown"
                self.rollbacks.labels(*self._track(self.rollbacks, (namespace, rollout, why))).inc()
        for check in _newly_evaluated(before.checks, after.checks):
            labels = self._track(
                self.check_evaluations, (namespace, rollout, check.name, check.state)
            )
            self.check_evaluations.labels(*labels).inc()

    def forget(self, namespace: str, rollout: str) -> None:
        """Remove a deleted rollout's series (counters too: they would never move again)."""
        self._shown.pop((namespace, rollout), None)
        for metric, labels in self._series.pop((namespace, rollout), set()):
            metric.remove(*labels)


def _newly_evaluated(
    before: Sequence[CheckStatus], after: Sequence[CheckStatus]
) -> list[CheckStatus]:
    previous = {check.name: check.last_evaluated for check in before}
    return [
        check
        for check in after
        if check.last_evaluated is not None and check.last_evaluated != previous.get(check.name)
    ]
