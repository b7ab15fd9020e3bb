"""Fault injection for rollout testing: errors, added latency and slower tokens.

Two kinds of error: `error_rate` answers a fraction of requests 500 before they
reach the engine (the engine stays healthy); `engine_error_rate` makes a
fraction of the engine's prefill steps raise inside the engine thread, which
fails every request in that step as a broken model or device would (what the
circuit breaker counts). `engine_error_limit` stops the engine errors after that
many, so a test can watch the engine recover.

Off unless BOTH the switch (`--fault-injection` or the environment variable
MODELSERVE_FAULT_INJECTION=enabled) AND at least one fault parameter are
given; fault parameters without the switch refuse to start the server, so a
stray flag in a manifest cannot silently degrade production.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass

logger = logging.getLogger(__name__)

FAULT_INJECTION_ENV = "MODELSERVE_FAULT_INJECTION"
FAULT_INJECTION_ENABLED = "enabled"


class FaultConfigError(ValueError):
    """Fault parameters that must not be used as given."""


@dataclass(frozen=True)
class FaultInjection:
    """Faults to apply; the default is no fault at all."""

    error_rate: float = 0.0
    added_latency_s: float = 0.0
    token_delay_s: float = 0.0
    seed: int | None = None
    engine_error_rate: float = 0.0
    # Injected engine errors stop after this many; None: they never stop.
    engine_error_limit: int | None = None

    @property
    def active(self) -> bool:
        return (
            self.error_rate > 0
            or self.added_latency_s > 0
            or self.token_delay_s > 0
            or self.engine_error_rate > 0
        )


def fault_injection_switched_on(flag: bool, environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return flag or env.get(FAULT_INJECTION_ENV, "").strip().lower() == FAULT_INJECTION_ENABLED


def build_fault_injection(
    *,
    switched_on: bool,
    error_rate: float = 0.0,
    added_latency_s: float = 0.0,
    token_delay_s: float = 0.0,
    seed: int | None = None,
    engine_error_rate: float = 0.0,
    engine_error_limit: int | None = None,
) -> FaultInjection:
    """Validate fault parameters against the switch; raise FaultConfigError when they disagree."""
    faults = FaultInjection(
        error_rate, added_latency_s, token_delay_s, seed, engine_error_rate, engine_error_limit
    )
    for name, rate in (("error rate", error_rate), ("engine error rate", engine_error_rate)):
        if not 0.0 <= rate <= 1.0:
            raise FaultConfigError(f"fault {name} must be within [0, 1], got {rate}")
    if engine_error_limit is not None and engine_error_limit < 0:
        raise FaultConfigError("fault engine error limit must not be negative")
    if added_latency_s < 0 or token_delay_s < 0:
        raise FaultConfigError("fault latencies must not be negative")
    if faults.active and not switched_on:
        raise FaultConfigError(
            "fault parameters given but fault injection is not switched on: pass "
            f"--fault-injection or set {FAULT_INJECTION_ENV}={FAULT_INJECTION_ENABLED}"
        )
    return faults


def announce(faults: FaultInjection) -> None:
    """Log the active faults loudly: a server that fails on purpose must say so."""
    if not faults.active:
        return
    banner = "!" * 72
    logger.warning(banner)
    logger.warning(
        "FAULT INJECTION ENABLED: error_rate=%.3f added_latency=%.3fs token_delay=%.3fs "
        "engine_error_rate=%.3f engine_error_limit=%s",
        faults.error_rate,
        faults.added_latency_s,
        faults.token_delay_s,
        faults.engine_error_rate,
        faults.engine_error_limit,
    )
    logger.warning("this server answers wrongly ON PURPOSE; never run it for real traffic")
    logger.warning(banner)


class FaultDecider:
    """Decides per request whether it is answered with an injected error."""

    def __init__(self, faults: FaultInjection) -> None:
        self.faults = faults
        self._random = random.Random(faults.seed)

    def should_fail(self) -> bool:
        return self.faults.error_rate > 0 and self._random.random() < self.faults.error_rate


class InjectedEngineError(RuntimeError):
    """Raised inside the engine on purpose (fault injection)."""


class EngineFaultDecider:
    """Decides per engine step whether it raises; called on the engine thread only."""

    def __init__(self, faults: FaultInjection) -> None:
        self.faults = faults
        # Its own stream, so engine faults do not shift which requests `FaultDecider` fails.
        self._random = random.Random(faults.seed)
        self.injected = 0

    def check_step(self) -> None:
        limit = self.faults.engine_error_limit
        if self.faults.engine_error_rate <= 0 or (limit is not None and self.injected >= limit):
            return
        if self._random.random() < self.faults.engine_error_rate:
            self.injected += 1
            raise InjectedEngineError("injected engine failure (fault injection)")
