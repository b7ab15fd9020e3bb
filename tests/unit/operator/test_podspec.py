"""The pod of a revision as the controller builds it from a ModelRollout's spec."""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout.engine.podspec import PRE_STOP_SLEEP_SECONDS, build_pod_spec
from modelrollout.models import InvalidSpecError, parse_spec
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


def test_dev_shm_is_memory_of_the_size_the_spec_asks() -> None:
    assert pod_for()["volumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    pod = pod_for(shmSize="16Gi")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["dshm"] == "/dev/shm"


@pytest.mark.parametrize("size", ["0", "0Gi", "2 GB", "-1Gi", "lots"])
def test_a_shm_size_that_is_no_positive_quantity_is_refused_naming_the_field(size: str) -> None:
    body = example_spec()
    body["runtime"]["shmSize"] = size
    with pytest.raises(InvalidSpecError) as refused:
        parse_spec(body)
    assert refused.value.field_path == "spec.runtime.shmSize"


def spec_with(gpus: int | None, args: list[str], heads: int | None = None) -> dict[str, Any]:
    body = example_spec()
    body["runtime"]["resources"] = {} if gpus is None else {"limits": {"nvidia.com/gpu": gpus}}
    body["runtime"]["args"] = args
    if heads is not None:
        body["model"]["attentionHeads"] = heads
    return body


@pytest.mark.parametrize(
    ("gpus", "args", "heads", "field", "words"),
    [
        (4, [], 6, "spec.model.attentionHeads", "tensor-parallel size 4"),
        (2, ["--tensor-parallel-size", "3"], None, "spec.runtime.args[1]", "needs 3 GPUs"),
        (8, ["-tp=4"], 6, "spec.model.attentionHeads", "tensor-parallel size 4"),
        (None, ["-tp", "2"], None, "spec.runtime.args[1]", "needs 2 GPUs"),
        (1, ["--tensor-parallel-size=two"], None, "spec.runtime.args[0]", "whole number"),
        (1, ["--tensor-parallel-size", "0"], None, "spec.runtime.args[1]", "whole number"),
    ],
)
def test_a_tensor_parallel_size_that_cannot_work_is_refused_naming_the_field(
    gpus: int | None, args: list[str], heads: int | None, field: str, words: str
) -> None:
    with pytest.raises(InvalidSpecError) as refused:
        parse_spec(spec_with(gpus, args, heads))
    assert refused.value.field_path == field
    assert words in refused.value.message


@pytest.mark.parametrize(
    ("gpus", "args", "heads", "size"),
    [
        (4, [], 32, "4"),
        (None, [], 7, "1"),
        (8, ["--tensor-parallel-size", "2"], 6, "2"),
        (2, [], None, "2"),
    ],
)
def test_a_tensor_parallel_size_that_fits_gpus_and_heads_is_what_vllm_gets(
    gpus: int | None, args: list[str], heads: int | None, size: str
) -> None:
    container = build_pod_spec(parse_spec(spec_with(gpus, args, heads)))["containers"][0]
    passed = [i for i, a in enumerate(container["args"]) if a.startswith(("-tp", "--tensor"))]
    # The user's size comes after the operator's: vLLM's argparse keeps the last.
    last = container["args"][passed[-1]]
    assert (last.partition("=")[2] or container["args"][passed[-1] + 1]) == size


def test_torch_rollouts_are_not_judged_by_vllm_flags() -> None:
    body = spec_with(1, ["-tp", "9"], heads=6)
    body["runtime"]["engine"] = "torch"
    parse_spec(body)
