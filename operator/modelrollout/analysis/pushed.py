"""Alerts that Alertmanager pushes to the operator: their payload, which rollout each concerns.

A firing alert concerns a rollout when it matches one of the rollout's
`analysis.alerts` entries exactly as the poll of `ALERTS` matches it: the
same alertname, and every matchLabel of the entry, rendered for the rollout's
current revisions, carried with that value. Such an alert counts as firing at
the rollout's next evaluation, which the receiver makes happen at once; the
decision is the poll's (assessment.py, then the strategy): weight 0 first.

A pushed alert is used by one evaluation, then the poll is the word again: a
paused rollout that is resumed is not breached anew by an alert that
Prometheus no longer fires, and a lost push still reaches the rollout at its
next poll.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelrollout.analysis.templates import TemplateError, label_value
from modelrollout.models.spec import Alert, ModelRolloutSpec

Labels = Mapping[str, str]
# What Alertmanager's webhook sends (version 4); the fields the operator reads.
WEBHOOK_VERSION = "4"


class PayloadError(ValueError):
    """The body is not an Alertmanager webhook payload of version 4."""


class _WebhookModel(BaseModel):
    # Alertmanager adds fields over time (receiver, groupLabels, externalURL...).
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class WebhookAlert(_WebhookModel):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    starts_at: str = Field(alias="startsAt", min_length=1)
    fingerprint: Annotated[str, Field(min_length=1, max_length=128)]

    @property
    def replay_key(self) -> tuple[str, str]:
        """The same alert, sent again (Alertmanager's group_interval and repeat_interval)."""
        return (self.fingerprint, self.starts_at)


class WebhookPayload(_WebhookModel):
    version: Literal["4"]
    status: Literal["firing", "resolved"]
    alerts: list[WebhookAlert]


def parse_payload(body: bytes) -> WebhookPayload:
    """The payload in `body` (JSON); PayloadError says what is wrong with it."""
    try:
        return WebhookPayload.model_validate_json(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise PayloadError(
            f"not an Alertmanager webhook payload (version 4): {where}: {first['msg']}"
        ) from None


def alert_matches(alert: Alert, labels: Labels, context: Mapping[str, str]) -> bool:
    """Whether an alert with `labels` is an instance of `alert` for this rollout's `context`."""
    if labels.get("alertname") != alert.alertname:
        return False
    try:
        return all(
            labels.get(key) == label_value(value, context)
            for key, value in alert.match_labels.items()
        )
    except TemplateError:
        return False  # the poll reports this entry Unavailable; a push cannot mean more


def matching_alerts(
    spec: ModelRolloutSpec, pushed: Iterable[Labels], context: Mapping[str, str]
) -> list[Alert]:
    """The rollout's `analysis.alerts` entries that one of the `pushed` alerts matches."""
    labels = list(pushed)
    return [
        alert
        for alert in spec.analysis.alerts
        if any(alert_matches(alert, one, context) for one in labels)
    ]


class PushedAlerts:
    """Firing alerts pushed for each rollout (by uid), until its next evaluation takes them.

    Also remembers the alerts already acted on (fingerprint and startsAt), the
    latest `remembered` of them, so that a replay is acknowledged without acting
    again. Thread-safe: the receiver records, the ticks' threads take.
    """

    def __init__(self, remembered: int = 4096) -> None:
        self._remembered = remembered
        self._pending: dict[str, list[Labels]] = {}
        self._acted_on: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._guard = threading.Lock()

    def acted_on(self, key: tuple[str, str]) -> bool:
        with self._guard:
            return key in self._acted_on

    def record(self, uid: str, labels: Labels, key: tuple[str, str]) -> None:
        with self._guard:
            self._pending.setdefault(uid, []).append(dict(labels))
            self._acted_on[key] = None
            self._acted_on.move_to_end(key)
            while len(self._acted_on) > self._remembered:
                self._acted_on.popitem(last=False)

    def take(self, uid: str) -> Sequence[Labels]:
        """The alerts pushed for the rollout since its last evaluation; they are used once."""
        with self._guard:
            return tuple(self._pending.pop(uid, ()))

    def forget(self, uid: str) -> None:
        with self._guard:
            self._pending.pop(uid, None)
