"""Durations as users write them in a ModelRollout: `30s`, `5m`, `1h30m`, `250ms`.

The grammar is Go's `time.ParseDuration` without signs, fractions or µs/ns
(no one waits nanoseconds for a model to load): one or more `<int><unit>`
pairs, units ms, s, m, h, largest first. The CRD carries the same pattern, so
the API server refuses what this parser refuses.
"""

from __future__ import annotations

import functools
import re

# Also the CRD's `pattern` (the Duration type of models/spec.py carries it there).
DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$"

_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION = re.compile(DURATION_PATTERN)


class DurationError(ValueError):
    """The text is not a duration; the message says what a duration looks like."""


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `1h30m` or `250ms`."""
    if not isinstance(text, str):
        raise DurationError(f"a duration must be a string like 30s, 5m or 1h30m, not {text!r}")
    return _seconds(text)


# A tick asks after the same few durations of its spec again and again (its timers).
@functools.lru_cache(maxsize=4096)
def _seconds(text: str) -> float:
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise DurationError(
            f"{text!r} is not a duration: write whole numbers with units h, m, s, ms, "
            "largest first, like 30s, 5m, 1h30m or 250ms"
        )
    total = 0.0
    for group in match.groups():
        if group:
            unit = group.lstrip("0123456789")
            total += int(group[: -len(unit)]) * _UNIT_SECONDS[unit]
    return total
