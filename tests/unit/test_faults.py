"""The chaos helper that stops a process and starts it again as it was (no cluster needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelrollout_dev import faults

pytestmark = pytest.mark.unit

# Prints what it was started with, then waits to be killed.
PROGRAM = (
    "import os, sys, time; "
    "print('up', sys.argv[1:], os.getcwd(), os.environ.get('FAULTS_MARK'), flush=True); "
    "time.sleep(120)"
)


def wait_for_lines(path: Path, count: int) -> list[str]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{path} has fewer than {count} lines: {path.read_text()!r}")


def test_a_stopped_process_starts_again_with_its_arguments_cwd_env_log_and_pid_file(
    tmp_path: Path,
) -> None:
    log, pid_file = tmp_path / "component.log", tmp_path / "component.pid"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", PROGRAM, "", "--node-ip=", "two words"],
            cwd=tmp_path,
            env={**os.environ, "FAULTS_MARK": "kept"},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file.write_text(str(process.pid))
    new_pid = None
    try:
        first = wait_for_lines(log, 1)[0]
        stopped = faults.stop_process(process.pid, pid_file=pid_file)
        assert process.wait(timeout=10) == -9  # SIGKILL, no goodbye
        assert not faults.process_alive(process.pid)
        assert stopped.image.log_path == log

        new_pid = stopped.start()
        assert new_pid != process.pid
        assert faults.process_alive(new_pid)
        assert pid_file.read_text() == str(new_pid)  # as kwokctl writes it: no newline
        lines = wait_for_lines(log, 2)
        assert lines[1] == first  # same arguments (empty ones too), cwd and environment
        assert first == f"up ['', '--node-ip=', 'two words'] {tmp_path} kept"
    finally:
        for pid in (process.pid, new_pid):
            if pid is not None:
                faults.kill(pid)
    assert new_pid is not None and not faults.process_alive(new_pid)


def test_stopping_a_process_that_is_not_there_says_so() -> None:
    with pytest.raises(faults.FaultError, match="cannot read process"):
        faults.stop_process(2**22 + 12345)
