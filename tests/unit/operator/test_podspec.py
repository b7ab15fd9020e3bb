"""The pod of a revision as the controller builds it from a ModelRollout's spec."""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout.engine.podspec import PRE_STOP_SLEEP_SECONDS, build_pod_spec
from modelrollout.models import parse_spec
from tests.unit.operator.builders import example_spec

pytestmark = pytest.mark.unit


def pod_for(**runtime: Any) -> dict[str, Any]:
    body = example_spec()
    body["runtime"].update(runtime)
    return build_pod_spec(parse_spec(body))


def arg_value(container: dict[str, Any], flag: str) -> str:
    args: list[str] = container["args"]
    return args[args.index(flag) + 1]


@pytest.mark.parametrize(
    ("engine", "drain_flag"), [("vllm", "--shutdown-timeout"), ("torch", "--drain-timeout")]
)
def test_a_stopping_pod_leaves_the_endpoints_then_drains_within_its_grace_period(
    engine: str, drain_flag: str
) -> None:
    pod = pod_for(engine=engine, terminationGracePeriod="90s")
    container = pod["containers"][0]
    # Kubernetes' sleep action (1.30+): no shell or sleep binary needed in the engine's image.
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}
    drain_s = int(arg_value(container, drain_flag))
    assert drain_s > 0
    assert pod["terminationGracePeriodSeconds"] == 90
    assert PRE_STOP_SLEEP_SECONDS + drain_s < 90


def test_the_liveness_probe_outlasts_the_drain() -> None:
    pod = pod_for(terminationGracePeriod="10m")
    container = pod["containers"][0]
    liveness = container["livenessProbe"]
    drain_s = int(arg_value(container, "--shutdown-timeout"))
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > drain_s
