"""One Event per tick: what a tick's decision and check changes tell, folded: pure.

A tick that takes a step often says several things (a weight set and the
next step started, a check passing and a pause started, promotion started
and completed). Posted one by one they are one API write each; folded they
are one Event that still names everything that happened, in order. Its type
and reason are the most important of the tick's: a Warning outranks a Normal
Event, so a breach or a rollback is never hidden behind a step; the
strategy's own Events outrank the checks' (the step or the rollback is what
the tick did, a check's change is why); and a later Event outranks an
earlier one (it is where the tick left the rollout: Promoted after
Promoting, the step a weight step led to).
"""

from __future__ import annotations

from collections.abc import Sequence

from modelrollout.kube.events import MAX_MESSAGE

# (type, reason, message), as the strategy and the checks report them.
Event = tuple[str, str, str]

SEPARATOR = "; "


def fold_events(checks: Sequence[Event], decided: Sequence[Event]) -> Event | None:
    """The tick's one Event: `checks` (check state changes) and `decided` (the strategy's),
    each in the order they happened; None when the tick has nothing to say."""
    events = [*checks, *decided]
    if not events:
        return None
    if len(events) == 1:
        return events[0]
    first = max(
        range(len(events)),
        key=lambda index: (events[index][0] == "Warning", index >= len(checks), index),
    )
    event_type, reason, main = events[first]
    messages = [message for _, _, message in events]
    message = SEPARATOR.join(messages)
    if len(message) > MAX_MESSAGE:
        # Too long for the API server: the Event's own message first, whole, so that
        # what is cut is only the least important of the rest.
        message = SEPARATOR.join([main, *messages[:first], *messages[first + 1 :]])
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 1] + "…"
    return event_type, reason, message
