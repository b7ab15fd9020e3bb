"""spec.notifications: where a rollout's events are sent, and which (notify/ sends them).

The same model is read from a namespace's default, the Secret
`modelrollout-notifications` (key `notifications.yaml`), for rollouts that set
no `spec.notifications`.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, Field

from modelrollout.notify.templates import template_problem

# What a notification tells, derived from the tick's decision (engine/notifications.py).
NotificationEvent = Literal[
    "Started",
    "StepAdvanced",
    "Paused",
    "Breach",
    "RolledBack",
    "Promoted",
    "AnalysisUnavailable",
]
NOTIFICATION_EVENTS: tuple[str, ...] = get_args(NotificationEvent)

# The sinks' names; notify/sinks/__init__.py SINKS maps each to its module.
SinkType = Literal["webhook", "slack", "teams", "alertmanager"]

MAX_SINKS = 8


def _check_template(text: str) -> str:
    problem = template_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


NotificationTemplate = Annotated[
    str, Field(min_length=1, max_length=2000), AfterValidator(_check_template)
]
SinkName = Annotated[
    str,
    Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
]
