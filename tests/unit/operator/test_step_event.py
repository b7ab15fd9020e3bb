"""One Event per tick: its type and reason the most important of the tick's, its message
naming everything that happened, within the API server's message limit."""

from __future__ import annotations

import pytest

from modelrollout.engine.step_event import fold_events
from modelrollout.kube.events import MAX_MESSAGE

pytestmark = pytest.mark.unit

PASSING = ("Normal", "CheckPassing", "check error-rate is Passing (0.001; breachWhen > 0.01)")
BREACHED = ("Warning", "CheckBreached", "check error-rate is Breached (0.2; breachWhen > 0.01)")


def test_a_tick_that_says_nothing_posts_nothing_and_one_thing_as_it_is() -> None:
    assert fold_events([], []) is None
    assert fold_events([PASSING], []) == PASSING
    started = ("Normal", "StepStarted", "step 2/4 pause 1m")
    assert fold_events([], [started]) == started


def test_the_step_taken_is_the_reason_and_the_message_says_all_in_order() -> None:
    assert fold_events(
        [PASSING],
        [
            ("Normal", "WeightSet", "canary abc: 20%"),
            ("Normal", "StepStarted", "step 2/4 pause 1m"),
        ],
    ) == (
        "Normal",
        "StepStarted",
        f"{PASSING[2]}; canary abc: 20%; step 2/4 pause 1m",
    )


def test_promotion_started_and_done_in_one_tick_is_promoted() -> None:
    assert fold_events(
        [],
        [
            ("Normal", "Promoting", "promoting abc: all steps completed"),
            ("Normal", "Promoted", "revision abc is stable"),
        ],
    ) == ("Normal", "Promoted", "promoting abc: all steps completed; revision abc is stable")


def test_a_rollback_is_a_warning_never_hidden_behind_the_step_or_the_check() -> None:
    rolling_back = ("Warning", "RollingBack", "canary abc: check error-rate breached")
    assert fold_events([BREACHED], [rolling_back]) == (
        "Warning",
        "RollingBack",
        f"{BREACHED[2]}; {rolling_back[2]}",
    )
    # A check's Warning outranks the strategy's Normal Event.
    event_type, reason, message = fold_events(
        [BREACHED], [("Normal", "StepStarted", "step 2/4 pause 1m")]
    ) or ("", "", "")
    assert (event_type, reason) == ("Warning", "CheckBreached")
    assert "step 2/4 pause 1m" in message


def test_a_message_over_the_limit_keeps_the_events_own_message_whole() -> None:
    checks = [
        ("Normal", "CheckPassing", f"check c{i} is Passing (0; breachWhen > {'9' * 60})")
        for i in range(30)
    ]
    rolling_back = ("Warning", "RollingBack", "canary abc: rolling back, progress deadline")
    event = fold_events(checks, [rolling_back])
    assert event is not None
    event_type, reason, message = event
    assert (event_type, reason) == ("Warning", "RollingBack")
    assert len(message) <= MAX_MESSAGE
    assert message.startswith(f"{rolling_back[2]}; {checks[0][2]}; ")
    assert message.endswith("…")
