"""The ModelRollout handlers: a scheduler ticks each rollout when due; a change at once.

kopf's per-object timers put a finalizer on every object, which makes
rollouts undeletable while the operator is down or uninstalled. Instead, the
'track' event handler hands the latest body of each rollout (from the watch
stream: no extra API reads) to the scheduler, which ticks a rollout when a
timer of its own is due (engine/timing.py: a step's end, its next check...),
at once when a child it owns changes (seen by the cache's watches) or it
moved, and before anything else when its spec changed or a command came.
Handler ids never change: kopf keys stored state by them.

The start-up handler reads the settings from the environment once
(settings.py) and keeps what the handlers share in kopf's memo: no module
state, so importing this module reads and starts nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import kopf
from aiohttp import web
from kubernetes import client, config
from prometheus_client import start_http_server

from modelrollout.alert_receiver import AlertReceiver, RolloutView
from modelrollout.analysis.pushed import PushedAlerts
from modelrollout.engine.capacity import gpu_tally
from modelrollout.engine.reconciler import Reconciler
from modelrollout.engine.record_fetcher import RecordFetcher
from modelrollout.engine.timing import progress_marker, tick_period
from modelrollout.kube.api import MODELROLLOUTS, PODS, KubeApi, KubeApiError
from modelrollout.kube.cache import CachedKubeApi
from modelrollout.kube.events import EventRecorder
from modelrollout.kube.labels import ANNOTATION_PREFIX, FINALIZER, GROUP, KIND, PLURAL, VERSION
from modelrollout.kube.workloads import RolloutRef
from modelrollout.leader import LeaseElector
from modelrollout.metrics import OperatorMetrics
from modelrollout.notify.config import SinkResolver
from modelrollout.notify.sender import Notifier, Warner
from modelrollout.scheduler import TickScheduler
from modelrollout.settings import OperatorSettings, SettingsError

logger = logging.getLogger("modelrollout")


@dataclass
class Operator:
    """What the handlers share: built by the start-up handler, kept in kopf's memo."""

    api: CachedKubeApi
    reconciler: Reconciler
    scheduler: TickScheduler
    elector: LeaseElector | None
    background: list[asyncio.Task[None]] = field(default_factory=list)
    alert_receiver: web.AppRunner | None = None


def _notification_warner(events: EventRecorder) -> Warner:
    def warn(rollout: RolloutRef, message: str) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"namespace": rollout.namespace, "name": rollout.name, "uid": rollout.uid},
        }
        events.post(body, "Warning", "NotificationFailed", message)

    return warn


def _operator(memo: kopf.Memo) -> Operator:
    operator = memo.get("operator")
    assert isinstance(operator, Operator), "the start-up handler configures the operator"
    return operator


class SpecDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base, built without copying the status first.

    kopf builds a diff base for every event: a deep copy of the whole body, from
    which it then drops the status. A rollout's status (its history, checks and
    gates) is most of the body, and its copy was 2% of the operator's CPU at a
    hundred rollouts (py-spy). The essence is the same: the status never was in it
    (no handler here asks for a status field as an extra field, which this would drop).
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        without_status = {key: value for key, value in body.items() if key != "status"}
        return super().build(
            body=kopf.Body(cast(kopf.RawBody, without_status)), extra_fields=extra_fields
        )


def _api_client(settings: OperatorSettings) -> client.ApiClient:
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    # One connection per tick thread and watch: the default pool (5 per CPU) made
    # ticks open and discard TLS connections at every burst.
    configuration.connection_pool_maxsize = settings.concurrent_ticks + 16
    return client.ApiClient(configuration)


def _tick(
    events: EventRecorder,
    reconciler: Reconciler,
    elector: LeaseElector | None,
    body: dict[str, Any],
) -> None:
    if elector is not None and not elector.is_leader:
        return

    def post_event(event_type: str, reason: str, message: str) -> None:
        try:
            events.post(body, event_type, reason, message)
        except KubeApiError as error:  # an Event lost is no reason to stop a rollout
            logger.warning("could not post event %s: %s", reason, error)

    reconciler.tick(body, post_event)


def _tick_period(
    reconciler: Reconciler,
    settings: OperatorSettings,
    elector: LeaseElector | None,
    body: dict[str, Any],
) -> float:
    # A replica that does not lead decides nothing: what it last decided is stale.
    leading = elector is None or elector.is_leader
    decided = reconciler.last_decision(body["metadata"]["uid"]) if leading else None
    return tick_period(
        body,
        datetime.now(UTC),
        settings.tick_interval_seconds,
        settings.resync_interval_seconds,
        settings.canary_resync_seconds,
        decided,
    )


def _lease_elector(
    api: KubeApi, settings: OperatorSettings, metrics: OperatorMetrics
) -> LeaseElector:
    assert settings.pod_namespace is not None, "settings require it with leader election"
    elector = LeaseElector(
        api,
        settings.pod_namespace,
        settings.lease_name,
        settings.lease_holder,
        settings.lease_timing(),
    )
    elector.on_change = lambda leading: metrics.leader.set(1 if leading else 0)
    return elector


def _rollout_views(scheduler: TickScheduler, reconciler: Reconciler) -> list[RolloutView]:
    return [
        RolloutView(body, None if decided is None else decided.status)
        for body in scheduler.bodies()
        for decided in [reconciler.last_decision(body["metadata"]["uid"])]
    ]


async def _start_alert_receiver(
    settings: OperatorSettings,
    scheduler: TickScheduler,
    reconciler: Reconciler,
    elector: LeaseElector | None,
    pushed: PushedAlerts,
) -> web.AppRunner:
    assert settings.alert_receiver_port is not None
    assert settings.alert_receiver_token_file is not None, "settings require it"
    receiver = AlertReceiver(
        settings.alert_receiver_token_file,
        lambda: elector is None or elector.is_leader,
        partial(_rollout_views, scheduler, reconciler),
        pushed,
        scheduler.wake,
    )
    runner = web.AppRunner(receiver.application(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, port=settings.alert_receiver_port).start()
    return runner


@kopf.on.startup(id="configure")
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    try:
        operator_settings = OperatorSettings.from_env(os.environ)
    except SettingsError as error:
        raise kopf.PermanentError(f"bad operator settings: {error}") from None
    # Our own names for everything kopf stores on objects.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = SpecDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # kopf logs every event handled at INFO: at hundreds of rollouts that is most of
    # the log and a good part of the CPU. Failures are still logged.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.posting.reporting_component = "modelrollout"
    settings.posting.event_name_prefix = "modelrollout-"
    # No cluster-wide listing of CRDs and namespaces: the chart's namespaced mode
    # grants Roles only. kopf then finds resources once, at startup, so a missing
    # CRD must stop the operator (and get it restarted) instead of idling silently.
    settings.scanning.disabled = True
    api = CachedKubeApi(_api_client(operator_settings), tallies={PODS: gpu_tally})
    if not await asyncio.to_thread(api.serves, MODELROLLOUTS):
        raise kopf.PermanentError(
            f"the API server does not serve {PLURAL}.{GROUP}/{VERSION}: install the CRD "
            "(crds/ or the Helm chart with crds.install=true), then restart the operator"
        )
    metrics = OperatorMetrics()
    if operator_settings.metrics_port is not None:
        start_http_server(operator_settings.metrics_port, registry=metrics.registry)
    pushed = PushedAlerts()
    events = EventRecorder(api)
    # Notifications go out from their own task: a tick hands them over and goes on.
    notifier = Notifier(
        SinkResolver(api),
        _notification_warner(events),
        metrics,
        operator_settings.notification_policy(),
        operator_settings.notification_queue_size,
        asyncio.get_running_loop(),
    )
    # Torch revisions' /v1/model-record, fetched off the tick (engine/record_fetcher.py).
    records = RecordFetcher(api)
    reconciler = Reconciler(
        api,
        metrics=metrics,
        check_refresh_seconds=operator_settings.check_status_refresh_seconds,
        max_queries_in_flight=operator_settings.max_queries_in_flight,
        evaluation_image=operator_settings.evaluation_image,
        shadow_proxy_image=operator_settings.shadow_proxy_image,
        pushed_alerts=pushed,
        notify=notifier.submit,
        records=records,
    )
    elector = None
    if operator_settings.leader_election:
        elector = _lease_elector(api, operator_settings, metrics)
    else:
        metrics.leader.set(1)
    scheduler = TickScheduler(
        partial(_tick, events, reconciler, elector),
        operator_settings.concurrent_ticks,
        partial(_tick_period, reconciler, operator_settings, elector),
    )
    api.set_change_sink(scheduler.wake)
    records.wake = scheduler.wake
    operator = Operator(api, reconciler, scheduler, elector)
    if elector is not None:
        operator.background.append(asyncio.create_task(elector.run(), name="leader-election"))
    operator.background.append(asyncio.create_task(scheduler.run(), name="tick"))
    operator.background.append(asyncio.create_task(notifier.run(), name="notifications"))
    if operator_settings.alert_receiver_port is not None:
        operator.alert_receiver = await _start_alert_receiver(
            operator_settings, scheduler, reconciler, elector, pushed
        )
    memo["operator"] = operator


@kopf.on.cleanup(id="stop-ticking")
async def stop_ticking(memo: kopf.Memo, **_: Any) -> None:
    operator = memo.get("operator")
    if not isinstance(operator, Operator):
        return  # the start-up handler failed before it configured anything
    if operator.alert_receiver is not None:
        await operator.alert_receiver.cleanup()
    for task in operator.background:
        task.cancel()
    operator.api.stop()
    operator.reconciler.close()
    if operator.elector is not None:
        await asyncio.to_thread(operator.elector.release)


def _needs_reaction(body: dict[str, Any]) -> bool:
    """A spec change or a command is acted on now, not at the next tick."""
    status = body.get("status") or {}
    if body.get("metadata", {}).get("generation") != status.get("observedGeneration"):
        return True
    return Reconciler.has_pending_command(body)


@kopf.on.event(GROUP, VERSION, PLURAL, id="track")
async def track(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    operator = _operator(memo)
    uid = body["metadata"]["uid"]
    if type == "DELETED" or body["metadata"].get("deletionTimestamp"):
        operator.scheduler.forget(uid)
        operator.reconciler.forget(uid, body["metadata"]["namespace"], body["metadata"]["name"])
        return
    latest = dict(body)
    previous = operator.scheduler.update(latest, urgent=_needs_reaction(latest))
    # The rollout moved (our own status write, now seen): its next step may act at once.
    if previous is not None and progress_marker(previous) != progress_marker(latest):
        operator.scheduler.wake(latest["metadata"]["namespace"], latest["metadata"]["name"])
