"""Pydantic models of the ModelRollout resource (spec and status), with camelCase aliases."""

from modelrollout.models.durations import DurationError, parse_duration
from modelrollout.models.spec import (
    Alert,
    Analysis,
    CanaryStep,
    CanaryStrategy,
    Check,
    InvalidSpecError,
    ModelRolloutSpec,
    PrometheusSource,
    Threshold,
    parse_spec,
)
from modelrollout.models.status import (
    ACTIVE_CANARY_PHASES,
    CheckStatus,
    Condition,
    HistoryEntry,
    ModelRolloutStatus,
    Phase,
    Weights,
)

__all__ = [
    "ACTIVE_CANARY_PHASES",
    "Alert",
    "Analysis",
    "CanaryStep",
    "CanaryStrategy",
    "Check",
    "CheckStatus",
    "Condition",
    "DurationError",
    "HistoryEntry",
    "InvalidSpecError",
    "ModelRolloutSpec",
    "ModelRolloutStatus",
    "Phase",
    "PrometheusSource",
    "Threshold",
    "Weights",
    "parse_duration",
    "parse_spec",
]
