"""The e2e tests' record of the steps a rollout walked, from the statuses a watch saw."""

from __future__ import annotations

import pytest

from tests.support.status_watch import steps_walked

pytestmark = pytest.mark.unit

STEPS = [
    {"setWeight": 20},
    {"pause": {"duration": "1s"}},
    {"setWeight": 50},
    {"pause": {"duration": "1s"}},
    {"setWeight": 100},
]


def test_a_weight_step_done_in_the_write_that_starts_the_next_step_is_walked() -> None:
    states = [
        ("Succeeded", None, 0),
        ("Progressing", 0, 0),
        ("Progressing", 1, 20),
        ("Progressing", 3, 50),  # setWeight 50 done in this write
        ("Succeeded", None, 0),  # setWeight 100 done with the promotion
    ]
    assert steps_walked(states) == [0, 1, 3]
    assert steps_walked(states, STEPS) == [0, 1, 2, 3, 4]


def test_a_step_skipped_without_its_weight_is_still_missing() -> None:
    # Step 2's weight was never written: the pause after it shows the weight before.
    states = [("Progressing", 0, 0), ("Progressing", 1, 20), ("Progressing", 3, 20)]
    assert steps_walked(states, STEPS) == [0, 1, 3]
    # A pause is never done in the write of the step after it.
    assert steps_walked([("Progressing", 0, 0), ("Progressing", 2, 50)], STEPS) == [0, 2]
