"""`kubectl modelrollout dashboard` against the real API server.

The dashboard runs as its command, with a kubeconfig as a user's; the test
writes the rollout's status as the operator would (the operator itself is
not needed to show what the dashboard reads and sends). What is checked:
pages see a status change and an Event without reloading, any number of
pages cost one watch per kind (counted by the API server itself, from its
`apiserver_longrunning_requests` gauge), a command sets the plugin's
annotation, the operator's own refusals come back with their reason, and a
user whose RBAC forbids patching sees the API server's 403 and its message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from modelrollout.kube.labels import GROUP, PLURAL, VERSION
from tests.conftest import ClusterUnderTest
from tests.support.dashboard import Dashboard, EventStream, viewer_kubeconfig
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest

pytestmark = pytest.mark.cluster

STEPS = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}]
SSE_SECONDS = 30


def write_status(
    rollouts: Rollouts, name: str, step: int, canary_weight: int, phase: str = "Progressing"
) -> None:
    """The status the operator writes for a canary at `step` (what the dashboard shows)."""
    generation = rollouts.get(name)["metadata"]["generation"]
    rollouts.custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        rollouts.namespace,
        PLURAL,
        name,
        {
            "status": {
                "phase": phase,
                "observedGeneration": generation,
                "stableRevision": "aaaaaaaaaa",
                "stableModel": "hf://acme/chat@v1",
                "canaryRevision": "bbbbbbbbbb",
                "canaryModel": "hf://acme/chat@v2",
                "currentStep": step,
                "weights": {"stable": 100 - canary_weight, "canary": canary_weight, "mirror": 0},
                "message": f"step {step + 1}/3",
            }
        },
    )


def watches(api_client: client.ApiClient, namespace_scope: bool = True) -> dict[str, float]:
    """Open WATCH requests per resource, namespace-scoped, as the API server counts them."""
    text = api_client.call_api(
        "/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False
    )[0].data.decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_longrunning_requests{") or 'verb="WATCH"' not in line:
            continue
        labels, value = line.rsplit(" ", 1)
        if namespace_scope and 'scope="namespace"' not in labels:
            continue
        resource = labels.split('resource="', 1)[1].split('"', 1)[0]
        counts[resource] = counts.get(resource, 0) + float(value)
    return counts


@pytest.fixture
def rollouts(kube_api_client: client.ApiClient, namespace: str) -> Rollouts:
    return Rollouts(kube_api_client, namespace)


@pytest.fixture
def dashboard(
    cluster_under_test: ClusterUnderTest, namespace: str, tmp_path: Path
) -> Iterator[Dashboard]:
    with Dashboard(cluster_under_test.kubeconfig, namespace, tmp_path / "dashboard.log") as d:
        yield d


def test_pages_update_live_from_one_watch_per_kind(
    kube_api_client: client.ApiClient,
    cluster_under_test: ClusterUnderTest,
    rollouts: Rollouts,
    namespace: str,
    tmp_path: Path,
) -> None:
    rollouts.create(rollout_manifest("chat", "hf://acme/chat@v2", STEPS))
    write_status(rollouts, "chat", step=0, canary_weight=25)
    before = watches(kube_api_client)
    with Dashboard(cluster_under_test.kubeconfig, namespace, tmp_path / "d.log") as dashboard:
        pages = [EventStream(f"{dashboard.url}/api/stream") for _ in range(3)]
        pages += [
            EventStream(f"{dashboard.url}/api/stream?rollout={namespace}/chat") for _ in range(2)
        ]
        for page in pages:
            page.__enter__()
        try:
            for page in pages[:3]:
                rows = page.wait_event("rows", lambda d: d["rows"], SSE_SECONDS, "the rows")
                assert rows["rows"][0]["weights"]["canary"] == 25
            for page in pages[3:]:
                page.wait_event("detail", lambda d: d["step"] == "1/3", SSE_SECONDS, "the view")

            write_status(rollouts, "chat", step=2, canary_weight=50)
            for page in pages[:3]:
                page.wait_event(
                    "row",
                    lambda d: d["step"] == "3/3" and d["weights"]["canary"] == 50,
                    SSE_SECONDS,
                    "the list row at step 3, 50%",
                )
            for page in pages[3:]:
                view = page.wait_event(
                    "detail", lambda d: d["step"] == "3/3", SSE_SECONDS, "the view at step 3"
                )
                assert [s["state"] for s in view["steps"]] == ["done", "done", "current"]
                assert [p["canary"] for p in view["weightHistory"]] == [25, 50]

            uid = rollouts.get("chat")["metadata"]["uid"]
            rollouts.core.create_namespaced_event(
                namespace,
                {
                    "metadata": {"generateName": "chat."},
                    "involvedObject": {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "ModelRollout",
                        "name": "chat",
                        "namespace": namespace,
                        "uid": uid,
                    },
                    "type": "Warning",
                    "reason": "CheckBreaching",
                    "message": "check error-rate is Breaching (0.2; breachWhen > 0.01)",
                    "source": {"component": "modelrollout"},
                },
            )
            for page in pages[:3]:
                page.wait_event(
                    "row",
                    lambda d: (d["lastEvent"] or {}).get("reason") == "CheckBreaching",
                    SSE_SECONDS,
                    "the last event on the row",
                )
            for page in pages[3:]:
                page.wait_event(
                    "detail",
                    lambda d: any(e["reason"] == "CheckBreaching" for e in d["events"]),
                    SSE_SECONDS,
                    "the event on the rollout's page",
                )

            # Five pages, yet one list and one watch of each kind, by the dashboard's count ...
            stats = dashboard.get("/api/stats")
            assert stats["pages"] == 5
            for kind in ("modelrollouts", "events"):
                assert stats["kinds"][kind]["lists"] == 1
                assert stats["kinds"][kind]["watches"] == 1
            # ... and by the API server's.
            during = watches(kube_api_client)
            for resource in ("modelrollouts", "events"):
                assert during.get(resource, 0) - before.get(resource, 0) == 1, (before, during)
        finally:
            for page in pages:
                page.__exit__()


def test_commands_go_through_the_plugin_and_refusals_keep_their_reason(
    rollouts: Rollouts, namespace: str, dashboard: Dashboard
) -> None:
    rollouts.create(rollout_manifest("chat", "hf://acme/chat@v2", STEPS))
    write_status(rollouts, "chat", step=1, canary_weight=25)
    wait_until(
        lambda: dashboard.get(f"/api/rollouts/{namespace}/chat").get("step") == "2/3",
        SSE_SECONDS,
        "the dashboard to see step 2",
    )
    answer = dashboard.command(namespace, "chat", "promote")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"message": "modelrollout.dev/chat promoted"}
    annotations = rollouts.get("chat")["metadata"]["annotations"]
    assert annotations.get("modelrollout.dev/promote")

    refused = dashboard.command(namespace, "chat", "resume")
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith(f"{namespace}/chat: ")
    assert "modelrollout.dev/resume" not in rollouts.get("chat")["metadata"]["annotations"]

    # A page of another site cannot send the header a command needs without a preflight.
    bare = httpx.post(f"{dashboard.url}/api/rollouts/{namespace}/chat/commands/pause", timeout=10)
    assert bare.status_code == 403
    assert "modelrollout.dev/pause" not in rollouts.get("chat")["metadata"]["annotations"]


def test_a_user_without_patch_rights_sees_the_api_servers_refusal(
    kube_api_client: client.ApiClient,
    cluster_under_test: ClusterUnderTest,
    rollouts: Rollouts,
    namespace: str,
    tmp_path: Path,
) -> None:
    rollouts.create(rollout_manifest("chat", "hf://acme/chat@v2", STEPS))
    write_status(rollouts, "chat", step=1, canary_weight=25)
    kubeconfig = viewer_kubeconfig(
        kube_api_client, cluster_under_test.kubeconfig, namespace, tmp_path / "viewer.yaml"
    )
    with Dashboard(kubeconfig, namespace, tmp_path / "viewer.log") as dashboard:
        view = dashboard.get(f"/api/rollouts/{namespace}/chat")
        assert view["commands"]["promote"] is None  # the operator would act on it ...
        answer = dashboard.command(namespace, "chat", "promote")
        assert answer.status_code == 403, answer.text
        # ... but RBAC says no, in the API server's own words.
        detail = answer.json()["detail"]
        assert f'User "system:serviceaccount:{namespace}:viewer" cannot patch resource' in detail
        assert f'"{PLURAL}" in API group "{GROUP}"' in detail
        assert "modelrollout.dev/promote" not in (
            rollouts.get("chat")["metadata"].get("annotations") or {}
        )


def test_a_kind_the_user_may_not_list_is_reported_to_the_pages(
    kube_api_client: client.ApiClient,
    cluster_under_test: ClusterUnderTest,
    rollouts: Rollouts,
    namespace: str,
    tmp_path: Path,
) -> None:
    rollouts.create(rollout_manifest("chat", "hf://acme/chat@v2", STEPS))
    kubeconfig = viewer_kubeconfig(
        kube_api_client, cluster_under_test.kubeconfig, namespace, tmp_path / "v.yaml", events=False
    )
    with (
        Dashboard(kubeconfig, namespace, tmp_path / "viewer.log") as dashboard,
        EventStream(f"{dashboard.url}/api/stream") as page,
    ):
        page.wait_event("rows", lambda d: len(d["rows"]) == 1, SSE_SECONDS, "the rollout's row")
        errors = page.wait_event("errors", lambda d: "events" in d, SSE_SECONDS, "the refusal")
        assert (
            f'User "system:serviceaccount:{namespace}:viewer" cannot list resource "events"'
            in (errors["events"])
        )
