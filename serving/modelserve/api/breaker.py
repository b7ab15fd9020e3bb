"""A circuit breaker around the engine: fail fast while the engine keeps failing.

Closed: requests go to the engine; `failure_threshold` engine failures in a row
open it. Open: requests are refused at once (503 with Retry-After) and /health
turns unready, so the pod leaves its Service's endpoints, until `cooldown_s` has
passed. Half-open: /health is ready again and one trial request goes to the
engine; its success closes the breaker, its failure opens it again.

Only engine failures count: a full queue (429), a client error (4xx), a client
that went away or a timeout is neither a failure nor a success. Written here
rather than taken from a library (pybreaker, aiobreaker) because those count
every exception of a wrapped call and have no notion of a generation's outcome
arriving as an event, nor of a request that ends without a verdict.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from enum import IntEnum

from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge

from modelserve.api.errors import APIError

logger = logging.getLogger(__name__)


class BreakerState(IntEnum):
    """The values of the state gauge."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class BreakerOpenError(Exception):
    """The breaker refuses the request; retry after `retry_after_s` seconds."""

    def __init__(self, retry_after_s: float, message: str) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        """Retry-After takes whole seconds; never 0 while the breaker still refuses."""
        return str(max(1, math.ceil(self.retry_after_s)))


class BreakerOpenResponse(APIError):
    """The 503 of a refusing breaker, with Retry-After."""

    def __init__(self, refusal: BreakerOpenError) -> None:
        super().__init__(503, str(refusal), error_type="service_unavailable", code="circuit_open")
        self.retry_after = refusal.retry_after_header

    def response(self) -> JSONResponse:
        return JSONResponse(
            self.body(), status_code=self.status_code, headers={"Retry-After": self.retry_after}
        )


class CircuitBreaker:
    """The breaker's state machine; thread-safe, with an injectable clock for tests."""

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must not be negative, got {cooldown_s}")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._on_open = on_open
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._current()

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    def accepting(self) -> bool:
        """Whether the pod should receive traffic: not while open (the readiness answer)."""
        return self.state is not BreakerState.OPEN

    def check(self) -> None:
        """Raise BreakerOpenError while open; reserves nothing (see `admit`)."""
        with self._lock:
            if self._current() is BreakerState.OPEN:
                raise self._refusal()

    def admit(self) -> bool:
        """Let one request through to the engine or raise BreakerOpenError.

        Returns True when the request is the half-open trial; its outcome must be
        reported with `record` (every admitted request should be reported).
        """
        with self._lock:
            state = self._current()
            if state is BreakerState.CLOSED:
                return False
            if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            raise self._refusal()

    def record(self, *, trial: bool, failed: bool | None) -> None:
        """The outcome of an admitted request: failed=None when it says nothing of the engine."""
        with self._lock:
            if trial:
                self._trial_in_flight = False
            state = self._current()
            if failed is None:
                return
            if not failed:
                self._consecutive_failures = 0
                if trial and state is BreakerState.HALF_OPEN:
                    self._set(BreakerState.CLOSED)
                return
            self._consecutive_failures += 1
            if (trial and state is BreakerState.HALF_OPEN) or (
                state is BreakerState.CLOSED
                and self._consecutive_failures >= self.failure_threshold
            ):
                self._open()

    def retry_after_s(self) -> float:
        """Seconds until the cool-down ends (0 unless open)."""
        with self._lock:
            if self._current() is not BreakerState.OPEN:
                return 0.0
            return self._remaining()

    # --- under the lock --------------------------------------------------------------

    def _current(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._remaining() <= 0:
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def _remaining(self) -> float:
        return max(0.0, self._opened_at + self.cooldown_s - self._clock())

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._set(BreakerState.OPEN)
        if self._on_open is not None:
            self._on_open()

    def _set(self, state: BreakerState) -> None:
        self._state = state
        if state is not BreakerState.OPEN:
            self._consecutive_failures = 0
        if self._on_change is not None:
            self._on_change(state)

    def _refusal(self) -> BreakerOpenError:
        if self._state is BreakerState.OPEN:
            retry_after = self._remaining()
            message = (
                f"the engine failed {self.failure_threshold} requests in a row: the circuit "
                f"breaker is open for another {retry_after:.1f}s"
            )
        else:
            # Half-open with its one trial under way: its verdict comes within one request.
            retry_after = 1.0
            message = "the circuit breaker is half-open and its trial request is under way"
        return BreakerOpenError(retry_after, message)


def metered_breaker(
    failure_threshold: int, cooldown_s: float, registry: CollectorRegistry, model_name: str
) -> CircuitBreaker:
    """A breaker whose state and openings are metrics in the server's registry."""
    state = Gauge(
        "modelserve:circuit_breaker_state",
        "Circuit breaker around the engine: 0 closed, 1 open, 2 half-open.",
        ("model_name",),
        registry=registry,
    ).labels(model_name)
    openings = Counter(
        "modelserve:circuit_breaker_openings",
        "Times the circuit breaker opened.",
        ("model_name",),
        registry=registry,
    ).labels(model_name)
    breaker = CircuitBreaker(
        failure_threshold,
        cooldown_s,
        on_change=lambda new_state: logger.warning("circuit breaker %s", new_state.name),
        on_open=openings.inc,
    )
    # Read at every scrape: the cool-down ends with no request to notice it.
    state.set_function(lambda: float(breaker.state))
    return breaker
