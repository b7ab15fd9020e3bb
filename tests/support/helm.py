"""Run the real helm on the chart (built before the run by tests/conftest.py)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from modelrollout_dev import toolchain

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelrollout"
# `helm template` has no cluster to ask; render for the version the local cluster runs.
KUBE_VERSION = toolchain.KUBERNETES_VERSION.removeprefix("v")


def helm(*args: str, kubeconfig: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(toolchain.expected_binaries().helm), *args]
    if kubeconfig is not None:
        command += ["--kubeconfig", kubeconfig]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)


def values_file(values: dict[str, Any], directory: Path) -> Path:
    path = Path(tempfile.mkstemp(suffix=".yaml", dir=directory)[1])
    path.write_text(yaml.safe_dump(values))
    return path


def render_text(
    tmp_path: Path, values: dict[str, Any] | None = None, namespace: str = "modelrollout-system"
) -> str:
    result = helm(
        "template",
        "mr",
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        "--values",
        str(values_file(values or {}, tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(
    tmp_path: Path, values: dict[str, Any] | None = None, namespace: str = "modelrollout-system"
) -> list[dict[str, Any]]:
    return [
        document
        for document in yaml.safe_load_all(render_text(tmp_path, values, namespace))
        if document
    ]


def only(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [document for document in documents if document["kind"] == kind]
    return found
