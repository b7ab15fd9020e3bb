"""The controller's distribution installed alone, as the operator image and a kubectl user get it.

Each test builds the root distribution from a copy of what it is made of
(pyproject.toml, README.md, operator/: a missing piece fails the build) and
installs it, NOT editable, into a fresh virtual environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[2]
PIP_TIMEOUT_S = 500

# Run inside the fresh environment: import every module of the installed
# package under the prefix argv[1] and not under argv[2] ("": none), then
# report which of the other distributions' packages (argv[3:]) it can see.
IMPORT_EVERY_MODULE = """
import importlib, importlib.util, json, pkgutil, sys
import modelrollout
prefix, skipped = sys.argv[1], sys.argv[2]
modules = sorted(
    m.name for m in pkgutil.walk_packages(modelrollout.__path__, "modelrollout.")
    if m.name.startswith(prefix) and not (skipped and m.name.startswith(skipped))
)
for name in modules:
    importlib.import_module(name)
print(json.dumps({
    "package_file": modelrollout.__file__,
    "modules": modules,
    "findable": [n for n in sys.argv[3:] if importlib.util.find_spec(n) is not None],
    "imported": sorted(n for n in sys.argv[3:] if n in sys.modules),
}))
"""
# The plugin's web dashboard needs its own extra; the controller does not import it.
DASHBOARD = "modelrollout.kubectl.dashboard"


def _clean_env() -> dict[str, str]:
    """This process's environment without what would put the checkout's sources on the path."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command,
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def controller_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    shutil.copy2(REPO / "pyproject.toml", source)
    shutil.copy2(REPO / "README.md", source)
    shutil.copytree(
        REPO / "operator",
        source / "operator",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    wheels = tmp_path_factory.mktemp("wheels")
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
        cwd=source,
    )
    (wheel,) = wheels.glob("modelrollout-*.whl")
    return wheel


def _fresh_venv(path: Path) -> Path:
    _run([sys.executable, "-m", "venv", str(path)], cwd=path.parent)
    return path / "bin"


def test_the_wheel_holds_only_the_controller_package(controller_wheel: Path) -> None:
    with zipfile.ZipFile(controller_wheel) as wheel:
        names = wheel.namelist()
    outside = [
        name
        for name in names
        if not name.startswith("modelrollout/") and not name.startswith("modelrollout-0")
    ]
    assert outside == []
    assert "modelrollout/main.py" in names
    assert not any(name.startswith("modelrollout/devcluster/") for name in names)
    # The dashboard's pages and its vendored chart library: nothing is fetched at run time.
    static = "modelrollout/kubectl/dashboard/static/"
    assert {
        f"{static}index.html",
        f"{static}rollout.js",
        f"{static}vendor/uPlot.iife.min.js",
        f"{static}vendor/uPlot.LICENSE",
    } <= set(names)


def test_controller_imports_every_module_without_torch_modelserve_or_dev_tooling(
    controller_wheel: Path, tmp_path: Path
) -> None:
    bin_dir = _fresh_venv(tmp_path / "operator-venv")
    _run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", f"{controller_wheel}[operator]"],
        cwd=tmp_path,
    )
    result = _run(
        [
            str(bin_dir / "python"),
            "-c",
            IMPORT_EVERY_MODULE,
            "modelrollout.",
            DASHBOARD,
            "torch",
            "modelserve",
            "modelrollout_dev",
            "starlette",
        ],
        cwd=tmp_path,
    )
    report = json.loads(result.stdout)
    # The installed copy, not the checkout's sources.
    assert report["package_file"].startswith(str(tmp_path / "operator-venv"))
    assert {
        "modelrollout.main",
        "modelrollout.kubectl.cli",
        "modelrollout.engine.runtimes",
        "modelrollout.models.uri",
    } <= set(report["modules"])
    assert report["findable"] == []
    assert report["imported"] == []


def test_plain_install_is_the_kubectl_plugin_with_client_dependencies_only(
    controller_wheel: Path, tmp_path: Path
) -> None:
    bin_dir = _fresh_venv(tmp_path / "plugin-venv")
    _run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", str(controller_wheel)], cwd=tmp_path
    )
    help_text = _run([str(bin_dir / "kubectl-modelrollout"), "--help"], cwd=tmp_path).stdout
    assert "usage:" in help_text
    missing = _run(
        [
            str(bin_dir / "python"),
            "-c",
            "import importlib.util, sys; "
            "print([n for n in sys.argv[1:] if importlib.util.find_spec(n) is not None])",
            "kopf",
            "prometheus_client",
            "prometheus_api_client",
            "torch",
            "modelserve",
        ],
        cwd=tmp_path,
    ).stdout
    assert missing.strip() == "[]"


def test_the_dashboard_extra_is_the_plugin_and_its_web_server_without_the_controller(
    controller_wheel: Path, tmp_path: Path
) -> None:
    bin_dir = _fresh_venv(tmp_path / "dashboard-venv")
    _run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", f"{controller_wheel}[dashboard]"],
        cwd=tmp_path,
    )
    result = _run(
        [
            str(bin_dir / "python"),
            "-c",
            IMPORT_EVERY_MODULE,
            "modelrollout.kubectl",
            "",
            "kopf",
            "prometheus_api_client",
            "torch",
            "modelserve",
            "modelrollout_dev",
        ],
        cwd=tmp_path,
    )
    report = json.loads(result.stdout)
    assert report["package_file"].startswith(str(tmp_path / "dashboard-venv"))
    assert f"{DASHBOARD}.server" in report["modules"]
    assert report["findable"] == []
    help_text = _run([str(bin_dir / "kubectl-modelrollout"), "dashboard", "--help"], cwd=tmp_path)
    assert "--address" in help_text.stdout
