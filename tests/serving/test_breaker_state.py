"""The circuit breaker's state machine, tick by tick on a fake clock (no server)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from modelserve.api.breaker import (
    BreakerOpenError,
    BreakerOpenResponse,
    BreakerState,
    CircuitBreaker,
    metered_breaker,
)
from modelserve.faults import (
    EngineFaultDecider,
    FaultConfigError,
    InjectedEngineError,
    build_fault_injection,
)

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(threshold: int = 5, cooldown_s: float = 30.0) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(threshold, cooldown_s, clock=clock), clock


def fail(b: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        b.record(trial=b.admit(), failed=True)


def test_opens_after_n_consecutive_engine_failures() -> None:
    b, _ = breaker(threshold=5)
    fail(b, 4)
    assert b.state is BreakerState.CLOSED
    fail(b)
    assert b.state is BreakerState.OPEN
    assert not b.accepting()
    with pytest.raises(BreakerOpenError):
        b.admit()
    with pytest.raises(BreakerOpenError):
        b.check()


def test_a_success_resets_the_count() -> None:
    b, _ = breaker(threshold=3)
    fail(b, 2)
    b.record(trial=b.admit(), failed=False)
    fail(b, 2)
    assert b.state is BreakerState.CLOSED
    fail(b)
    assert b.state is BreakerState.OPEN


def test_outcomes_without_an_engine_verdict_do_not_count() -> None:
    """429 (queue full), 4xx, timeouts and disconnects are recorded as failed=None."""
    b, _ = breaker(threshold=2)
    fail(b)
    for _ in range(50):
        b.record(trial=b.admit(), failed=None)
    assert b.state is BreakerState.CLOSED
    assert b.consecutive_failures == 1
    fail(b)
    assert b.state is BreakerState.OPEN


def test_retry_after_is_the_remaining_cool_down() -> None:
    b, clock = breaker(threshold=1, cooldown_s=30)
    fail(b)
    clock.now += 12.4
    assert b.retry_after_s() == pytest.approx(17.6)
    with pytest.raises(BreakerOpenError) as refused:
        b.check()
    assert refused.value.retry_after_s == pytest.approx(17.6)
    assert refused.value.retry_after_header == "18"
    response = BreakerOpenResponse(refused.value).response()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "18"
    clock.now += 17.5
    assert b.retry_after_s() == pytest.approx(0.1)
    # Whole seconds, never 0 while still refusing.
    with pytest.raises(BreakerOpenError) as refused:
        b.check()
    assert refused.value.retry_after_header == "1"


def test_half_open_after_the_cool_down_lets_one_trial_through() -> None:
    b, clock = breaker(threshold=1, cooldown_s=30)
    fail(b)
    clock.now += 30
    assert b.state is BreakerState.HALF_OPEN
    assert b.accepting()
    b.check()  # reserves nothing: the trial is taken at admission
    assert b.admit() is True
    with pytest.raises(BreakerOpenError) as refused:
        b.admit()
    assert refused.value.retry_after_header == "1"
    b.record(trial=True, failed=False)
    assert b.state is BreakerState.CLOSED
    assert b.admit() is False


def test_a_failed_trial_reopens_for_a_full_cool_down() -> None:
    b, clock = breaker(threshold=3, cooldown_s=30)
    fail(b, 3)
    clock.now += 31
    assert b.admit() is True
    b.record(trial=True, failed=True)
    assert b.state is BreakerState.OPEN
    assert b.retry_after_s() == pytest.approx(30)


def test_a_trial_without_a_verdict_frees_the_trial_slot() -> None:
    b, clock = breaker(threshold=1, cooldown_s=5)
    fail(b)
    clock.now += 5
    assert b.admit() is True
    b.record(trial=True, failed=None)  # e.g. the client went away
    assert b.state is BreakerState.HALF_OPEN
    assert b.admit() is True


def test_late_outcomes_of_requests_admitted_before_opening_do_not_close_it() -> None:
    b, clock = breaker(threshold=1, cooldown_s=10)
    straggler = b.admit()
    fail(b)
    b.record(trial=straggler, failed=False)
    assert b.state is BreakerState.OPEN
    clock.now += 10
    b.record(trial=False, failed=False)
    assert b.state is BreakerState.HALF_OPEN


def test_metrics_show_the_state_and_count_openings() -> None:
    registry = CollectorRegistry()
    b = metered_breaker(1, 0.05, registry, "m")

    def value(name: str) -> float | None:
        return registry.get_sample_value(name, {"model_name": "m"})

    assert value("modelserve:circuit_breaker_state") == 0
    b.record(trial=b.admit(), failed=True)
    assert value("modelserve:circuit_breaker_state") == 1
    assert value("modelserve:circuit_breaker_openings_total") == 1


def test_refuses_a_threshold_below_one() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0)


def test_engine_faults_need_the_switch_and_stop_at_their_limit() -> None:
    with pytest.raises(FaultConfigError):
        build_fault_injection(switched_on=False, engine_error_rate=1.0)
    with pytest.raises(FaultConfigError):
        build_fault_injection(switched_on=True, engine_error_rate=1.5)
    faults = build_fault_injection(switched_on=True, engine_error_rate=1.0, engine_error_limit=2)
    assert faults.active
    decider = EngineFaultDecider(faults)
    for _ in range(2):
        with pytest.raises(InjectedEngineError):
            decider.check_step()
    decider.check_step()
    assert decider.injected == 2
