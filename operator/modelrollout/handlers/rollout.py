"""The ModelRollout handlers: a scheduler ticks each rollout when due; a change at once.

kopf's per-object timers put a finalizer on every object, which makes
rollouts undeletable while the operator is down or uninstalled. Instead, the
'track' event handler hands the latest body of each rollout (from the watch
stream: no extra API reads) to the scheduler, which ticks a rollout when a
timer of its own is due (engine/timing.py: a step's end, its next check...),
at once when a child it owns changes (seen by the cache's watches) or it
moved, and before anything else when its spec changed or a command came.
Handler ids never change: kopf keys stored state by them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client, config
from prometheus_client import start_http_server

from modelrollout.engine.reconciler import Reconciler
from modelrollout.engine.timing import progress_marker, tick_period
from modelrollout.kube.api import MODELROLLOUTS, KubeApi, KubeApiError
from modelrollout.kube.cache import CachedKubeApi
from modelrollout.kube.events import EVENTS, build_event
from modelrollout.kube.labels import ANNOTATION_PREFIX, FINALIZER, GROUP, PLURAL, VERSION
from modelrollout.leader import LeaseElector, LeaseTiming
from modelrollout.metrics import OperatorMetrics
from modelrollout.scheduler import TickScheduler

TICK_INTERVAL_SECONDS = float(os.environ.get("MODELROLLOUT_TICK_INTERVAL", "2"))
# A settled rollout (Succeeded, nothing left to scale down) is ticked this often; a
# change to it or its children wakes it sooner.
RESYNC_INTERVAL_SECONDS = float(os.environ.get("MODELROLLOUT_RESYNC_INTERVAL", "30"))
# A canary is ticked when its next timer is due (engine/timing.py), and at least
# this often, for timers not tracked there.
CANARY_RESYNC_SECONDS = 5 * TICK_INTERVAL_SECONDS
# Ticks mostly wait on the API server; Prometheus queries have their own, lower
# bound (analysis/prometheus.py).
CONCURRENT_TICKS = int(os.environ.get("MODELROLLOUT_CONCURRENT_TICKS", "32"))
# A check's latest reading is written to status at least this often; a change of
# its state or any other status change writes it at once (engine/reconciler.py).
CHECK_STATUS_REFRESH_SECONDS = float(os.environ.get("MODELROLLOUT_CHECK_STATUS_REFRESH", "60"))
# The operator's /metrics; "off" disables it (tests run several operators at once).
METRICS_PORT = os.environ.get("MODELROLLOUT_METRICS_PORT", "8080")
# "on" with more than one replica: only the holder of the Lease acts (see leader.py).
LEADER_ELECTION = os.environ.get("MODELROLLOUT_LEADER_ELECTION", "off") == "on"

logger = logging.getLogger("modelrollout")
_api: CachedKubeApi | None = None
_reconciler: Reconciler | None = None
_scheduler: TickScheduler | None = None
_elector: LeaseElector | None = None
_background: list[asyncio.Task[None]] = []


def _api_client() -> client.ApiClient:
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    # One connection per tick thread and watch: the default pool (5 per CPU) made
    # ticks open and discard TLS connections at every burst.
    configuration.connection_pool_maxsize = CONCURRENT_TICKS + 16
    return client.ApiClient(configuration)


def _leading() -> bool:
    return _elector is None or _elector.is_leader


def _tick(body: dict[str, Any]) -> None:
    assert _reconciler is not None and _api is not None, "startup configures the reconciler"
    if not _leading():
        return
    api = _api

    def post_event(event_type: str, reason: str, message: str) -> None:
        try:
            api.create(
                EVENTS,
                body["metadata"]["namespace"],
                build_event(body, event_type, reason, message),
            )
        except KubeApiError as error:  # an Event lost is no reason to stop a rollout
            logger.warning("could not post event %s: %s", reason, error)

    _reconciler.tick(body, post_event)


def _tick_period(body: dict[str, Any]) -> float:
    assert _reconciler is not None, "startup configures the reconciler"
    # A replica that does not lead decides nothing: what it last decided is stale.
    decided = _reconciler.last_decision(body["metadata"]["uid"]) if _leading() else None
    return tick_period(
        body,
        datetime.now(UTC),
        TICK_INTERVAL_SECONDS,
        RESYNC_INTERVAL_SECONDS,
        CANARY_RESYNC_SECONDS,
        decided,
    )


def _lease_elector(api: KubeApi, metrics: OperatorMetrics) -> LeaseElector:
    namespace = os.environ.get("POD_NAMESPACE")
    if not namespace:
        raise kopf.PermanentError("MODELROLLOUT_LEADER_ELECTION=on needs POD_NAMESPACE")
    elector = LeaseElector(
        api,
        namespace,
        os.environ.get("MODELROLLOUT_LEASE_NAME", "modelrollout-operator"),
        os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
        LeaseTiming(
            lease_duration=float(os.environ.get("MODELROLLOUT_LEASE_DURATION", "15")),
            renew_deadline=float(os.environ.get("MODELROLLOUT_LEASE_RENEW_DEADLINE", "10")),
            retry_period=float(os.environ.get("MODELROLLOUT_LEASE_RETRY_PERIOD", "2")),
        ),
    )
    elector.on_change = lambda leading: metrics.leader.set(1 if leading else 0)
    return elector


@kopf.on.startup(id="configure")
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _api, _reconciler, _elector, _scheduler
    # Our own names for everything kopf stores on objects.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
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
    _api = CachedKubeApi(_api_client())
    if not await asyncio.to_thread(_api.serves, MODELROLLOUTS):
        raise kopf.PermanentError(
            f"the API server does not serve {PLURAL}.{GROUP}/{VERSION}: install the CRD "
            "(crds/ or the Helm chart with crds.install=true), then restart the operator"
        )
    metrics = OperatorMetrics()
    if METRICS_PORT != "off":
        start_http_server(int(METRICS_PORT), registry=metrics.registry)
    _reconciler = Reconciler(
        _api, metrics=metrics, check_refresh_seconds=CHECK_STATUS_REFRESH_SECONDS
    )
    if LEADER_ELECTION:
        _elector = _lease_elector(_api, metrics)
        _background.append(asyncio.create_task(_elector.run(), name="leader-election"))
    else:
        metrics.leader.set(1)
    _scheduler = TickScheduler(_tick, CONCURRENT_TICKS, _tick_period)
    _api.set_change_sink(_scheduler.wake)
    _background.append(asyncio.create_task(_scheduler.run(), name="tick"))


@kopf.on.cleanup(id="stop-ticking")
async def stop_ticking(**_: Any) -> None:
    for task in _background:
        task.cancel()
    if _api is not None:
        _api.stop()
    if _elector is not None:
        await asyncio.to_thread(_elector.release)


def _needs_reaction(body: dict[str, Any]) -> bool:
    """A spec change or a command is acted on now, not at the next tick."""
    status = body.get("status") or {}
    if body.get("metadata", {}).get("generation") != status.get("observedGeneration"):
        return True
    return Reconciler.has_pending_command(body)


@kopf.on.event(GROUP, VERSION, PLURAL, id="track")
async def track(body: kopf.Body, type: str | None, **_: Any) -> None:
    assert _scheduler is not None and _reconciler is not None, "startup runs first"
    uid = body["metadata"]["uid"]
    if type == "DELETED" or body["metadata"].get("deletionTimestamp"):
        _scheduler.forget(uid)
        _reconciler.forget(uid, body["metadata"]["namespace"], body["metadata"]["name"])
        return
    latest = dict(body)
    previous = _scheduler.update(latest, urgent=_needs_reaction(latest))
    # The rollout moved (our own status write, now seen): its next step may act at once.
    if previous is not None and progress_marker(previous) != progress_marker(latest):
        _scheduler.wake(latest["metadata"]["namespace"], latest["metadata"]["name"])
