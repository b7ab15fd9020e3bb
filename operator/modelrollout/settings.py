"""The operator's settings: read from the environment once, at start-up, and checked.

Each field below is one environment variable (its alias) with its default;
the chart sets them (charts/modelrollout/templates/deployment.yaml), and
`kopf run -m modelrollout.main` runs without any. A bad value stops the
operator at start-up with an error naming the variable, instead of a rollout
misbehaving later.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from modelrollout.engine.comparison import DEFAULT_SHADOW_PROXY_IMAGE
from modelrollout.leader import LeaseTiming
from modelrollout.notify.policy import RetryPolicy


class SettingsError(ValueError):
    """One or more environment variables hold a value the operator cannot use."""


def _on_off(value: Any) -> Any:
    if isinstance(value, str):
        if value not in ("on", "off"):
            raise ValueError("expected on or off")
        return value == "on"
    return value


def _port_or_off(value: Any) -> Any:
    return None if value == "off" else value


def _unset_if_empty(value: Any) -> Any:
    # The chart's downward-API fields are empty strings outside a pod.
    return value or None


class OperatorSettings(BaseModel):
    """Built once by `from_env` in the start-up handler; frozen thereafter.

    Field names are what the code reads; aliases are the environment variables.
    """

    model_config = ConfigDict(
        frozen=True, populate_by_name=True, extra="forbid", allow_inf_nan=False
    )

    # A rollout that progresses is ticked at least this often.
    tick_interval_seconds: float = Field(2.0, alias="MODELROLLOUT_TICK_INTERVAL", gt=0)
    # A settled rollout (Succeeded, nothing left to scale down) is ticked this often;
    # a change to it or its children wakes it sooner.
    resync_interval_seconds: float = Field(30.0, alias="MODELROLLOUT_RESYNC_INTERVAL", gt=0)
    # Ticks mostly wait on the API server; metric queries have their own, lower bound.
    concurrent_ticks: int = Field(32, alias="MODELROLLOUT_CONCURRENT_TICKS", ge=1)
    # A check's latest reading is written to status at least this often; a change of
    # its state or any other status change writes it at once (engine/reconciler.py).
    check_status_refresh_seconds: float = Field(
        60.0, alias="MODELROLLOUT_CHECK_STATUS_REFRESH", ge=0
    )
    # At most this many requests (queries and health checks) from the whole operator
    # wait on a metric provider at once, however many ticks run: a slow Prometheus is
    # not made slower by a pile-up.
    max_queries_in_flight: int = Field(8, alias="MODELROLLOUT_MAX_QUERIES_IN_FLIGHT", ge=1)
    # The operator's /metrics; None ("off") disables it (tests run several operators).
    metrics_port: Annotated[int | None, BeforeValidator(_port_or_off)] = Field(
        8080, alias="MODELROLLOUT_METRICS_PORT", ge=1, le=65535
    )
    # Alertmanager's webhook receiver (alert_receiver.py); None ("off", the default):
    # none. On, it needs the file holding the bearer token Alertmanager sends.
    alert_receiver_port: Annotated[int | None, BeforeValidator(_port_or_off)] = Field(
        None, alias="MODELROLLOUT_ALERT_RECEIVER_PORT", ge=1, le=65535
    )
    alert_receiver_token_file: Annotated[Path | None, BeforeValidator(_unset_if_empty)] = Field(
        None, alias="MODELROLLOUT_ALERT_RECEIVER_TOKEN_FILE"
    )
    # Notifications (notify/): at most this many wait to be delivered; more are dropped
    # (and counted) rather than held: a tick never waits for a sink.
    notification_queue_size: int = Field(1000, alias="MODELROLLOUT_NOTIFICATION_QUEUE_SIZE", ge=1)
    # One request to a sink; a sink that accepts and never answers is a failed attempt.
    notification_timeout_seconds: float = Field(
        10.0, alias="MODELROLLOUT_NOTIFICATION_TIMEOUT", gt=0
    )
    # A failed delivery is tried again after this, doubled per attempt up to the maximum,
    # until the retry budget (from the first attempt) would be passed.
    notification_backoff_seconds: float = Field(
        1.0, alias="MODELROLLOUT_NOTIFICATION_BACKOFF", gt=0
    )
    notification_max_backoff_seconds: float = Field(
        60.0, alias="MODELROLLOUT_NOTIFICATION_MAX_BACKOFF", gt=0
    )
    notification_retry_budget_seconds: float = Field(
        600.0, alias="MODELROLLOUT_NOTIFICATION_RETRY_BUDGET", ge=0
    )
    # The image of evaluation Jobs of vllm rollouts whose step names none: one with
    # modelserve (vLLM's images have none). Unset: the rollout's serving image.
    evaluation_image: Annotated[str | None, BeforeValidator(_unset_if_empty)] = Field(
        None, alias="MODELROLLOUT_EVALUATION_IMAGE", min_length=1
    )
    # The shadow comparison proxy's image (engine/comparison.py): the operator's own, which
    # holds modelrollout.shadowproxy; the chart sets it to the image it runs.
    shadow_proxy_image: str = Field(
        DEFAULT_SHADOW_PROXY_IMAGE, alias="MODELROLLOUT_SHADOW_PROXY_IMAGE", min_length=1
    )
    # On with more than one replica: only the holder of the Lease acts (leader.py).
    leader_election: Annotated[bool, BeforeValidator(_on_off)] = Field(
        False, alias="MODELROLLOUT_LEADER_ELECTION"
    )
    lease_name: str = Field("modelrollout-operator", alias="MODELROLLOUT_LEASE_NAME", min_length=1)
    lease_duration_seconds: float = Field(15.0, alias="MODELROLLOUT_LEASE_DURATION")
    lease_renew_deadline_seconds: float = Field(10.0, alias="MODELROLLOUT_LEASE_RENEW_DEADLINE")
    lease_retry_period_seconds: float = Field(2.0, alias="MODELROLLOUT_LEASE_RETRY_PERIOD")
    pod_namespace: Annotated[str | None, BeforeValidator(_unset_if_empty)] = Field(
        None, alias="POD_NAMESPACE"
    )
    pod_name: Annotated[str | None, BeforeValidator(_unset_if_empty)] = Field(
        None, alias="POD_NAME"
    )

    @model_validator(mode="after")
    def _alert_receiver_has_a_token(self) -> Self:
        if self.alert_receiver_port is not None and self.alert_receiver_token_file is None:
            raise ValueError(
                "MODELROLLOUT_ALERT_RECEIVER_PORT needs MODELROLLOUT_ALERT_RECEIVER_TOKEN_FILE: "
                "the receiver accepts only requests bearing its token"
            )
        return self

    @model_validator(mode="after")
    def _leader_election_is_complete(self) -> Self:
        if not self.leader_election:
            return self
        if self.pod_namespace is None:
            raise ValueError("MODELROLLOUT_LEADER_ELECTION=on needs POD_NAMESPACE")
        try:
            self.lease_timing()
        except ValueError:
            raise ValueError(
                "leader election needs 0 < MODELROLLOUT_LEASE_RETRY_PERIOD "
                "< MODELROLLOUT_LEASE_RENEW_DEADLINE < MODELROLLOUT_LEASE_DURATION, got "
                f"{self.lease_retry_period_seconds} < {self.lease_renew_deadline_seconds} "
                f"< {self.lease_duration_seconds}"
            ) from None
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorSettings:
        """The settings `env` (os.environ) holds; SettingsError names every bad variable."""
        names = {field.alias for field in cls.model_fields.values() if field.alias is not None}
        try:
            return cls.model_validate({name: env[name] for name in names if name in env})
        except ValidationError as error:
            problems = []
            for problem in error.errors():
                message = problem["msg"].removeprefix("Value error, ")
                if problem["loc"]:
                    name = str(problem["loc"][0])
                    message = f"{name}={env.get(name, '')!r}: {message}"
                problems.append(message)
            raise SettingsError("; ".join(problems)) from None

    def notification_policy(self) -> RetryPolicy:
        return RetryPolicy(
            initial_backoff_seconds=self.notification_backoff_seconds,
            max_backoff_seconds=self.notification_max_backoff_seconds,
            budget_seconds=self.notification_retry_budget_seconds,
            timeout_seconds=self.notification_timeout_seconds,
        )

    @property
    def canary_resync_seconds(self) -> float:
        """A canary is ticked when its next timer is due, and at least this often."""
        return 5 * self.tick_interval_seconds

    def lease_timing(self) -> LeaseTiming:
        return LeaseTiming(
            lease_duration=self.lease_duration_seconds,
            renew_deadline=self.lease_renew_deadline_seconds,
            retry_period=self.lease_retry_period_seconds,
        )

    @property
    def lease_holder(self) -> str:
        """This replica's identity in the Lease: the pod's name, else host and process."""
        return self.pod_name or f"{socket.gethostname()}-{os.getpid()}"
