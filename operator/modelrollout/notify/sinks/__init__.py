"""Notification sinks by `spec.notifications.sinks[].type`: one module each, one line here."""

from __future__ import annotations

from collections.abc import Mapping

from modelrollout.notify.sinks.alertmanager import AlertmanagerSink
from modelrollout.notify.sinks.base import Sink
from modelrollout.notify.sinks.slack import SlackSink
from modelrollout.notify.sinks.teams import TeamsSink
from modelrollout.notify.sinks.webhook import WebhookSink

SINKS: Mapping[str, type[Sink]] = {
    "webhook": WebhookSink,
    "slack": SlackSink,
    "teams": TeamsSink,
    "alertmanager": AlertmanagerSink,
}
