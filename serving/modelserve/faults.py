"""Fault injection for rollout testing: errors, added latency and slower tokens.

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

    @property
    def active(self) -> bool:
        return self.error_rate > 0 or self.added_latency_s > 0 or self.token_delay_s > 0


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
) -> FaultInjection:
    """Validate fault parameters against the switch; raise FaultConfigError when they disagree."""
    faults = FaultInjection(error_rate, added_latency_s, token_delay_s, seed)
    if not 0.0 <= error_rate <= 1.0:
        raise FaultConfigError(f"fault error rate must be within [0, 1], got {error_rate}")
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
        "FAULT INJECTION ENABLED: error_rate=%.3f added_latency=%.3fs token_delay=%.3fs",
        faults.error_rate,
        faults.added_latency_s,
        faults.token_delay_s,
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
