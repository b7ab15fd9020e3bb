"""Microsoft Teams: a message with one Adaptive Card, what a Teams workflow webhook
("When a Teams webhook request is received") posts to a channel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from modelrollout.notify.sinks.base import JSON_HEADERS, HttpRequest, Rendered, SinkCapabilities

# Adaptive Card text colours.
COLORS = {"info": "Good", "warning": "Warning", "critical": "Attention"}


class TeamsSink:
    capabilities: ClassVar[SinkCapabilities] = frozenset()

    @staticmethod
    def request(url: str, rendered: Sequence[Rendered]) -> HttpRequest:
        (one,) = rendered
        notification = one.notification
        facts = [
            {"title": "Rollout", "value": f"{notification.namespace}/{notification.rollout}"},
            {"title": "Phase", "value": notification.phase},
        ]
        if notification.revision is not None:
            facts.append({"title": "Revision", "value": notification.revision})
        card = {
            "type": "AdaptiveCard",
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "version": "1.4",
            "body": [
                {
                    "type": "TextBlock",
                    "text": notification.kind,
                    "weight": "Bolder",
                    "size": "Medium",
                    "color": COLORS[notification.severity],
                },
                {"type": "TextBlock", "text": one.text, "wrap": True},
                {"type": "FactSet", "facts": facts},
            ],
        }
        return HttpRequest(
            url,
            {
                "type": "message",
                "attachments": [
                    {
                        "contentType": "application/vnd.microsoft.card.adaptive",
                        "contentUrl": None,
                        "content": card,
                    }
                ],
            },
            JSON_HEADERS,
        )
