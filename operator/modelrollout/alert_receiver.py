"""Alertmanager's webhook receiver: a pushed firing alert makes the rollout it concerns act now.

The poll of `ALERTS` waits up to one `analysis.interval`; a push from the
team's Alertmanager does not. A firing alert that matches a rollout's
`analysis.alerts` entry (analysis/pushed.py: the poll's matching) is recorded
for that rollout and wakes its tick, whose evaluation counts it as firing:
the same pure decision as a polled breach, weight 0 first. Resolved alerts,
alerts no entry names and alerts for another revision change nothing. The
poll stays: it is the fallback when a push is lost.

Answers, in the order they are checked:
- 401: no bearer token, or not the one in the token file (read at each
  request, so a rotated Secret is seen; compared in constant time);
- 413: a body over `max_bytes`;
- 503: this replica is a standby (only the Lease holder acts): Alertmanager
  retries a 5xx, and the Service reaches the leader;
- 400: not JSON, or not a version-4 webhook payload;
- 200: accepted, with what it matched; a replay (an alert with the same
  fingerprint and startsAt already acted on) is acknowledged and not acted
  on again: Alertmanager sends a group's alerts again at every
  `group_interval` change and `repeat_interval`, and counts anything but a
  2xx as a failure to retry.
aiohttp is the HTTP server kopf already runs on.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from modelrollout.analysis.pushed import PayloadError, PushedAlerts, WebhookAlert, parse_payload
from modelrollout.analysis.pushed import matching_alerts as entries_matching
from modelrollout.analysis.runner import analysis_active, analysis_context
from modelrollout.models import parse_spec
from modelrollout.models.status import ModelRolloutStatus

logger = logging.getLogger("modelrollout.alerts")

Body = dict[str, Any]
# Alertmanager's payloads are a group's alerts: kilobytes. A bound on what is read.
DEFAULT_MAX_BYTES = 1 << 20
PATH = "/alerts"


@dataclass(frozen=True)
class RolloutView:
    """A rollout as the receiver matches against it: its body and its last tick's status.

    The last tick's status is fresher than the watch's body (whose canary may be
    a moment old); without one (a replica that just started) the body's is read,
    only for a rollout whose alerts the push names.
    """

    body: Body
    decided: ModelRolloutStatus | None = None

    @property
    def status(self) -> ModelRolloutStatus:
        if self.decided is not None:
            return self.decided
        return ModelRolloutStatus.model_validate(self.body.get("status") or {})


@dataclass(frozen=True)
class Outcome:
    matched: list[str]
    replayed: int
    ignored: int


def _alertnames(body: Body) -> set[str]:
    """The alertnames of the raw spec's analysis.alerts: spares parsing every rollout's spec."""
    alerts = ((body.get("spec") or {}).get("analysis") or {}).get("alerts") or []
    return {str(entry.get("alertname")) for entry in alerts if isinstance(entry, dict)}


def route_alerts(
    alerts: Sequence[WebhookAlert],
    rollouts: Iterable[RolloutView],
    pushed: PushedAlerts,
    wake: Callable[[str, str], None],
) -> Outcome:
    """Record each new firing alert for the live rollouts it matches, and wake them.

    Resolved alerts and alerts that match no live rollout are ignored; one
    acted on before is a replay.
    """
    firing = [alert for alert in alerts if alert.status == "firing"]
    replayed = [alert for alert in firing if pushed.acted_on(alert.replay_key)]
    fresh = [alert for alert in firing if not pushed.acted_on(alert.replay_key)]
    names = {alert.labels.get("alertname", "") for alert in fresh}
    matched: list[str] = []
    acted: set[tuple[str, str]] = set()
    for rollout in rollouts:
        if not names & _alertnames(rollout.body):
            continue
        metadata = rollout.body["metadata"]
        try:
            spec = parse_spec(rollout.body.get("spec") or {})
        except ValueError:
            continue  # the tick reports an invalid spec; there is nothing to analyse
        status = rollout.status
        if not analysis_active(spec, status):
            continue
        context = analysis_context(metadata["namespace"], metadata["name"], spec, status)
        hits = [alert for alert in fresh if entries_matching(spec, [alert.labels], context)]
        for alert in hits:
            pushed.record(metadata["uid"], alert.labels, alert.replay_key)
            acted.add(alert.replay_key)
        if hits:
            matched.append(f"{metadata['namespace']}/{metadata['name']}")
            wake(metadata["namespace"], metadata["name"])
    acted_alerts = sum(1 for alert in fresh if alert.replay_key in acted)
    return Outcome(matched, len(replayed), len(alerts) - len(replayed) - acted_alerts)


def _bearer_token(header: str | None) -> bytes | None:
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" and token.strip() else None


class AlertReceiver:
    def __init__(
        self,
        token_file: Path,
        is_leader: Callable[[], bool],
        rollouts: Callable[[], Iterable[RolloutView]],
        pushed: PushedAlerts,
        wake: Callable[[str, str], None],
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._token_file = token_file
        self._is_leader = is_leader
        self._rollouts = rollouts
        self._pushed = pushed
        self._wake = wake
        self._max_bytes = max_bytes

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self._max_bytes)
        app.router.add_post(PATH, self.handle)
        return app

    def _authorized(self, request: web.Request) -> bool:
        offered = _bearer_token(request.headers.get("Authorization"))
        try:
            expected = self._token_file.read_bytes().strip()
        except OSError as error:
            logger.error("alert receiver: cannot read its token file: %s", error)
            return False
        return offered is not None and bool(expected) and hmac.compare_digest(offered, expected)

    async def handle(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response(
                {"error": "a bearer token is required (Authorization: Bearer <token>)"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if request.content_length is not None and request.content_length > self._max_bytes:
            return _too_large(self._max_bytes)
        if not self._is_leader():
            standby = web.json_response(
                {
                    "error": "this operator replica is a standby: only the leader of the "
                    "Lease acts on alerts; Alertmanager retries, and the Service reaches "
                    "the leader"
                },
                status=503,
            )
            # Alertmanager keeps its connection alive: closed, its retry is a new
            # connection, which the Service may send to another replica.
            standby.force_close()
            return standby
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(self._max_bytes)
        try:
            payload = parse_payload(body)
        except PayloadError as error:
            return web.json_response({"error": str(error)}, status=400)
        outcome = route_alerts(payload.alerts, self._rollouts(), self._pushed, self._wake)
        if outcome.matched:
            logger.info("pushed alerts wake %s", ", ".join(outcome.matched))
        return web.json_response(
            {"matched": outcome.matched, "replayed": outcome.replayed, "ignored": outcome.ignored}
        )


def _too_large(max_bytes: int) -> web.Response:
    return web.json_response({"error": f"the payload is larger than {max_bytes} bytes"}, status=413)
