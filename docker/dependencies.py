"""Print the runtime requirements of distributions, one a line, for `pip install -r`.

The images install these in a layer of their own before any source is copied, so
that editing the code rebuilds only the small layer holding the project's wheels,
not the one holding torch. Each argument is a pyproject.toml, optionally with extras:

    python3 dependencies.py 'pyproject.toml[operator]' serving/pyproject.toml

Requirements on the listed distributions themselves are left out: they are built
from the sources, not fetched from an index. Standard library only: it runs on the
image's bare Python, before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

ARGUMENT = re.compile(r"^(?P<path>[^\[]+)(?:\[(?P<extras>[^\]]*)\])?$")
NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = NAME.match(requirement)
    if match is None:
        raise SystemExit(f"not a requirement: {requirement!r}")
    return normalized(match.group(1))


def main(arguments: list[str]) -> None:
    projects: list[tuple[dict[str, Any], list[str]]] = []
    for argument in arguments:
        match = ARGUMENT.match(argument)
        if match is None:
            raise SystemExit(f"expected PATH or PATH[extra,...], got {argument!r}")
        project = tomllib.loads(Path(match.group("path")).read_text())["project"]
        extras = [e.strip() for e in (match.group("extras") or "").split(",") if e.strip()]
        projects.append((project, extras))
    own = {normalized(str(project["name"])) for project, _ in projects}
    for project, extras in projects:
        requirements: list[str] = list(project.get("dependencies", []))
        for extra in extras:
            requirements += project["optional-dependencies"][extra]
        for requirement in requirements:
            if requirement_name(requirement) not in own:
                print(requirement)


if __name__ == "__main__":
    main(sys.argv[1:])
