"""docs/reference.md says what the CRD says, and the CRD and the pydantic spec models agree.

A field added to the CRD but not to models/spec.py (or the other way round),
a field without a description, a default that differs between the two, or a
CRD change without a regenerated reference fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from modelrollout.analysis.templates import TEMPLATE_VARIABLES
from modelrollout.models import ModelRolloutSpec
from modelrollout_dev import reference

pytestmark = pytest.mark.unit

# A table cell boundary: a `|` not escaped as `\|` (patterns contain escaped ones).
CELL_BOUNDARY = re.compile(r"(?<!\\)\|")


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return reference.load_crd()


def spec_rows(document: str) -> dict[str, list[str]]:
    """{path: cells} of every spec table row of the reference."""
    rows: dict[str, list[str]] = {}
    for line in document.splitlines():
        if line.startswith("| `spec."):
            cells = [cell.strip() for cell in CELL_BOUNDARY.split(line)[1:-1]]
            rows[cells[0].strip("`")] = cells
    return rows


def test_reference_is_generated_from_the_current_crd(crd: dict[str, Any]) -> None:
    path = reference.REFERENCE_PATH
    current = path.read_text() if path.exists() else ""
    assert current == reference.render_reference(crd), (
        f"docs/reference.md is out of date with the CRD: run `{reference.COMMAND}` "
        "(from the repository root, in the project's venv) and commit the result"
    )


def test_every_accepted_field_is_in_the_crd_and_the_reference_and_back(
    crd: dict[str, Any],
) -> None:
    accepted = set(reference.pydantic_fields(ModelRolloutSpec, "spec"))
    in_crd = {field.path for field in reference.spec_fields(crd)}
    assert sorted(accepted - in_crd) == [], "accepted by models/spec.py, missing from the CRD"
    assert sorted(in_crd - accepted) == [], "in the CRD, not accepted by models/spec.py"
    document = reference.render_reference(crd)
    # Object tables are headed by their items' path (`...checks[]`): the field is `...checks`.
    documented = {p.removesuffix("[]") for p in re.findall(r"`(spec\.[\w.\[\]]+)`", document)}
    assert sorted(accepted - documented) == [], "accepted by models/spec.py, not in the reference"
    assert sorted(documented - accepted) == [], "in the reference, not accepted by models/spec.py"


def test_every_spec_field_has_a_description(crd: dict[str, Any]) -> None:
    missing = [f.path for f in reference.spec_fields(crd) if not f.description.strip()]
    assert missing == [], "add a docstring to these fields in operator/modelrollout/models"


def test_crd_and_pydantic_agree_on_defaults(crd: dict[str, Any]) -> None:
    accepted = reference.pydantic_fields(ModelRolloutSpec, "spec")
    for field in reference.spec_fields(crd):
        if "default" in field.schema:
            info = accepted[field.path]
            assert not info.is_required(), f"{field.path}: CRD default on a required field"
            pydantic_default = info.get_default(call_default_factory=True)
            assert field.schema["default"] == pydantic_default, field.path
    operator_defaults = reference.operator_defaults()
    assert operator_defaults["spec.analysis.checks[].for"] == "0s"  # the walk reaches aliases
    rows = spec_rows(reference.render_reference(crd))
    for path in accepted:
        expected = (
            reference.format_default(operator_defaults[path]) if path in operator_defaults else ""
        )
        if path in rows:  # area objects are introduced above their tables, not in a row
            assert rows[path][2] == expected, f"{path}: documented default"


def test_crd_and_pydantic_agree_on_required_fields(crd: dict[str, Any]) -> None:
    accepted = reference.pydantic_fields(ModelRolloutSpec, "spec")
    disagree = [
        f.path for f in reference.spec_fields(crd) if f.required != accepted[f.path].is_required()
    ]
    assert disagree == [], "required in the CRD or in models/spec.py, not in both"


def test_template_variables_are_documented(crd: dict[str, Any]) -> None:
    fields = {f.path: f.description for f in reference.spec_fields(crd)}
    for path in ("spec.analysis.checks[].query", "spec.analysis.alerts[].matchLabels"):
        missing = [v for v in TEMPLATE_VARIABLES if "{{" + v + "}}" not in fields[path]]
        assert missing == [], f"{path}: describe these template variables"


def test_check_mode_reports_a_stale_reference_and_writing_fixes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "docs" / "reference.md"
    target.parent.mkdir()
    target.write_text("# stale\n")
    monkeypatch.setattr(reference, "ROOT", tmp_path)
    monkeypatch.setattr(reference, "REFERENCE_PATH", target)

    assert reference.main(["--check"]) == 1
    captured = capsys.readouterr()
    assert "-# stale" in captured.out and "+# ModelRollout reference" in captured.out
    assert reference.COMMAND in captured.err
    assert target.read_text() == "# stale\n"

    assert reference.main([]) == 0
    assert reference.main(["--check"]) == 0
