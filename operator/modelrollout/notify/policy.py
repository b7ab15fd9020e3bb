"""When a failed delivery is tried again, and when it is given up: pure.

Exponential backoff (initial, doubled per attempt up to maximum) within a
retry budget: the time from a notification's first attempt after which no
further attempt starts. A 2xx is delivered; a 408, 429, 5xx, timeout or
connection failure is retried; any other answer (a 4xx: the sink refuses
the request as it is) is given up at once, as Alertmanager's own notifier does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["delivered", "retry", "rejected"]


@dataclass(frozen=True)
class RetryPolicy:
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    budget_seconds: float = 600.0
    # One request's own bound: a sink that accepts and never answers is a failed attempt.
    timeout_seconds: float = 10.0

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1 for the first)."""
        return float(
            min(self.max_backoff_seconds, self.initial_backoff_seconds * 2 ** (attempt - 1))
        )

    def next_attempt_in(self, attempt: int, elapsed_seconds: float) -> float | None:
        """The wait before the next attempt, or None: the budget does not allow one."""
        wait = self.backoff(attempt)
        if elapsed_seconds + wait > self.budget_seconds:
            return None
        return wait


def outcome(status: int | None) -> Outcome:
    """What an answer means; None: no answer (timeout, connection refused or reset)."""
    if status is not None and 200 <= status < 300:
        return "delivered"
    if status is None or status in (408, 429) or status >= 500:
        return "retry"
    return "rejected"
