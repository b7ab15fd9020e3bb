"""The ModelRollout handlers: one timer moves every rollout; a change reacts at once.

Handler ids never change: kopf keys stored state by them.
"""

from __future__ import annotations

import os
from typing import Any

import kopf
from kubernetes import client, config

from modelrollout.engine.reconciler import Reconciler
from modelrollout.kube.api import KubeApi
from modelrollout.kube.labels import ANNOTATION_PREFIX, FINALIZER, GROUP, PLURAL, VERSION

TICK_INTERVAL_SECONDS = float(os.environ.get("MODELROLLOUT_TICK_INTERVAL", "2"))

_reconciler: Reconciler | None = None


def _api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


@kopf.on.startup(id="configure")
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _reconciler
    # Our own names for everything kopf stores on objects.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.reporting_component = "modelrollout"
    settings.posting.event_name_prefix = "modelrollout-"
    settings.execution.max_workers = int(os.environ.get("MODELROLLOUT_WORKERS", "8"))
    _reconciler = Reconciler(KubeApi(_api_client()))


def _tick(body: kopf.Body) -> None:
    assert _reconciler is not None, "the startup handler configures the reconciler"

    def post_event(event_type: str, reason: str, message: str) -> None:
        kopf.event(body, type=event_type, reason=reason, message=message)

    _reconciler.tick(dict(body), post_event)


@kopf.timer(GROUP, VERSION, PLURAL, id="tick", interval=TICK_INTERVAL_SECONDS)
def tick(body: kopf.Body, **_: Any) -> None:
    _tick(body)


def _needs_reaction(body: kopf.Body, **_: Any) -> bool:
    """A spec change or a command is acted on now, not at the next timer tick."""
    status = body.get("status") or {}
    if body.get("metadata", {}).get("generation") != status.get("observedGeneration"):
        return True
    return Reconciler.has_pending_command(dict(body))


@kopf.on.event(GROUP, VERSION, PLURAL, id="react", when=_needs_reaction)
def react(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type == "DELETED":
        return
    _tick(body)
