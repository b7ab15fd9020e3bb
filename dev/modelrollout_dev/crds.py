"""Write the ModelRollout CRD, generated from the pydantic models, to crds/ and the Helm chart.

    python -m modelrollout_dev.crds           # (make crds) rewrite both files
    python -m modelrollout_dev.crds --check   # write nothing; exit 1 naming each stale file

Both directories hold generated files only: a YAML file the models no longer
generate (a renamed CRD) is removed, and reported by --check.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from modelrollout.models import crd

ROOT = Path(__file__).resolve().parents[2]
# Where the models must come from: this checkout's, whatever environment runs the command.
MODELS = ROOT / "operator" / "modelrollout" / "models"
CRD_DIRS = ("crds", "charts/modelrollout/files/crds")


def stale_files(root: Path, expected: str) -> list[Path]:
    """The files under `root` that differ from `expected` or should not be there."""
    stale: list[Path] = []
    for directory in CRD_DIRS:
        target = root / directory / crd.FILE_NAME
        if not target.exists() or target.read_text() != expected:
            stale.append(target)
        stale += sorted(p for p in (root / directory).glob("*.yaml") if p.name != crd.FILE_NAME)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelrollout_dev.crds",
        description="Write the CRD generated from the models to crds/ and the chart.",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 naming each stale file"
    )
    args = parser.parse_args(argv)
    source = Path(crd.__file__).resolve().parent
    if source != MODELS.resolve():
        print(
            f"modelrollout is imported from {source.parent}, not {MODELS.parent}: "
            f"run with PYTHONPATH={ROOT / 'operator'} (or this checkout's venv)",
            file=sys.stderr,
        )
        return 2
    expected = crd.crd_yaml()
    stale = stale_files(ROOT, expected)
    if args.check:
        for path in stale:
            why = "differs from the models" if path.name == crd.FILE_NAME else "is not generated"
            print(f"{path.relative_to(ROOT)} {why}: run {crd.COMMAND}", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        if path.name == crd.FILE_NAME:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(expected)
            print(f"wrote {path.relative_to(ROOT)}")
        else:
            path.unlink()
            print(f"removed {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
