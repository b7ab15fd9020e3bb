"""`kubectl modelrollout` as a user runs it, against the real operator on the local cluster.

The plugin runs as its console script (`kubectl-modelrollout`, what kubectl
execs for `kubectl modelrollout`) in a subprocess with KUBECONFIG pointing at
the cluster under test; the assertions are on what it prints and on what the
operator then does. Pods run no containers (kwok), and the one check queries
a constant from the real Prometheus, so no model traffic is involved.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import pytest

from modelrollout.engine.revision import revision_of
from modelrollout.models import parse_spec
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.prometheus import PrometheusHandle
from tests.conftest import ClusterUnderTest
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest, with_model
from tests.support.scenario import Scenario
from tests.support.status_watch import Recording

pytestmark = pytest.mark.e2e

PLUGIN = str(Path(sys.executable).parent / "kubectl-modelrollout")
STEPS = [
    {"setWeight": 25},
    {"pause": {}},
    {"setWeight": 50},
    {"analysis": {"duration": "60s"}},
    {"setWeight": 75},
]


def revision(manifest: dict[str, Any]) -> str:
    return revision_of(parse_spec(manifest["spec"]))


class Plugin:
    """Runs `kubectl modelrollout -n <namespace> ...` the way a user's shell would."""

    def __init__(self, cluster: ClusterUnderTest, namespace: str) -> None:
        self.env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
        self.namespace = namespace

    def argv(self, *args: str) -> list[str]:
        return [PLUGIN, "-n", self.namespace, *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), env=self.env, capture_output=True, text=True, timeout=60
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr}"
        return result.stdout


def table_rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().split("\n")]


def section(text: str, title: str) -> list[str]:
    lines = text.split("\n")
    rest = lines[lines.index(f"{title}:") + 1 :]
    end = next((i for i, line in enumerate(rest) if not line.startswith("  ")), len(rest))
    return rest[:end]


def check_analysis(prometheus: PrometheusHandle) -> dict[str, Any]:
    return {
        "prometheus": {"address": prometheus.url, "timeout": "2s"},
        "interval": "1s",
        "checks": [
            {
                "name": "error-rate",
                "query": "vector(0.002)",
                "breachWhen": "> 0.01",
                "action": "rollback",
            }
        ],
    }


def test_list_get_pause_resume_promote_and_history(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    cluster_under_test: ClusterUnderTest,
    namespace: str,
    prometheus: PrometheusHandle,
) -> None:
    plugin = Plugin(cluster_under_test, namespace)
    v1 = rollout_manifest("chat", "file:///models/v1", STEPS, analysis=check_analysis(prometheus))
    rollouts.create(v1)
    rollouts.wait_phase("chat", {"Succeeded"}, 60)
    rows = table_rows(plugin.ok("list"))
    assert rows[0] == ["NAME", "PHASE", "STRATEGY", "STEP", "WEIGHT", "STABLE", "CANARY", "AGE"]
    assert rows[1][:7] == ["chat", "Succeeded", "canary", "-", "0%", revision(v1), "-"]

    v2 = with_model(v1, "file:///models/v2")
    rollouts.patch_spec("chat", {"model": v2["spec"]["model"]})
    rollouts.wait_phase("chat", {"Paused"}, 60)
    wait_until(
        lambda: any(c.get("state") == "Passing" for c in rollouts.status("chat").get("checks", [])),
        30,
        "the check to pass against Prometheus",
    )
    shown = plugin.ok("get", "chat")
    assert "Phase:       Paused (PauseStep)" in shown
    assert section(shown, "Steps")[:3] == [
        "  ✔ 1  setWeight 25",
        "  ▶ 2  pause until promoted   (paused: PauseStep)",
        "    3  setWeight 50",
    ]
    check = next(line.split() for line in section(shown, "Checks") if "error-rate" in line)
    assert check[:5] == ["error-rate", "0.002", ">", "0.01", "Passing"]
    revisions = {line.split()[0]: line.split() for line in section(shown, "Revisions")[1:]}
    assert revisions["canary"][1:4] == [revision(v2), "chat", "file:///models/v2"]
    assert revisions["stable"][1:4] == [revision(v1), "chat", "file:///models/v1"]
    assert "Weights:     stable 75%   canary 25%   mirror 0%" in shown
    assert any("CanaryStarted" in line for line in section(shown, "Events"))
    assert table_rows(plugin.ok("ls"))[1][3:5] == ["2/5", "25%"]
    generation = rollouts.get("chat")["metadata"]["generation"]

    assert plugin.ok("promote", "chat") == "modelrollout.dev/chat promoted\n"
    wait_until(
        lambda: rollouts.status("chat").get("currentStep") == 3, 30, "the analysis step (4/5)"
    )
    assert plugin.ok("pause", "chat") == "modelrollout.dev/chat paused\n"
    paused = wait_until(
        lambda: (s := rollouts.status("chat"))["phase"] == "Paused" and s, 30, "a user pause"
    )
    assert (paused["pauseReason"], paused["currentStep"]) == ("UserPaused", 3)
    again = plugin.run("pause", "chat")
    assert again.returncode == 1
    assert again.stderr == f"error: {namespace}/chat: already paused (UserPaused)\n"

    assert plugin.ok("resume", "chat") == "modelrollout.dev/chat resumed\n"
    resumed = wait_until(
        lambda: (s := rollouts.status("chat"))["phase"] == "Progressing" and s, 30, "the resume"
    )
    assert resumed["currentStep"] == 3
    assert plugin.ok("promote", "chat") == "modelrollout.dev/chat promoted\n"
    rollouts.wait_phase("chat", {"Succeeded"}, 60)

    history = table_rows(plugin.ok("history", "chat"))
    assert history[0] == ["REVISION", "MODEL", "OUTCOME", "AT", "REASON"]
    assert [row[:3] for row in history[1:]] == [
        [revision(v2), "file:///models/v2", "Promoted"],
        [revision(v1), "file:///models/v1", "Promoted"],
    ]
    refused = plugin.run("promote", "chat", "--full")
    assert refused.returncode == 1
    assert refused.stderr == (
        f"error: {namespace}/chat: nothing to promote: no canary is progressing (phase Succeeded)\n"
    )
    # Commands are annotations: the spec never changed.
    assert rollouts.get("chat")["metadata"]["generation"] == generation


def test_undo_restores_the_previous_model_then_abort_and_retry(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    cluster_under_test: ClusterUnderTest,
    namespace: str,
) -> None:
    plugin = Plugin(cluster_under_test, namespace)
    steps = [{"setWeight": 50}, {"pause": {}}]
    v1 = rollout_manifest("chat", "file:///models/v1", steps)
    rollouts.create(v1)
    rollouts.wait_phase("chat", {"Succeeded"}, 60)
    # v2 adds a runtime field: undo must drop it, not merge the old spec over it.
    v2 = rollout_manifest("chat", "file:///models/v2", steps, args=["--max-model-len=4096"])
    rollouts.patch_spec("chat", {"model": v2["spec"]["model"], "runtime": v2["spec"]["runtime"]})
    rollouts.wait_phase("chat", {"Paused"}, 60)
    plugin.ok("promote", "chat")
    assert rollouts.wait_phase("chat", {"Succeeded"}, 60)["stableRevision"] == revision(v2)

    undone = plugin.ok("undo", "chat")
    assert undone == (
        f"modelrollout.dev/chat rolled back to revision {revision(v1)} (file:///models/v1)\n"
    )
    spec = rollouts.get("chat")["spec"]
    assert spec["model"] == v1["spec"]["model"]
    assert "args" not in spec["runtime"]
    assert revision_of(parse_spec(spec)) == revision(v1)
    status = rollouts.wait_phase("chat", {"Paused"}, 60)
    assert (status["stableRevision"], status["canaryRevision"]) == (revision(v2), revision(v1))
    shown = plugin.ok("get", "chat")
    revisions = {line.split()[0]: line.split() for line in section(shown, "Revisions")[1:]}
    assert revisions["canary"][1:4] == [revision(v1), "chat", "file:///models/v1"]
    again = plugin.run("undo", "chat")
    assert again.returncode == 1
    assert f"already at revision {revision(v1)}" in again.stderr

    assert plugin.ok("abort", "chat") == "modelrollout.dev/chat aborted\n"
    status = rollouts.wait_phase("chat", {"RolledBack"}, 60)
    assert status["weights"]["canary"] == 0
    assert status["history"][0]["outcome"] == "Aborted"
    shown = plugin.ok("get", "chat")
    assert "  ✘ 2  pause until promoted   (rolled back here)" in shown

    assert plugin.ok("retry", "chat") == "modelrollout.dev/chat retried\n"
    status = rollouts.wait_phase("chat", {"Paused"}, 60)
    assert status["canaryRevision"] == revision(v1)

    unknown = plugin.run("undo", "chat", "--to-revision", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith(f"error: {namespace}/chat: unknown revision nope; ")
    assert f"{revision(v2)} (Promoted)" in unknown.stderr


PLANTED = "hf_PLANTED_e2e_0123456789abcdef"


def test_a_planted_env_value_stays_out_of_status_events_and_logs_and_undo_restores_it(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    cluster_under_test: ClusterUnderTest,
    namespace: str,
) -> None:
    plugin = Plugin(cluster_under_test, namespace)
    steps = [{"setWeight": 50}, {"pause": {}}]
    env = [
        {"name": "HF_TOKEN", "value": PLANTED},
        {"name": "GATED", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
    ]
    v1 = rollout_manifest("chat", "file:///models/v1", steps, env=env)
    rollouts.create(v1)
    rollouts.wait_phase("chat", {"Succeeded"}, 60)
    # A canary rolled back, then another promoted: history records both.
    v2 = with_model(v1, "file:///models/v2")
    rollouts.patch_spec("chat", {"model": v2["spec"]["model"]})
    rollouts.wait_phase("chat", {"Paused"}, 60)
    plugin.ok("abort", "chat")
    rollouts.wait_phase("chat", {"RolledBack"}, 60)
    v3 = with_model(v1, "file:///models/v3")
    rollouts.patch_spec("chat", {"model": v3["spec"]["model"]})
    rollouts.wait_phase("chat", {"Paused"}, 60)
    plugin.ok("promote", "chat")
    status = rollouts.wait_phase("chat", {"Succeeded"}, 60)
    assert [entry["outcome"] for entry in status["history"]][:2] == ["Promoted", "Aborted"]
    stored_env = status["history"][0]["spec"]["runtime"]["env"]
    assert stored_env[0]["valueHash"].startswith("sha256:")
    assert stored_env[1] == env[1]

    # undo finds the value in the current spec, so it writes exactly v1 back.
    plugin.ok("undo", "chat", "--to-revision", revision(v1))
    spec = rollouts.get("chat")["spec"]
    assert spec["runtime"]["env"] == env
    assert revision_of(parse_spec(spec)) == revision(v1)
    rollouts.wait_phase("chat", {"Paused"}, 60)

    assert PLANTED not in json.dumps(rollouts.status("chat"))
    events = [event.to_dict() for event in rollouts.events("chat")]
    assert events and PLANTED not in json.dumps(events, default=str)
    # At the default verbosity (the chart's operator.logLevel info).
    log = operator_process.log_path.read_text(errors="replace")
    assert "Operator is" in log or "succeeded" in log
    assert PLANTED not in log


class PrintedLines(Recording):
    """What a running command prints, line by line as it arrives."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def text(self) -> str:
        return "".join(self.lines)

    def frames(self) -> list[str]:
        """`get --watch` frames printed so far, complete or not, split at their blank line."""
        return self.text().rstrip("\n").split("\n\n")

    def join(self, timeout: float) -> None:
        self._reader.join(timeout)


def without_ages(frame: str) -> str:
    """A frame with its ages (45s, 3m20s, ...) masked and columns closed up."""
    return " ".join(re.sub(r"\b\d+[smhdy](\d+[smh])?\b", "<age>", frame).split())


def test_get_watch_prints_a_new_frame_when_the_phase_changes(
    scenario: Scenario, cluster_under_test: ClusterUnderTest, namespace: str, tmp_path: Path
) -> None:
    plugin = Plugin(cluster_under_test, namespace)
    steps = [{"setWeight": 50}, {"pause": {}}]
    scenario.given().rollout(rollout_manifest("chat", "file:///models/v1", steps)).ready()
    # stderr to a file: a pipe nobody reads blocks the plugin once it holds 64 KiB.
    errors = tmp_path / "watch.stderr"
    watcher = subprocess.Popen(
        plugin.argv("get", "chat", "--watch"),
        env=plugin.env,
        stdout=subprocess.PIPE,
        stderr=errors.open("w"),
        text=True,
    )
    assert watcher.stdout is not None
    printed = PrintedLines(watcher.stdout)
    try:
        printed.wait_for(lambda: "Phase:       Succeeded" in printed.text(), 60, "the first frame")
        then = scenario.when().update_model("file:///models/v2").then()
        then.expect_phase("Paused", within=60).expect_replicas(
            scenario.new_revision, 1, ready=True, within=60
        )
        # What the user waits for: the pause, with the canary's pod and stable's two Ready.
        printed.wait_for(
            lambda: any(
                "Phase:       Paused (PauseStep)" in frame
                and re.search(r"^\s+canary\s.*\s1/1$", frame, re.MULTILINE)
                and re.search(r"^\s+stable\s.*\s2/2$", frame, re.MULTILINE)
                for frame in printed.frames()
            ),
            60,
            "a frame of the pause with every pod Ready",
        )
        # A window for ages to tick: a paused rollout changes nothing, so no frame should
        # come from ages alone (the plugin re-reads every second).
        scenario.when().ticks_pass(6)
    finally:
        watcher.send_signal(signal.SIGINT)
        try:
            code = watcher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # Killed, so that a failure above is reported rather than this wait.
            watcher.kill()
            code = watcher.wait()
        printed.join(timeout=10)
    assert code == 0, f"get --watch ended with {code} on Ctrl-C; stderr: {errors.read_text()}"

    text = printed.text()
    assert "\x1b" not in text, "no terminal control codes when stdout is not a terminal"
    frames = printed.frames()
    assert all(frame.startswith("Name:        chat\n") for frame in frames), frames
    assert "Phase:       Succeeded" in frames[0]
    paused = next(frame for frame in frames if "Phase:       Paused" in frame)
    assert "  ▶ 2  pause until promoted   (paused: PauseStep)" in paused
    repeats = [
        (before, after)
        for before, after in itertools.pairwise(frames)
        if without_ages(before) == without_ages(after)
    ]
    assert repeats == [], "a frame that only ages changed"


def test_errors_read_like_kubectl_and_exit_1(
    cluster_under_test: ClusterUnderTest, namespace: str
) -> None:
    plugin = Plugin(cluster_under_test, namespace)
    for args in (("get", "nope"), ("promote", "nope"), ("undo", "nope")):
        result = plugin.run(*args)
        assert result.returncode == 1, args
        assert result.stderr == 'error: modelrollouts.modelrollout.dev "nope" not found\n'
        assert result.stdout == ""
    usage = plugin.run("promote")
    assert usage.returncode == 1
    assert "error: the following arguments are required: NAME" in usage.stderr
    empty = plugin.run("list")
    assert (empty.returncode, empty.stderr) == (
        0,
        f"No resources found in {namespace} namespace.\n",
    )
