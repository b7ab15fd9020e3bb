"""A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat): `{"text": ...}`.

The text is the sink's template; an attachment's colour shows the severity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from modelrollout.notify.sinks.base import JSON_HEADERS, HttpRequest, Rendered, SinkCapabilities

COLORS = {"info": "#2eb886", "warning": "#daa038", "critical": "#a30200"}


class SlackSink:
    capabilities: ClassVar[SinkCapabilities] = frozenset()

    @staticmethod
    def request(url: str, rendered: Sequence[Rendered]) -> HttpRequest:
        (one,) = rendered
        notification = one.notification
        return HttpRequest(
            url,
            {
                "text": one.text,
                "attachments": [
                    {
                        "color": COLORS[notification.severity],
                        "fallback": one.text,
                        "fields": [
                            {"title": "Event", "value": notification.kind, "short": True},
                            {"title": "Phase", "value": notification.phase, "short": True},
                        ],
                    }
                ],
            },
            JSON_HEADERS,
        )
