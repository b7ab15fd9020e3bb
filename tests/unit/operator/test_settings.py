"""The operator's settings: read from the environment at start-up, bad values named."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import kopf
import pydantic
import pytest

from modelrollout.handlers.rollout import configure
from modelrollout.leader import LeaseTiming
from modelrollout.settings import OperatorSettings, SettingsError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
CHART_DEPLOYMENT = REPO / "charts" / "modelrollout" / "templates" / "deployment.yaml"


def test_no_variables_give_the_documented_defaults() -> None:
    settings = OperatorSettings.from_env({})
    assert settings.tick_interval_seconds == 2.0
    assert settings.resync_interval_seconds == 30.0
    assert settings.canary_resync_seconds == 10.0
    assert settings.concurrent_ticks == 32
    assert settings.check_status_refresh_seconds == 60.0
    assert settings.max_queries_in_flight == 8
    assert settings.metrics_port == 8080
    assert settings.leader_election is False
    assert settings.lease_name == "modelrollout-operator"
    assert settings.lease_timing() == LeaseTiming(15.0, 10.0, 2.0)
    assert settings.pod_namespace is None
    assert settings.evaluation_image is None
    assert settings.alert_receiver_port is None
    assert settings.lease_holder == f"{socket.gethostname()}-{os.getpid()}"


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("MODELROLLOUT_TICK_INTERVAL", "0.5", "tick_interval_seconds", 0.5),
        ("MODELROLLOUT_TICK_INTERVAL", "1", "canary_resync_seconds", 5.0),
        ("MODELROLLOUT_RESYNC_INTERVAL", "120", "resync_interval_seconds", 120.0),
        ("MODELROLLOUT_CONCURRENT_TICKS", "4", "concurrent_ticks", 4),
        ("MODELROLLOUT_CHECK_STATUS_REFRESH", "0", "check_status_refresh_seconds", 0.0),
        ("MODELROLLOUT_MAX_QUERIES_IN_FLIGHT", "2", "max_queries_in_flight", 2),
        ("MODELROLLOUT_NOTIFICATION_QUEUE_SIZE", "10", "notification_queue_size", 10),
        ("MODELROLLOUT_NOTIFICATION_TIMEOUT", "2.5", "notification_timeout_seconds", 2.5),
        ("MODELROLLOUT_NOTIFICATION_BACKOFF", "0.1", "notification_backoff_seconds", 0.1),
        ("MODELROLLOUT_NOTIFICATION_MAX_BACKOFF", "5", "notification_max_backoff_seconds", 5.0),
        ("MODELROLLOUT_NOTIFICATION_RETRY_BUDGET", "0", "notification_retry_budget_seconds", 0.0),
        ("MODELROLLOUT_METRICS_PORT", "9090", "metrics_port", 9090),
        ("MODELROLLOUT_METRICS_PORT", "off", "metrics_port", None),
        ("MODELROLLOUT_LEADER_ELECTION", "off", "leader_election", False),
        ("MODELROLLOUT_LEASE_NAME", "my-lease", "lease_name", "my-lease"),
        (
            "MODELROLLOUT_EVALUATION_IMAGE",
            "example.com/serving:1",
            "evaluation_image",
            "example.com/serving:1",
        ),
        ("MODELROLLOUT_EVALUATION_IMAGE", "", "evaluation_image", None),
        ("MODELROLLOUT_ALERT_RECEIVER_PORT", "off", "alert_receiver_port", None),
        (
            "MODELROLLOUT_ALERT_RECEIVER_TOKEN_FILE",
            "/etc/modelrollout/alert-receiver/token",
            "alert_receiver_token_file",
            Path("/etc/modelrollout/alert-receiver/token"),
        ),
        ("POD_NAME", "operator-0", "lease_holder", "operator-0"),
        ("POD_NAMESPACE", "ops", "pod_namespace", "ops"),
        # The chart's downward-API fields outside a pod: empty means unset.
        ("POD_NAMESPACE", "", "pod_namespace", None),
    ],
)
def test_each_variable_sets_its_setting(
    variable: str, value: str, attribute: str, expected: Any
) -> None:
    assert getattr(OperatorSettings.from_env({variable: value}), attribute) == expected


def test_leader_election_reads_the_lease_settings() -> None:
    settings = OperatorSettings.from_env(
        {
            "MODELROLLOUT_LEADER_ELECTION": "on",
            "POD_NAMESPACE": "ops",
            "POD_NAME": "operator-1",
            "MODELROLLOUT_LEASE_DURATION": "6",
            "MODELROLLOUT_LEASE_RENEW_DEADLINE": "3",
            "MODELROLLOUT_LEASE_RETRY_PERIOD": "0.5",
        }
    )
    assert settings.leader_election is True
    assert settings.lease_timing() == LeaseTiming(6.0, 3.0, 0.5)
    assert (settings.pod_namespace, settings.lease_holder) == ("ops", "operator-1")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MODELROLLOUT_TICK_INTERVAL", "fast"),
        ("MODELROLLOUT_TICK_INTERVAL", "0"),
        ("MODELROLLOUT_TICK_INTERVAL", "-1"),
        ("MODELROLLOUT_TICK_INTERVAL", "inf"),
        ("MODELROLLOUT_TICK_INTERVAL", ""),
        ("MODELROLLOUT_RESYNC_INTERVAL", "nan"),
        ("MODELROLLOUT_CONCURRENT_TICKS", "0"),
        ("MODELROLLOUT_CONCURRENT_TICKS", "2.5"),
        ("MODELROLLOUT_CHECK_STATUS_REFRESH", "-5"),
        ("MODELROLLOUT_NOTIFICATION_QUEUE_SIZE", "0"),
        ("MODELROLLOUT_NOTIFICATION_TIMEOUT", "0"),
        ("MODELROLLOUT_MAX_QUERIES_IN_FLIGHT", "0"),
        ("MODELROLLOUT_METRICS_PORT", "0"),
        ("MODELROLLOUT_METRICS_PORT", "70000"),
        ("MODELROLLOUT_METRICS_PORT", "disabled"),
        # Anything but on/off used to mean off silently.
        ("MODELROLLOUT_LEADER_ELECTION", "true"),
        ("MODELROLLOUT_LEASE_NAME", ""),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable_and_the_value(
    variable: str, value: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(f"{variable}={value!r}: ")):
        OperatorSettings.from_env({variable: value})


def test_every_bad_variable_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as refused:
        OperatorSettings.from_env(
            {"MODELROLLOUT_TICK_INTERVAL": "0", "MODELROLLOUT_CONCURRENT_TICKS": "many"}
        )
    assert "MODELROLLOUT_TICK_INTERVAL='0'" in str(refused.value)
    assert "MODELROLLOUT_CONCURRENT_TICKS='many'" in str(refused.value)


def test_leader_election_without_a_namespace_is_refused() -> None:
    with pytest.raises(SettingsError, match="MODELROLLOUT_LEADER_ELECTION=on needs POD_NAMESPACE"):
        OperatorSettings.from_env({"MODELROLLOUT_LEADER_ELECTION": "on"})


def test_the_alert_receiver_needs_a_token_file() -> None:
    with pytest.raises(SettingsError, match="needs MODELROLLOUT_ALERT_RECEIVER_TOKEN_FILE"):
        OperatorSettings.from_env({"MODELROLLOUT_ALERT_RECEIVER_PORT": "8443"})
    settings = OperatorSettings.from_env(
        {"MODELROLLOUT_ALERT_RECEIVER_PORT": "8443", "MODELROLLOUT_ALERT_RECEIVER_TOKEN_FILE": "/t"}
    )
    assert (settings.alert_receiver_port, settings.alert_receiver_token_file) == (8443, Path("/t"))


def test_lease_timings_out_of_order_are_refused_naming_the_three_variables() -> None:
    with pytest.raises(SettingsError) as refused:
        OperatorSettings.from_env(
            {
                "MODELROLLOUT_LEADER_ELECTION": "on",
                "POD_NAMESPACE": "ops",
                "MODELROLLOUT_LEASE_DURATION": "5",
            }
        )
    message = str(refused.value)
    for variable in (
        "MODELROLLOUT_LEASE_RETRY_PERIOD",
        "MODELROLLOUT_LEASE_RENEW_DEADLINE",
        "MODELROLLOUT_LEASE_DURATION",
    ):
        assert variable in message
    assert "2.0 < 10.0 < 5.0" in message


def test_variables_it_does_not_know_are_ignored() -> None:
    assert OperatorSettings.from_env({"PATH": "/bin", "MODELROLLOUT_UNKNOWN": "x"}) == (
        OperatorSettings.from_env({})
    )


def test_settings_are_frozen() -> None:
    settings = OperatorSettings.from_env({})
    with pytest.raises(pydantic.ValidationError):
        settings.tick_interval_seconds = 1.0  # type: ignore[misc]


def test_every_variable_the_chart_sets_is_a_setting() -> None:
    template = CHART_DEPLOYMENT.read_text()
    chart_sets = set(re.findall(r"- name: ((?:MODELROLLOUT|POD)_\w+)", template))
    known = {field.alias for field in OperatorSettings.model_fields.values()}
    assert chart_sets, "the chart's Deployment sets the operator's variables"
    assert chart_sets <= known, chart_sets - known


def test_importing_the_handlers_reads_no_environment() -> None:
    """A bad value fails the start-up handler, never the import of the operator's modules."""
    env = {**os.environ, "MODELROLLOUT_TICK_INTERVAL": "fast"}
    code = "import modelrollout.main, modelrollout.analysis.prometheus"
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def test_a_bad_value_stops_the_operator_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELROLLOUT_CONCURRENT_TICKS", "0")
    memo = kopf.Memo()
    with pytest.raises(kopf.PermanentError, match="MODELROLLOUT_CONCURRENT_TICKS='0'"):
        asyncio.run(configure(settings=kopf.OperatorSettings(), memo=memo))
    assert "operator" not in memo
