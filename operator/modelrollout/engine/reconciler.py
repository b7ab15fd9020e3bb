"""One tick of one rollout: observe the world, let the strategy decide, act, write status.

Every rule is a pure function: decide() (strategies/canary.py) gives the next
status; strategies/desired.py what of it to write and which children and
route weights it asks for; strategies/timers.py when the next tick is due.
This module only observes, calls them and applies what they return.

Order matters for restart safety: on a rollback the canary weight goes to 0
first; then the new status (which holds all progress) is written; only then
are children converged to what that status says. A killed operator therefore
resumes from status and re-applies the same children, never a step twice.

A check's latest reading (value, message, `lastEvaluated`) is written with
any other change, when a check's state changes, and otherwise at most every
`check_refresh_seconds`; in between it is kept in memory. Writing every
evaluation was most of the operator's status writes (one per check
evaluation per rollout) and, at hundreds of rollouts, queued the writes
that matter (a rollback's) behind them. A restarted operator, having lost
the readings in memory, evaluates the checks again at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from modelrollout.analysis.assessment import check_events
from modelrollout.analysis.experiment import ExperimentFigures, measure
from modelrollout.analysis.pool import ProviderPool
from modelrollout.analysis.provider import MetricProvider
from modelrollout.analysis.pushed import PushedAlerts
from modelrollout.analysis.runner import analysis_context, evaluate
from modelrollout.engine.capacity import assess, gpus_by_node, gpus_per_pod, node_gpus, pod_gpus
from modelrollout.engine.children import (
    ForeignScale,
    PodTemplate,
    converge_deployments,
    converge_disruption_budgets,
    mark_spec_revision,
    observe_deployments,
    revision_state,
    unschedulable_message,
)
from modelrollout.engine.commands import pending_in_body
from modelrollout.engine.comparison import (
    DEFAULT_SHADOW_PROXY_IMAGE,
    comparison_wanted,
    converge_comparison,
    proxy_ready,
)
from modelrollout.engine.evaluation import (
    converge_evaluation,
    end_evaluation,
    ended_evaluation,
    observe_evaluation,
)
from modelrollout.engine.load import converge_load, load_services
from modelrollout.engine.model_record import wants_report
from modelrollout.engine.notifications import Notification, derive_notifications
from modelrollout.engine.parsed_specs import ParsedSpec, ParsedSpecs
from modelrollout.engine.podspec import build_pod_metadata, build_pod_spec
from modelrollout.engine.record_fetcher import RecordFetcher
from modelrollout.engine.revision import revision_to_mark, serving_revision
from modelrollout.engine.step_event import fold_events
from modelrollout.engine.strategies import canary
from modelrollout.engine.strategies.bluegreen import is_blue_green
from modelrollout.engine.strategies.desired import (
    may_start_canary,
    promoted,
    revision_plan,
    route_weight,
    status_to_write,
    writes_now,
)
from modelrollout.engine.strategies.timers import next_timer
from modelrollout.engine.strategies.types import (
    AnalysisVerdict,
    Commands,
    Decision,
    Observations,
    RevisionObservation,
)
from modelrollout.engine.timing import LastDecision
from modelrollout.kube.api import MODELROLLOUTS, NODES, PODS, KubeApi, KubeApiError
from modelrollout.kube.labels import (
    comparison_object_name,
    label_selector,
    revision_object_name,
    selector_labels,
)
from modelrollout.kube.references import KubeReferences
from modelrollout.kube.workloads import RolloutRef
from modelrollout.metrics import OperatorMetrics
from modelrollout.models import (
    InvalidSpecError,
    ModelRolloutSpec,
    ModelRolloutStatus,
    parse_duration,
)
from modelrollout.models.experiment import running_experiment
from modelrollout.models.spec import Notifications, Segment
from modelrollout.models.status import CheckStatus, GpuUsage
from modelrollout.traffic import router_for
from modelrollout.traffic.base import (
    AchievedWeights,
    Backends,
    Capability,
    TrafficRouter,
    routed_condition,
)
from modelrollout.traffic.segment import SegmentSettings, segment_settings
from modelrollout.traffic.session_affinity import SessionAffinitySettings

EventSink = Callable[[str, str, str], None]
# Hands a tick's notifications to the sender (notify/sender.py Notifier.submit); never blocks.
NotificationSink = Callable[[RolloutRef, Notifications | None, list[Notification]], None]
logger = logging.getLogger("modelrollout")


def _now() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    def __init__(
        self,
        api: KubeApi,
        clock: Callable[[], datetime] = _now,
        provider_factory: Callable[[ModelRolloutSpec], MetricProvider] | None = None,
        metrics: OperatorMetrics | None = None,
        check_refresh_seconds: float = 60.0,
        max_queries_in_flight: int = 8,
        evaluation_image: str | None = None,
        shadow_proxy_image: str = DEFAULT_SHADOW_PROXY_IMAGE,
        pushed_alerts: PushedAlerts | None = None,
        notify: NotificationSink | None = None,
        records: RecordFetcher | None = None,
    ) -> None:
        self._notify = notify
        # Fetches torch revisions' /v1/model-record off the tick; None: no server records.
        self._records = records
        self._metrics = metrics or OperatorMetrics()
        # Firing alerts Alertmanager pushed (alert_receiver.py), taken by the next evaluation.
        self._pushed_alerts = pushed_alerts or PushedAlerts()
        self._api = api
        self._clock = clock
        # Shared by every rollout's provider: the bound is on the whole operator.
        self._query_slots = threading.BoundedSemaphore(max_queries_in_flight)
        self._provider_factory = provider_factory
        # Providers last across ticks (their sessions, a remembered health check);
        # a health check stands for the default analysis interval.
        self._providers = ProviderPool(
            lambda namespace: KubeReferences(api, namespace),
            self._query_slots,
            clock=lambda: self._clock().timestamp(),
        )
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._written: dict[str, ModelRolloutStatus] = {}
        self._written_at: dict[str, datetime] = {}
        self._unwritten_checks: dict[str, tuple[CheckStatus, ...]] = {}
        self._decided: dict[str, LastDecision] = {}
        # Per rollout: its status as last parsed, and the resourceVersion it was parsed
        # from. A rollout is ticked several times per version of its object.
        self._parsed_statuses: dict[str, tuple[str, ModelRolloutStatus]] = {}
        # A revision whose Deployment the API server refused (422): refused again without
        # a write until the spec changes, so that the rollout does not retry in a loop.
        self._refused: dict[str, tuple[str, InvalidSpecError]] = {}
        # Per rollout: each Deployment's generation as of this process's last write of its
        # spec, to tell another writer's resize from the watch cache lagging (children.py).
        self._written_generations: dict[str, dict[str, int]] = {}
        self._specs = ParsedSpecs()
        self._check_refresh_seconds = check_refresh_seconds
        self._evaluation_image = evaluation_image
        self._shadow_proxy_image = shadow_proxy_image

    def close(self) -> None:
        if self._records is not None:
            self._records.close()

    @staticmethod
    def has_pending_command(body: dict[str, Any]) -> bool:
        return bool(pending_in_body(body))

    def forget(self, uid: str, namespace: str, name: str) -> None:
        """Drop what is kept about a deleted rollout."""
        with self._locks_guard:
            self._locks.pop(uid, None)
            self._written.pop(uid, None)
            self._written_at.pop(uid, None)
            self._unwritten_checks.pop(uid, None)
            self._decided.pop(uid, None)
            self._parsed_statuses.pop(uid, None)
            self._refused.pop(uid, None)
            self._written_generations.pop(uid, None)
        self._specs.forget(uid)
        self._pushed_alerts.forget(uid)
        self._metrics.forget(namespace, name)

    def _lock(self, uid: str) -> threading.Lock:
        # One tick of a rollout at a time, whoever calls: two interleaved ticks would
        # decide on the same status and could take a step twice. The scheduler never
        # runs two at once (scheduler.py); tick() does not rely on its caller for that.
        with self._locks_guard:
            return self._locks.setdefault(uid, threading.Lock())

    def tick(self, body: dict[str, Any], post_event: EventSink) -> None:
        uid = body["metadata"]["uid"]
        with self._lock(uid):
            # A tick that fails decides nothing: its rollout's timing falls back to its body.
            self._decided.pop(uid, None)
            written = self._written.get(uid)
            stored = self._stored_status(uid, body)
            if written is not None and written != stored:
                # The watch handed us a body from before our last status write:
                # deciding on it could repeat a step. Read the object as it is now.
                fresh = self._api.get(
                    MODELROLLOUTS, body["metadata"]["namespace"], body["metadata"]["name"]
                )
                if fresh is None:
                    return
                body = fresh
                stored = self._stored_status(uid, body)
            with self._metrics.tick_duration.time():
                self._tick(body, stored, post_event)

    def _stored_status(self, uid: str, body: dict[str, Any]) -> ModelRolloutStatus:
        """The body's status, parsed once per resourceVersion.

        Equal to what this process last wrote, it is that very object: the check that
        the body is not older than our write then compares by identity.
        """
        version = body["metadata"].get("resourceVersion")
        parsed = self._parsed_statuses.get(uid)
        if parsed is not None and version is not None and parsed[0] == version:
            return parsed[1]
        stored = ModelRolloutStatus.model_validate(body.get("status") or {})
        written = self._written.get(uid)
        if written is not None and written == stored:
            stored = written
        if version is not None:
            self._parsed_statuses[uid] = (version, stored)
        return stored

    def last_decision(self, uid: str) -> LastDecision | None:
        """What the rollout's last tick decided: the timing of the next tick.

        Fresher than the body the scheduler holds, which may predate that
        tick's status write, and which lacks the check readings kept in memory.
        """
        return self._decided.get(uid)

    def _status_with_unwritten_checks(
        self, uid: str, stored: ModelRolloutStatus
    ) -> ModelRolloutStatus:
        checks = self._unwritten_checks.get(uid)
        if checks is None:
            return stored
        if self._written.get(uid) != stored:
            # Someone wrote since (a replica that led meanwhile): the readings kept are stale.
            self._unwritten_checks.pop(uid, None)
            return stored
        return stored.with_checks(checks)

    def _write_or_keep(
        self,
        rollout: RolloutRef,
        stored: ModelRolloutStatus,
        new_status: ModelRolloutStatus,
        now: datetime,
    ) -> None:
        written_at = self._written_at.get(rollout.uid)
        if not writes_now(stored, new_status, written_at, now, self._check_refresh_seconds):
            self._unwritten_checks[rollout.uid] = new_status.checks
            return
        self._write_status(rollout, new_status, now)

    def _write_status(self, rollout: RolloutRef, status: ModelRolloutStatus, now: datetime) -> None:
        self._written[rollout.uid] = status
        self._written_at[rollout.uid] = now
        self._unwritten_checks.pop(rollout.uid, None)
        self._api.merge_patch(
            MODELROLLOUTS,
            rollout.namespace,
            rollout.name,
            {"status": status.to_patch()},
            subresource="status",
        )

    def _tick(
        self, body: dict[str, Any], stored: ModelRolloutStatus, post_event: EventSink
    ) -> None:
        """`stored`: the body's status, parsed."""
        metadata = body["metadata"]
        rollout = RolloutRef(metadata["namespace"], metadata["name"], metadata["uid"])
        generation = int(metadata.get("generation") or 0)
        status = self._status_with_unwritten_checks(rollout.uid, stored)
        now = self._clock()
        try:
            parsed = self._specs.parse(rollout.uid, generation, body.get("spec") or {})
            spec = parsed.spec
            # Stored before the CRD refused such names: every child name would be invalid.
            revision_object_name(rollout.name, parsed.revision)
            refused = self._refused.get(rollout.uid)
            if refused is not None and refused[0] == parsed.revision:
                raise refused[1]
        except ValueError as error:
            if not isinstance(error, InvalidSpecError):
                error = InvalidSpecError("metadata.name", str(error).split(": ", 1)[-1])
            invalid = status.with_invalid_spec(
                f"{error.field_path}: {error.message}", generation, now
            )
            if invalid != status:
                self._write_status(rollout, invalid, now)
                post_event("Warning", "InvalidSpec", f"{error.field_path}: {error.message}")
            self._decided[rollout.uid] = LastDecision(invalid, now, None)
            return

        deployments = observe_deployments(self._api, rollout)
        spec_revision = serving_revision(
            spec, deployments, (status.stable_revision, status.canary_revision), parsed.revision
        )
        router = router_for(spec.traffic.router, self._api)
        backends = self._backends(rollout, spec, status)
        achieved = router.get_weights(backends) if backends is not None else AchievedWeights(0, 0)
        wanted = status.weights.canary
        achieved_pair = (
            (100 - wanted, wanted) if achieved.settled else (achieved.stable, achieved.canary)
        )

        def observe(revision: str | None) -> RevisionObservation | None:
            if revision is None or revision not in deployments:
                return None
            state = revision_state(deployments[revision])
            unschedulable = (
                unschedulable_message(self._api, rollout, revision)
                if state.ready_replicas < state.desired_replicas
                else None
            )
            return RevisionObservation(
                revision=revision,
                desired_replicas=state.desired_replicas,
                ready_replicas=state.ready_replicas,
                unschedulable_message=unschedulable,
            )

        checks, verdict = self._analyze(spec, status, rollout, now)
        commands = pending_in_body(body)
        observed_commands = Commands.from_pending(commands)
        observations = Observations(
            now=now,
            spec_revision=spec_revision,
            generation=generation,
            stable=observe(status.stable_revision),
            canary=observe(status.canary_revision),
            previous=observe(status.previous_revision),
            achieved_weights=achieved_pair,
            analysis=verdict,
            commands=observed_commands,
            capacity_shortfall=self._capacity_shortfall(rollout, spec, status)
            if may_start_canary(spec_revision, status, observed_commands)
            and status.stable_revision is not None
            else None,
            evaluation=observe_evaluation(self._api, rollout, spec, status),
            router_capabilities=router.capabilities,
            model_records=self._fetched_records(rollout.uid, status),
            experiment=self._measure_experiment(spec, status, rollout, now),
        )
        decision = canary.decide(spec, status.with_checks(checks), observations)
        changed_checks = check_events(status.checks, checks)
        events = [*changed_checks, *decision.events]
        new_status = status_to_write(
            decision.status,
            commands,
            generation,
            _gpu_usage(
                spec, deployments, decision.status.stable_revision, decision.status.canary_revision
            ),
            _scale(rollout, deployments, decision.status.stable_revision),
            routed_condition(achieved) if backends is not None else None,
            now,
        )

        if decision.rollback_now and backends is not None:
            if decision.status.stable_revision != status.stable_revision:
                # A rollback in the rollback window: the revision kept warm is stable again.
                backends = self._backends(rollout, spec, decision.status) or backends
            # Nothing mirrored, no segment, and stable's share straight to stable: the
            # comparison proxy is deleted later in this tick.
            router.set_weights(
                replace(backends, mirror_percent=0, segment=None, comparison_ready=False), 0
            )
        if new_status != status:
            self._write_or_keep(rollout, stored, new_status, now)
        # One Event for the tick, not one per thing it did: one API write (step_event.py).
        tick_event = fold_events(changed_checks, decision.events)
        if tick_event is not None:
            post_event(*tick_event)
        if self._notify is not None:
            self._hand_over_notifications(rollout, spec, status, new_status, checks, decision, now)
        self._metrics.observe_tick(rollout.namespace, rollout.name, status, new_status, events)
        try:
            resized = self._converge(
                rollout, parsed, spec_revision, status, new_status, deployments, now
            )
        except InvalidSpecError as error:
            self._refused[rollout.uid] = (spec_revision, error)
            message = f"{error.field_path}: {error.message}"
            invalid = new_status.with_invalid_spec(message, generation, now)
            self._write_status(rollout, invalid, now)
            post_event("Warning", "InvalidSpec", message)
            self._decided[rollout.uid] = LastDecision(invalid, now, None)
            return
        for foreign in resized:
            post_event(
                "Warning",
                "ScaledOutsideRollout",
                f"Deployment {foreign.name} was resized to {foreign.replicas} outside the rollout "
                f"(an autoscaler or kubectl scale aimed at the Deployment); the operator sizes "
                f"each revision from spec.runtime.replicas and set it back to {foreign.planned}: "
                f"scale the ModelRollout instead (its scale subresource)",
            )
        self._want_records(rollout, spec, spec_revision, new_status, observations)
        ended = ended_evaluation(spec, status, new_status)
        if ended is not None:
            end_evaluation(
                self._api,
                rollout,
                spec,
                new_status,
                ended,
                router.capabilities,
                load_services(rollout, spec, new_status),
            )
        converge_evaluation(
            self._api, rollout, spec, new_status, deployments, self._evaluation_image
        )
        converge_load(
            self._api,
            rollout,
            spec,
            new_status,
            deployments,
            router.capabilities,
            self._evaluation_image,
        )
        # Only a tick that applied all it decided: a failed one waits its period.
        self._decided[rollout.uid] = LastDecision(
            new_status, now, next_timer(spec, new_status, now)
        )

    def _fetched_records(self, uid: str, status: ModelRolloutStatus) -> dict[str, dict[str, Any]]:
        if self._records is None:
            return {}
        running = (status.stable_revision, status.canary_revision, status.previous_revision)
        return self._records.records(uid, [r for r in running if r is not None])

    def _want_records(
        self,
        rollout: RolloutRef,
        spec: ModelRolloutSpec,
        spec_revision: str,
        status: ModelRolloutStatus,
        observations: Observations,
    ) -> None:
        """Ask for the server record of each torch revision with a Ready pod that lacks one."""
        if self._records is None:
            return
        engines = {e.revision: e.record.engine for e in status.history if e.record is not None}
        engines[spec_revision] = spec.runtime.engine
        for seen in (observations.stable, observations.canary):
            if (
                seen is not None
                and seen.ready_replicas > 0
                and engines.get(seen.revision) == "torch"
                and wants_report(status, seen.revision)
            ):
                self._records.wanted(rollout, seen.revision)

    def _hand_over_notifications(
        self,
        rollout: RolloutRef,
        spec: ModelRolloutSpec,
        before: ModelRolloutStatus,
        after: ModelRolloutStatus,
        checks: tuple[CheckStatus, ...],
        decision: Decision,
        now: datetime,
    ) -> None:
        """Right after the status write that holds the decision: a later failure of the tick
        does not lose them, and the next tick will not decide them again."""
        assert self._notify is not None
        try:
            found = derive_notifications(rollout, spec, before, after, checks, decision.events, now)
            if found:
                self._notify(rollout, spec.notifications, found)
        except Exception:  # notifications are never a reason for a rollout not to move
            logger.exception("notifications of %s/%s lost", rollout.namespace, rollout.name)

    def _capacity_shortfall(
        self, rollout: RolloutRef, spec: ModelRolloutSpec, status: ModelRolloutStatus
    ) -> str | None:
        """Only asked when a new revision may start.

        The GPUs held per node come from the pod cache's running tally, kept as
        pods change: summing every pod of the cluster at each start made a
        canary's start cost O(pods), and N rollouts starting O(N squared).
        """
        if gpus_per_pod(spec) == 0:
            return None
        try:
            nodes = self._api.list_cluster(NODES)
            used = self._api.tally(PODS)
            if used is None:
                used = gpus_by_node(
                    self._api.list_cluster(
                        PODS, field_selector="status.phase!=Succeeded,status.phase!=Failed"
                    )
                )
        except KubeApiError as error:
            if error.status != 403:
                raise
            # Installed without capacity planning (chart: capacityPlanning.enabled=false):
            # the scheduler still reports pods it cannot place (condition Unschedulable).
            logger.warning("GPU capacity planning skipped, no permission: %s", error.message)
            return None
        stable = gpus_by_node(
            self._api.list_read_only(
                PODS,
                rollout.namespace,
                label_selector(selector_labels(rollout.name, status.stable_revision)),
            )
        )
        shortfall = assess(spec, node_gpus(spec, nodes, used, stable))
        return None if shortfall is None else shortfall.message

    def _backends(
        self, rollout: RolloutRef, spec: ModelRolloutSpec, status: ModelRolloutStatus
    ) -> Backends | None:
        if status.stable_revision is None:
            return None
        comparing = comparison_wanted(spec, status)
        return Backends(
            rollout=rollout,
            stable=status.stable_revision,
            canary=status.canary_revision,
            port=spec.runtime.port,
            replicas=spec.runtime.replicas,
            settings=spec.traffic.router_settings(),
            canary_weight=status.weights.canary,
            blue_green=is_blue_green(spec),
            mirror_percent=status.weights.mirror,
            kept=status.previous_revision,
            comparison=comparison_object_name(rollout.name) if comparing else None,
            comparison_ready=comparing and proxy_ready(self._api, rollout),
            session_affinity=(
                None
                if (affinity := spec.traffic.session_affinity) is None
                else SessionAffinitySettings(
                    affinity.header, affinity.buckets, affinity.pin_revision
                )
            ),
            segment=None if (running := running_experiment(spec, status)) is None
            else _segment(running[1].segment),
        )  # fmt: skip

    def _measure_experiment(
        self, spec: ModelRolloutSpec, status: ModelRolloutStatus, rollout: RolloutRef, now: datetime
    ) -> ExperimentFigures | None:
        """Both groups of the running experiment, once its time is up and a measurement is due."""
        running = running_experiment(spec, status)
        started = status.step_started_at
        if running is None or started is None or status.phase != "Progressing":
            return None
        index, experiment = running
        if (now - started).total_seconds() < parse_duration(experiment.duration):
            return None
        report = status.experiment
        if (
            report is not None
            and (report.revision, report.step) == (status.canary_revision, index)
            and (now - report.measured_at).total_seconds() < parse_duration(spec.analysis.interval)
        ):
            return None
        provider = (
            self._providers.provider(spec.analysis, rollout.namespace)
            if self._provider_factory is None
            else self._provider_factory(spec)
        )
        return measure(
            spec,
            provider,
            analysis_context(rollout.namespace, rollout.name, spec, status),
            status.canary_revision or "",
            index,
            int((now - started).total_seconds()),
        )

    def _analyze(
        self, spec: ModelRolloutSpec, status: ModelRolloutStatus, rollout: RolloutRef, now: datetime
    ) -> tuple[tuple[CheckStatus, ...], AnalysisVerdict]:
        context = analysis_context(rollout.namespace, rollout.name, spec, status)
        provider = (
            self._providers.provider(spec.analysis, rollout.namespace)
            if self._provider_factory is None
            else self._provider_factory(spec)
        )
        pushed = self._pushed_alerts.take(rollout.uid)
        return evaluate(spec, status, provider, context, now, pushed)

    def _converge(
        self,
        rollout: RolloutRef,
        parsed: ParsedSpec,
        spec_revision: str,
        before: ModelRolloutStatus,
        status: ModelRolloutStatus,
        deployments: dict[str, dict[str, Any]],
        now: datetime,
    ) -> list[ForeignScale]:
        """Apply what the tick decided; the Deployments someone else resized meanwhile."""
        spec = parsed.spec
        router = router_for(spec.traffic.router, self._api)
        backends = self._backends(rollout, spec, status)
        # A promotion with exact weights may move traffic off the old revision in the tick
        # that deletes its pods: the route goes to the promoted revision alone first.
        route_first = promoted(before, status) and Capability.EXACT_WEIGHTS in router.capabilities
        if route_first and backends is not None:
            self._route(router, backends, spec, status)
        unmarked = revision_to_mark(spec, deployments, parsed.revision)
        if unmarked is not None:
            mark_spec_revision(self._api, rollout, unmarked, parsed.revision)
        plan = revision_plan(spec, status, now)
        resized = converge_deployments(
            self._api,
            rollout,
            plan,
            deployments,
            # Built only for a Deployment to create: most ticks create none.
            lambda revision: (
                PodTemplate(build_pod_spec(spec), build_pod_metadata(spec))
                if revision == spec_revision
                else None
            ),
            int(parse_duration(spec.progress_deadline)),
            self._written_generations.setdefault(rollout.uid, {}),
        )
        converge_disruption_budgets(
            self._api, rollout, plan if spec.disruption_budget.enabled else []
        )
        if backends is not None and not route_first:
            self._route(router, backends, spec, status)
        # After routing: a proxy is deleted only once no route sends it traffic.
        converge_comparison(
            self._api, rollout, spec, status, router.capabilities, self._shadow_proxy_image
        )
        return resized

    @staticmethod
    def _route(
        router: TrafficRouter,
        backends: Backends,
        spec: ModelRolloutSpec,
        status: ModelRolloutStatus,
    ) -> None:
        router.reconcile(backends)
        weight = route_weight(status)
        if weight is None and has_experiment(spec):
            # A warming canary at weight 0 gets its segment's rule when an experiment step
            # starts, and loses it when the step ends, whatever the weight.
            weight = status.weights.canary
        if weight is not None:
            router.set_weights(backends, weight)


def _segment(segment: Segment) -> SegmentSettings:
    return segment_settings(
        [(header.name, header.type, header.value) for header in segment.headers],
        None if segment.cookie is None else (segment.cookie.name, segment.cookie.value),
        None
        if (hashed := segment.hash_range) is None
        else (hashed.header, hashed.buckets, hashed.from_, hashed.to),
    )


def has_experiment(spec: ModelRolloutSpec) -> bool:
    canary = spec.strategy.canary
    return canary is not None and any(step.experiment is not None for step in canary.steps)


def _scale(
    rollout: RolloutRef, deployments: dict[str, dict[str, Any]], stable: str | None
) -> tuple[int | None, str | None]:
    """The scale subresource's status: the stable revision's pods and their selector."""
    if stable is None:
        return None, None
    deployment = deployments.get(stable)
    pods = int((deployment or {}).get("status", {}).get("replicas") or 0)
    return pods, label_selector(selector_labels(rollout.name, stable))


def _gpu_usage(
    spec: ModelRolloutSpec,
    deployments: dict[str, dict[str, Any]],
    stable: str | None,
    canary: str | None,
) -> GpuUsage | None:
    """GPUs requested by each revision's existing pods; None for a rollout without GPUs."""
    per_pod = gpus_per_pod(spec)

    def requested(revision: str | None) -> int:
        deployment = deployments.get(revision) if revision is not None else None
        if deployment is None:
            return 0
        pods = int(deployment.get("status", {}).get("replicas") or 0)
        return pods * pod_gpus(deployment["spec"]["template"])

    usage = GpuUsage(per_pod=per_pod, stable=requested(stable), canary=requested(canary))
    return None if usage == GpuUsage() else usage
