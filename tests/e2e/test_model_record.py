"""Each revision's model record, from the real operator and real modelserve processes.

The operator fetches a torch revision's GET /v1/model-record from a Ready
pod's own address once the revision has one (the harness's `pods` runs each
pod's `modelserve serve` command on the pod's IP, which the host reaches
through the pod network route), folds it into status.history, and
`kubectl modelrollout history --details` reads it back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.podprocesses import PodProcesses
from tests.conftest import ClusterUnderTest
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest

pytestmark = [pytest.mark.e2e, pytest.mark.localharness]

PLUGIN = str(Path(sys.executable).parent / "kubectl-modelrollout")


def reported_records(status: dict[str, Any], count: int) -> dict[str, dict[str, Any]] | None:
    """The history's records by revision once `count` revisions have their server's part."""
    records = {
        entry["revision"]: entry["record"]
        for entry in status.get("history") or []
        if (entry.get("record") or {}).get("reported")
    }
    return records if len(records) >= count else None


def test_history_details_show_the_records_of_both_revisions_after_a_promotion(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    pods: PodProcesses,
    tiny_models: list[Path],
    cluster_under_test: ClusterUnderTest,
) -> None:
    manifest = rollout_manifest(
        "chat",
        f"file://{tiny_models[0]}",
        [{"setWeight": 50}],
        replicas=1,
        placement=pods.placement(),
    )
    rollouts.create(manifest)
    first = rollouts.wait_phase("chat", {"Succeeded"}, 60)["stableRevision"]
    wait_until(
        lambda: reported_records(rollouts.status("chat"), 1), 120, "the first revision's record"
    )

    rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": f"file://{tiny_models[1]}"}})
    promoted = rollouts.wait_phase("chat", {"Succeeded"}, 120)
    second = promoted["stableRevision"]
    assert second != first
    records = wait_until(
        lambda: reported_records(rollouts.status("chat"), 2), 120, "both revisions' records"
    )
    assert set(records) == {first, second}
    for revision, model in ((first, tiny_models[0]), (second, tiny_models[1])):
        record = records[revision]
        assert record["uri"] == f"file://{model}"
        assert (record["name"], record["engine"]) == ("chat", "torch")
        assert record["parameters"] > 0 and record["contextLength"] > 0
        assert record["weights"]["digest"].startswith("sha256:")

    result = subprocess.run(
        [PLUGIN, "-n", rollouts.namespace, "history", "chat", "--details"],
        env={**os.environ, "KUBECONFIG": cluster_under_test.kubeconfig},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    newer, older = result.stdout.strip().split("\n\n")
    assert newer.startswith(f"Revision {second}: Promoted")
    assert older.startswith(f"Revision {first}: Promoted")
    for text, revision, model in ((newer, second, tiny_models[1]), (older, first, tiny_models[0])):
        assert f"URI:            file://{model}" in text
        assert "Engine:         torch" in text
        assert f"Parameters:     {records[revision]['parameters']:,}" in text
        assert f"Weights:        {records[revision]['weights']['digest']}" in text
    print(result.stdout)
