"""`python -m modelrollout_dev.crds`: one command writes the CRD to crds/ and the chart."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

import modelrollout_dev.crds
from modelrollout.models import crd

pytestmark = pytest.mark.unit

CHART_COPY = Path("charts/modelrollout/files/crds") / crd.FILE_NAME


@pytest.fixture
def crds_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The command's module, writing under `tmp_path` instead of the repository."""
    monkeypatch.setattr(modelrollout_dev.crds, "ROOT", tmp_path)
    return modelrollout_dev.crds


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
    assert modelrollout_dev.crds.main(["--check"]) == 0
