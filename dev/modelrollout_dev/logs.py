"""Reading the log files of the processes the dev tooling starts."""

from __future__ import annotations

from pathlib import Path


def log_tail(path: Path, lines: int = 60) -> str:
    """The last `lines` lines of the log at `path`; empty when it is not there yet."""
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
