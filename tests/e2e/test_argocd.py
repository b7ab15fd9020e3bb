"""Argo CD's own code on real ModelRollouts: its health check and its diff, no ignoreDifferences.

`argocd-check` (dev/argocd-check, built by toolchain.ensure_argocd_check) is
Argo CD's Go module at the version its go.mod names, run the way its
application controller runs it for the Application in docs/argocd.md
(`syncOptions: [ServerSideApply=true]`, health check in argocd-cm, every other
setting Argo CD's default):

- a sync is what Argo CD's sync does with that option: the manifest from git,
  with the tracking annotation Argo CD sets, applied with `kubectl apply
  --server-side --force-conflicts --field-manager=argocd-controller`;
- health is gitops/argocd/health.lua through Argo CD's Lua runtime (util/lua);
- the diff is its comparison (util/argo/diff over gitops-engine pkg/diff): with
  ServerSideApply=true, a server-side dry-run apply as argocd-controller
  against the API server, compared with the live object.

The operator runs for real; kwok makes the pods Ready.
"""

from __future__ import annotations

import difflib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.kube.labels import GROUP
from modelrollout_dev import toolchain
from tests.conftest import ClusterUnderTest
from tests.support.rollouts import Rollouts, rollout_manifest
from tests.support.scenario import Scenario
from tests.unit.test_argocd_health import HEALTH_LUA
from tests.unit.test_argocd_health import health as plain_lua_health

pytestmark = [pytest.mark.e2e, pytest.mark.argocd]

Body = dict[str, Any]
APP = "chat-model"
STEPS: list[Body] = [{"setWeight": 50}, {"pause": {}}]
# What Argo CD's sync runs with `ServerSideApply=true` (gitops-engine kube.ApplyResource).
SYNC_FLAGS = ["--server-side", "--force-conflicts", "--field-manager=argocd-controller"]


@dataclass(frozen=True)
class Comparison:
    """Argo CD's diff: "" as drift when Synced; the live object as it compared it, and the
    live object it predicts once git is applied (a server-side dry run)."""

    drift: str
    normalized_live: Body
    predicted_live: Body


class ArgoCD:
    """One Application syncing one ModelRollout from a git checkout, as Argo CD sees it."""

    def __init__(self, binary: Path, kubeconfig: str, namespace: str, workdir: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.workdir = workdir
        self.git_file = workdir / "git" / "chat.yaml"
        self.git_file.parent.mkdir(parents=True)

    def _check(self, command: str, *args: str) -> Body:
        proc = subprocess.run(
            [str(self.binary), command, "--health-lua", str(HEALTH_LUA), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, f"argocd-check {command} failed: {proc.stderr}"
        result: Body = json.loads(proc.stdout)
        return result

    def _app_args(self) -> list[str]:
        return ["--app", APP, "--namespace", self.namespace, "--manifest", str(self.git_file)]

    def commit(self, manifest: Body) -> None:
        self.git_file.write_text(yaml.safe_dump(manifest, sort_keys=False))

    def sync(self, manifest: Body) -> Body:
        """Commit `manifest` and sync it; returns the rollout as the API server wrote it."""
        self.commit(manifest)
        target = self._check("target", *self._app_args())
        kubectl = [str(toolchain.expected_binaries().kubectl), "--kubeconfig", self.kubeconfig]
        proc = subprocess.run(
            [*kubectl, "apply", *SYNC_FLAGS, "-f", "-", "-o", "json"],
            input=json.dumps(target),
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, f"sync failed: {proc.stderr}"
        written: Body = json.loads(proc.stdout)
        return written

    def health(self, live: Body) -> tuple[str, str]:
        """Argo CD's health of `live`; the plain Lua interpreter must agree with it."""
        path = self.workdir / "live.json"
        path.write_text(json.dumps(live))
        result = self._check("health", "--object", str(path))
        argocd = (str(result["status"]), str(result["message"]))
        assert plain_lua_health(live, self.workdir) == argocd, "the two Lua runtimes disagree"
        return argocd

    def diff(self, live: Body) -> Comparison:
        """Argo CD's diff of the last commit against `live`."""
        path = self.workdir / "live.json"
        path.write_text(json.dumps(live))
        args = [*self._app_args(), "--live", str(path), "--kubeconfig", self.kubeconfig]
        result = self._check("diff", *args)
        normalized, predicted = result["normalizedLive"], result["predictedLive"]
        drift = ""
        if result["modified"]:
            live_lines, git_lines = (
                json.dumps(side, indent=1, sort_keys=True).splitlines()
                for side in (normalized, predicted)
            )
            drift = "\n".join(
                difflib.unified_diff(live_lines, git_lines, "live", "git", lineterm="")
            )
            drift = drift or "modified, yet no line differs"
        return Comparison(drift, normalized, predicted)


@pytest.fixture
def argocd(
    cluster_under_test: ClusterUnderTest, namespace: str, tmp_path: Path
) -> Iterator[ArgoCD]:
    # Built before any test ran (tests/conftest.py); missing here means that build is broken.
    binary = toolchain.argocd_check_binary()
    assert binary.is_file(), f"{binary} is missing: toolchain.ensure_argocd_check() builds it"
    yield ArgoCD(binary, cluster_under_test.kubeconfig, namespace, tmp_path)


def version_with(scenario: Scenario, status: Body) -> Body:
    """The rollout as the API server held it with this very status."""
    return next(
        body for body in scenario.statuses.versions(scenario.name) if body.get("status") is status
    )


def synced(argocd: ArgoCD, rollouts: Rollouts, when: str) -> Comparison:
    """Argo CD's diff says Synced, having compared the model git holds now."""
    comparison = argocd.diff(rollouts.get("chat"))
    assert comparison.drift == "", f"Argo CD sees drift {when}:\n{comparison.drift}"
    committed = yaml.safe_load(argocd.git_file.read_text())["spec"]["model"]
    assert comparison.predicted_live["spec"]["model"] == committed
    return comparison


def test_synced_and_truthful_through_a_canary_a_promotion_and_a_rollback(
    scenario: Scenario, argocd: ArgoCD, rollouts: Rollouts
) -> None:
    v1 = rollout_manifest("chat", "file:///models/v1", STEPS)
    scenario.given().rollout(v1, write=argocd.sync).ready()
    [created, *_] = scenario.statuses.versions("chat")
    assert argocd.health(created) == (
        "Progressing",
        "Waiting for the operator to observe the latest spec",
    )
    # Healthy once the operator has seen stable's pods Ready (condition Available), which
    # its tick after the pods' readiness writes: the Deployment's ready count comes first.
    scenario.then().expect_condition("Available", within=60)
    assert argocd.health(rollouts.get("chat"))[0] == "Healthy"
    synced(argocd, rollouts, "once the first sync Succeeded")

    # A commit changes the model: the canary runs, then pauses at 50%.
    v2 = rollout_manifest("chat", "file:///models/v2", STEPS)
    then = scenario.when().apply(v2, argocd.sync).then()
    progressing = then.expect_phase("Progressing", within=60).status
    assert argocd.health(version_with(scenario, progressing))[0] == "Progressing"
    paused = then.expect_phase("Paused", within=60).status
    assert paused["weights"]["canary"] == 50
    assert argocd.health(version_with(scenario, paused))[0] == "Suspended"
    synced(argocd, rollouts, "mid-canary, paused at 50%")

    # `kubectl modelrollout promote`: an annotation git does not hold.
    then = scenario.when().promote().then().expect_phase("Succeeded", within=90)
    assert then.status["stableRevision"] == scenario.new_revision
    assert argocd.health(version_with(scenario, then.status))[0] == "Healthy"
    compared = synced(argocd, rollouts, "after a promotion by annotation")
    # The command annotation was in the comparison, and is no drift.
    assert f"{GROUP}/promote" in compared.normalized_live["metadata"]["annotations"]

    # The next commit, then `kubectl modelrollout abort`: back to v2.
    v3 = rollout_manifest("chat", "file:///models/v3", STEPS)
    then = scenario.when().apply(v3, argocd.sync).then().expect_phase("Paused", within=60)
    synced(argocd, rollouts, "after a new commit, paused")
    then = scenario.when().abort().then().expect_phase("RolledBack", within=60)
    assert argocd.health(version_with(scenario, then.status))[0] == "Degraded"
    synced(argocd, rollouts, "after a rollback")

    # The diff can fail: a spec edited outside git is drift, and names the field.
    rollouts.patch_spec("chat", {"runtime": {"replicas": 3}})
    assert '"replicas": 3' in argocd.diff(rollouts.get("chat")).drift


def test_an_invalid_commit_is_degraded_and_still_synced(
    scenario: Scenario, argocd: ArgoCD, rollouts: Rollouts
) -> None:
    v1 = rollout_manifest("chat", "file:///models/v1", STEPS)
    scenario.given().rollout(v1, write=argocd.sync).ready()

    # The API server stores it; only the operator can judge it (so the scenario,
    # which reads each spec's revision, cannot: the watch is waited on directly).
    invalid = rollout_manifest("chat", "file:///models/v2", STEPS, progress_deadline="999999999h")
    generation = argocd.sync(invalid)["metadata"]["generation"]

    def judged() -> Body | None:
        return next(
            (
                body
                for body in scenario.statuses.versions("chat")
                if (body.get("status") or {}).get("observedGeneration") == generation
                and any(
                    c["type"] == "InvalidSpec" and c["status"] == "True"
                    for c in body["status"].get("conditions") or []
                )
            ),
            None,
        )

    invalid_version = scenario.statuses.wait_for(judged, 60, "InvalidSpec on the new commit")
    status, message = argocd.health(invalid_version)
    assert status == "Degraded"
    assert message.startswith("Invalid spec: spec.progressDeadline"), message
    synced(argocd, rollouts, "with an invalid spec")
