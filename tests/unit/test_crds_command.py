"""`python dev/modelrollout_dev/crds.py`: one command writes the CRD to crds/ and the chart."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from modelrollout.models import crd

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMMAND = REPO / "dev" / "modelrollout_dev" / "crds.py"
CHART_COPY = Path("charts/modelrollout/files/crds") / crd.FILE_NAME


@pytest.fixture
def crds_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The command's module, writing under `tmp_path` instead of the repository."""
    spec = importlib.util.spec_from_file_location("crds_command", COMMAND)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    return module


def test_check_names_each_stale_file_and_writing_makes_both_identical(
    crds_command: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "crds").mkdir()
    (tmp_path / "crds" / crd.FILE_NAME).write_text(crd.crd_yaml())
    (tmp_path / CHART_COPY).parent.mkdir(parents=True)
    (tmp_path / CHART_COPY).write_text("# hand-edited\n")
    renamed = tmp_path / CHART_COPY.parent / "old-name.yaml"
    renamed.write_text("# a CRD the models no longer generate\n")

    assert crds_command.main(["--check"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{CHART_COPY} differs from the models: run make crds",
        f"{CHART_COPY.parent / 'old-name.yaml'} is not generated: run make crds",
    ]
    assert (tmp_path / CHART_COPY).read_text() == "# hand-edited\n"

    assert crds_command.main([]) == 0
    assert (tmp_path / CHART_COPY).read_bytes() == (tmp_path / "crds" / crd.FILE_NAME).read_bytes()
    assert (tmp_path / CHART_COPY).read_text() == crd.crd_yaml()
    assert not renamed.exists()
    assert crds_command.main(["--check"]) == 0


def test_writing_creates_missing_files(crds_command: ModuleType, tmp_path: Path) -> None:
    assert crds_command.main(["--check"]) == 1
    assert crds_command.main([]) == 0
    assert (tmp_path / "crds" / crd.FILE_NAME).read_text() == crd.crd_yaml()
    assert (tmp_path / CHART_COPY).read_text() == crd.crd_yaml()


def test_the_committed_files_pass_the_check() -> None:
    spec = importlib.util.spec_from_file_location("crds_command_repo", COMMAND)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0
