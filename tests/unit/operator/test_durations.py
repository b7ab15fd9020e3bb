"""Durations as users write them: 30s, 5m, 1h30m, 250ms."""

from __future__ import annotations

import pytest

from modelrollout.models import DurationError, parse_duration

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1h2m3s4ms", 3723.004),
        ("0s", 0.0),
        ("90m", 5400.0),
    ],
)
def test_parses_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "5", "m", "1.5h", "-5s", "5 m", "30s1m", "1d", "5M", "1h 30m"]
)
def test_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(DurationError, match="duration"):
        parse_duration(text)
