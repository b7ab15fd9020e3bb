"""The images, built by `make images` (scripts/build-images.sh) and run as containers.

The operator image, started with the chart's command, env and security context,
drives a canary on the local cluster's API server; the serving image, started with
the container the operator writes for a torch rollout, serves the tiny model,
answers its probe and drains on SIGTERM. Containers use the host's network, so they
reach the loopback API server and the test reaches them on a free port.

A cold build downloads torch and its CUDA libraries (minutes, gigabytes): the
`images` marker is out of the default selection (docs/development.md, "Images").
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from modelrollout.engine.revision import revision_of
from modelrollout.engine.runtimes import RuntimeSpec, build_container
from modelrollout.models import parse_spec
from modelrollout_dev import toolchain
from tests.conftest import ClusterUnderTest
from tests.support.helm import render
from tests.support.rollouts import Rollouts, rollout_manifest

BUILD_TIMEOUT_S = 3600
pytestmark = [pytest.mark.images, pytest.mark.timeout(BUILD_TIMEOUT_S + 600)]

REPO = Path(__file__).resolve().parents[2]
OPERATOR_IMAGE = "modelrollout/operator:dev"
SERVING_IMAGE = "modelrollout/modelserve:dev"
SERVING_E2E_IMAGE = "modelrollout/modelserve:e2e"
IMAGES = (OPERATOR_IMAGE, SERVING_IMAGE, SERVING_E2E_IMAGE)
# A regression guard, well above what it weighs (docs/development.md, "Images").
OPERATOR_IMAGE_MAX_BYTES = 400_000_000

# The images' python, to look inside them.
PYTHON_ENTRYPOINT = "--entrypoint=python"

STEPS: list[dict[str, Any]] = [
    {"setWeight": 25},
    {"pause": {"duration": "1s"}},
    {"setWeight": 50},
    {"pause": {"duration": "1s"}},
]


@dataclass(frozen=True)
class ContainerEngine:
    """docker, or podman with the flags this kind of host needs (as scripts/build-images.sh)."""

    command: str
    run_flags: tuple[str, ...]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.command, *args], capture_output=True, text=True, check=False, timeout=timeout
        )

    def run_container(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.run("run", "--rm", *self.run_flags, *args, timeout=timeout)

    def image_size(self, image: str) -> int:
        result = self.run("image", "inspect", "--format", "{{.Size}}", image)
        assert result.returncode == 0, result.stderr
        return int(result.stdout.strip())

    def logs(self, name: str) -> str:
        result = self.run("logs", "--tail", "120", name)
        return result.stdout + result.stderr

    def remove(self, name: str) -> None:
        self.run("rm", "--force", name)


def podman_run_flags() -> tuple[str, ...]:
    """crun fails on hybrid cgroups; podman's default rlimits exceed this host's hard ones."""
    runtime = os.environ.get("PODMAN_RUNTIME") or ("runc" if shutil.which("runc") else "")
    flags = ["--runtime", runtime] if runtime else []
    if os.environ.get("PODMAN_ULIMITS"):
        return (*flags, *os.environ["PODMAN_ULIMITS"].split())
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    return (*flags, "--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=4096:4096")


@pytest.fixture(scope="module")
def engine() -> ContainerEngine:
    chosen = os.environ.get("IMAGE_BUILDER")
    if not chosen:
        docker_answers = shutil.which("docker") is not None and (
            subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
        )
        chosen = "docker" if docker_answers else "podman"
    if shutil.which(chosen) is None:
        pytest.fail(f"the images tests need docker or podman; {chosen} is not installed")
    return ContainerEngine(chosen, podman_run_flags() if chosen == "podman" else ())


@pytest.fixture(scope="module")
def image_sizes(engine: ContainerEngine) -> dict[str, int]:
    """`make images` from this checkout (warm: the layer cache answers), then each size.

    MODELROLLOUT_IMAGES_BUILT=1 skips the build: the images as they are (e.g. while
    another `make images` is under way and must not be run twice at once).
    """
    if os.environ.get("MODELROLLOUT_IMAGES_BUILT") != "1":
        started = time.monotonic()
        result = subprocess.run(
            ["bash", "scripts/build-images.sh"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
            timeout=BUILD_TIMEOUT_S,
            env={**os.environ, "IMAGE_BUILDER": engine.command},
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        print(f"\nimages built in {time.monotonic() - started:.0f} s")
    sizes = {image: engine.image_size(image) for image in IMAGES}
    for image, size in sizes.items():
        print(f"{image}: {size / 1e6:.0f} MB")
    return sizes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http_ok(url: str, container: subprocess.Popen[str], timeout_s: float) -> None:
    """Until `url` answers 200; fails at once if the container exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert container.poll() is None, f"the container exited with {container.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 within {timeout_s} s")


@contextmanager
def container(engine: ContainerEngine, name: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`run` in the foreground, so its exit code is the container's; removed afterwards."""
    process = subprocess.Popen(
        [engine.command, "run", "--name", name, *engine.run_flags, "--network", "host", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield process
    except BaseException:
        print(f"--- {name} log ---\n{engine.logs(name)}")
        raise
    finally:
        engine.remove(name)
        process.wait(30)


def test_sizes_and_the_operator_image_carries_no_torch(
    engine: ContainerEngine, image_sizes: dict[str, int]
) -> None:
    assert image_sizes[OPERATOR_IMAGE] < OPERATOR_IMAGE_MAX_BYTES, image_sizes
    assert image_sizes[OPERATOR_IMAGE] < image_sizes[SERVING_IMAGE]

    operator_torch = engine.run_container(PYTHON_ENTRYPOINT, OPERATOR_IMAGE, "-c", "import torch")
    assert operator_torch.returncode != 0
    assert "No module named 'torch'" in operator_torch.stderr
    # The same command finds what the image does carry, and runs as the chart's user.
    controller = engine.run_container(
        PYTHON_ENTRYPOINT, OPERATOR_IMAGE, "-c", "import os, kopf, modelrollout; print(os.getuid())"
    )
    assert controller.returncode == 0, controller.stderr
    assert controller.stdout.strip() == "10001"
    serving_torch = engine.run_container(
        PYTHON_ENTRYPOINT, SERVING_IMAGE, "-c", "import torch; print(torch.__version__)"
    )
    assert serving_torch.returncode == 0, serving_torch.stderr
    assert serving_torch.stdout.startswith("2.9.1")


def test_serving_image_serves_the_tiny_model_and_drains_on_sigterm(
    engine: ContainerEngine, image_sizes: dict[str, int], tmp_path: Path
) -> None:
    from modelserve.tiny_model import make_tiny_model

    model = make_tiny_model(tmp_path / "model", seed=0)
    # The image runs as uid 10001: the model must be readable by others.
    for path in (tmp_path, *model.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    (tmp_path / "model").chmod(0o755)
    port = free_port()
    # The container the operator writes for a torch rollout of this model, plus a slow
    # token so that a request is still streaming when SIGTERM comes.
    spec = RuntimeSpec(
        engine="torch",
        image=SERVING_IMAGE,
        model_name="tiny",
        model_uri="file:///models/model",
        port=port,
        drain_timeout_s=20,
        args=["--fault-injection", "--fault-token-delay", "0.05"],
    )
    pod_container = build_container(spec)
    env = [f"--env={item['name']}={item['value']}" for item in pod_container["env"]]
    probe = pod_container["readinessProbe"]["httpGet"]["path"]
    base_url = f"http://127.0.0.1:{port}"
    name = f"mr-serving-{uuid.uuid4().hex[:8]}"
    with container(
        engine, name, f"--volume={model}:/models/model:ro", "--env=OMP_NUM_THREADS=1", *env,
        f"--entrypoint={pod_container['command'][0]}", SERVING_IMAGE,
        *pod_container["command"][1:], *pod_container["args"],
    ) as server:  # fmt: skip
        wait_http_ok(base_url + probe, server, 180)
        answer = httpx.post(
            base_url + "/v1/completions",
            json={"model": "tiny", "prompt": "Hello", "max_tokens": 4, "temperature": 0},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["finish_reason"] in {"length", "stop"}

        events: list[Any] = []
        body = {
            "model": "tiny", "prompt": "Tell me a story", "max_tokens": 40,
            "temperature": 0, "ignore_eos": True, "stream": True,
        }  # fmt: skip
        with httpx.stream("POST", base_url + "/v1/completions", json=body, timeout=60) as stream:
            lines = stream.iter_lines()
            events.append(json.loads(next(lines)[len("data: ") :]))
            # What the kubelet does: the image's STOPSIGNAL, then wait out the grace period.
            stop = engine.run("kill", "--signal", "SIGTERM", name)
            assert stop.returncode == 0, stop.stderr
            for line in lines:
                if line:
                    payload = line[len("data: ") :]
                    events.append(payload if payload == "[DONE]" else json.loads(payload))
        assert events[-1] == "[DONE]"
        assert events[-2]["choices"][0]["finish_reason"] == "length"
        assert server.wait(60) == 0
        assert "drain complete" in engine.logs(name)


def chart_operator_container(tmp_path: Path, namespace: str) -> dict[str, Any]:
    """The operator container of the chart's Deployment, watching `namespace` only."""
    toolchain.ensure_helm()
    values = {
        "watchNamespaces": [namespace],
        # The host's network is shared: ports of our own instead of 8080/8081.
        "metrics": {"port": free_port()},
        "health": {"port": free_port()},
    }
    deployment = next(
        document
        for document in render(tmp_path, values, namespace=namespace)
        if document["kind"] == "Deployment"
    )
    pod = deployment["spec"]["template"]["spec"]
    operator: dict[str, Any] = pod["containers"][0]
    operator["podSecurityContext"] = pod["securityContext"]
    return operator


def container_flags(operator: dict[str, Any], pod_name: str, namespace: str) -> list[str]:
    """The chart's env (the downward API's fields filled in) and security context as flags."""
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
    flags: list[str] = []
    for item in operator["env"]:
        value = (
            item["value"] if "value" in item else fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        )
        flags.append(f"--env={item['name']}={value}")
    security = operator["securityContext"]
    pod_security = operator["podSecurityContext"]
    flags.append(f"--user={pod_security['runAsUser']}:{pod_security['runAsGroup']}")
    if security.get("readOnlyRootFilesystem"):
        # The chart mounts an emptyDir on /tmp over the read-only root.
        flags += ["--read-only", "--tmpfs=/tmp"]
    if not security.get("allowPrivilegeEscalation", True):
        flags.append("--security-opt=no-new-privileges")
    flags += [f"--cap-drop={capability}" for capability in security["capabilities"]["drop"]]
    return flags


def flat_kubeconfig(kubeconfig: str, directory: Path) -> Path:
    """One file with the certificates inlined, readable by the image's user."""
    kubectl = toolchain.expected_binaries().kubectl
    flat = subprocess.run(
        [str(kubectl), "--kubeconfig", kubeconfig, "config", "view", "--flatten", "--minify"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = directory / "kubeconfig"
    path.write_text(flat)
    path.chmod(0o644)
    return path


def test_operator_image_with_the_charts_command_and_env_completes_a_canary(
    engine: ContainerEngine,
    image_sizes: dict[str, int],
    cluster_under_test: ClusterUnderTest,
    kube_api_client: client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    operator = chart_operator_container(tmp_path, namespace)
    assert f"--namespace={namespace}" in operator["command"]
    health_port = next(p for p in operator["ports"] if p["name"] == "health")["containerPort"]
    pod_name = f"mr-operator-{uuid.uuid4().hex[:8]}"
    kubeconfig = flat_kubeconfig(cluster_under_test.kubeconfig, tmp_path)
    with container(
        engine, pod_name, f"--volume={kubeconfig}:/etc/modelrollout/kubeconfig:ro",
        "--env=KUBECONFIG=/etc/modelrollout/kubeconfig",
        *container_flags(operator, pod_name, namespace),
        f"--entrypoint={operator['command'][0]}", OPERATOR_IMAGE, *operator["command"][1:],
    ) as operator_container:  # fmt: skip
        # The chart's liveness and readiness probe.
        wait_http_ok(f"http://127.0.0.1:{health_port}/healthz", operator_container, 120)

        rollouts = Rollouts(kube_api_client, namespace)
        manifest = rollout_manifest("chat", "file:///models/v1", STEPS)
        rollouts.create(manifest)
        stable = rollouts.wait_phase("chat", {"Succeeded"}, 120)
        assert stable["stableRevision"] == revision_of(parse_spec(manifest["spec"]))

        updated = rollouts.patch_spec("chat", {"model": {"uri": "file:///models/v2"}})
        new_revision = revision_of(parse_spec(updated["spec"]))
        assert new_revision != stable["stableRevision"]
        status = rollouts.wait_phase("chat", {"Succeeded"}, 180)
        assert status["stableRevision"] == new_revision
        assert status["weights"] == {"stable": 100, "canary": 0, "mirror": 0}
        assert status["history"][0]["outcome"] == "Promoted"
        assert status["history"][0]["revision"] == new_revision
        # The chart's leader election ran: the container holds the Lease it names.
        env = {item["name"]: item.get("value") for item in operator["env"]}
        lease = client.CoordinationV1Api(kube_api_client).read_namespaced_lease(
            env["MODELROLLOUT_LEASE_NAME"], namespace
        )
        assert env["MODELROLLOUT_LEADER_ELECTION"] == "on"
        assert lease.spec.holder_identity == pod_name
