"""Shadow output comparison through the real gateway, with real model servers.

Traefik (which has no RequestMirror) serves the rollout's HTTPRoute (gatewayAPI
router) or a user's HTTPRoute to the rollout's Service (service router); during
the shadow the operator puts its comparison proxy (`chat-shadow-compare`, run by
the harness as its own `python -m modelrollout.shadowproxy` command) behind the
route's stable backendRef, or behind the Service's selector. The proxy answers
from stable and compares the candidate's answers; Prometheus scrapes it through
the API server and the comparison builtins judge the candidate. A revision with
the same weights agrees fully; one with different weights is rolled back on its
agreement. Users get stable's answers throughout.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from modelrollout.kube.api import DEPLOYMENTS, HTTPROUTES, SERVICES, KubeApi
from modelrollout.kube.labels import SHADOW_COMPARE_LABEL
from modelrollout_dev.load import served_revision, wait_until_served
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.podprocesses import PodProcesses
from modelrollout_dev.prometheus import PrometheusHandle
from modelrollout_dev.traefik import Traefik
from tests.e2e.test_canary_traffic import wait_for_servers
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest

pytestmark = [pytest.mark.e2e, pytest.mark.localharness]

PROMPTS = [
    "The capital of France is", "Once upon a time", "1, 2, 3, 4,", "def main():",
    "A model rollout", "The weather today", "In the beginning", "Dear team,",
    "The quick brown fox", "SELECT * FROM", "Kubernetes is", "To be or not",
]  # fmt: skip
# Each comparison measure as a check; only agreement is meant to breach.
CHECKS = [
    {"name": "agreement", "builtin": "outputAgreement", "breachWhen": "< 0.8"},
    {"name": "exact", "builtin": "exactMatchRate", "breachWhen": "< 0.5"},
    {"name": "length", "builtin": "lengthRatio", "breachWhen": "> 10", "action": "pause"},
    {"name": "empty", "builtin": "emptyAnswerRate", "breachWhen": "> 0.9", "action": "pause"},
    {"name": "latency", "builtin": "latencyRatio", "breachWhen": "> 20", "action": "pause"},
]


class Load:
    """Greedy completions of varied prompts through the gateway, one at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[str, str, int, str]] = []  # (prompt, revision, status, text)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            index = 0
            while not self._stop.is_set():
                prompt = PROMPTS[index % len(PROMPTS)]
                index += 1
                body = {"model": "chat", "prompt": prompt, "max_tokens": 8, "temperature": 0}
                try:
                    response = http.post(f"{self.url}/v1/completions", json=body)
                except httpx.HTTPError as error:
                    self.answers.append((prompt, "none", 0, repr(error)))
                    continue
                text = response.json()["choices"][0]["text"] if response.is_success else ""
                revision = served_revision(response.headers, "chat")
                self.answers.append((prompt, revision, response.status_code, text))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=40)


def stable_target(api: KubeApi, namespace: str, router: str) -> str:
    """Where stable's share goes: the route's first backendRef (gatewayAPI), or what the
    rollout's Service selects (service)."""
    if router == "service":
        service = api.get(SERVICES, namespace, "chat") or {}
        selector = (service.get("spec") or {}).get("selector") or {}
        return "chat-shadow-compare" if SHADOW_COMPARE_LABEL in selector else "stable pods"
    route = api.get(HTTPROUTES, namespace, "chat") or {}
    refs = ((route.get("spec") or {}).get("rules") or [{}])[0].get("backendRefs") or []
    return str(refs[0]["name"]) if refs else ""


def shadow_run(
    rollouts: Rollouts, api: KubeApi, router: str, label: str, spec_patch: dict[str, Any]
) -> dict[str, Any]:
    """Start a shadow with `spec_patch`, see the route go through the proxy and come back."""
    namespace = rollouts.namespace
    before = rollouts.status("chat")["stableRevision"]
    rollouts.patch_spec("chat", spec_patch)
    wait_until(
        lambda: stable_target(api, namespace, router) == "chat-shadow-compare",
        120,
        "stable's share on the comparison proxy",
    )
    ended = rollouts.wait_phase("chat", {"RolledBack", "Succeeded"}, 240)
    assert ended["stableRevision"] == before
    # Back on stable before the proxy went, and the proxy is gone.
    back = "stable pods" if router == "service" else f"chat-{before}"
    assert stable_target(api, namespace, router) == back
    wait_until(
        lambda: api.get(DEPLOYMENTS, namespace, "chat-shadow-compare") is None,
        30,
        "the comparison proxy deleted",
    )
    values = {check["name"]: check.get("value") for check in ended["checks"]}
    print(
        f"shadow comparison ({router} router), {label}: {values} ({ended['history'][0]['reason']})"
    )
    return ended


@pytest.fixture(params=["gatewayAPI", "service"])
def router(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def gateway_traffic(router: str, request: pytest.FixtureRequest) -> tuple[PodProcesses, Traefik]:
    """Traefik serving the rollout's HTTPRoute (gatewayAPI), or a user's HTTPRoute to the
    rollout's Service (service)."""
    pair: tuple[PodProcesses, Traefik] = request.getfixturevalue(
        "routed_traffic" if router == "gatewayAPI" else "traffic"
    )
    return pair


def test_same_weights_agree_and_different_weights_are_rolled_back_through_the_gateway(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    router: str,
    gateway_traffic: tuple[PodProcesses, Traefik],
    tiny_models: list[Path],
    prometheus: PrometheusHandle,
    kube_api_client: client.ApiClient,
) -> None:
    pods, gateway = gateway_traffic
    kube_api = KubeApi(kube_api_client)
    manifest = rollout_manifest(
        "chat",
        f"file://{tiny_models[0]}",
        [],
        router=router,
        placement=pods.placement(),
        analysis={
            "prometheus": {"address": prometheus.url, "timeout": "2s"},
            "interval": "1s",
            "checks": [{**check, "window": "30s", "minSamples": 10} for check in CHECKS],
            "whenMetricsUnavailable": {"action": "pause", "after": "120s"},
        },
    )
    manifest["spec"]["strategy"] = {
        "shadow": {
            "mirrorPercent": 50,
            "duration": "40s",
            "then": "stop",
            "comparison": {"window": "30s"},
        }
    }
    rollouts.create(manifest)
    stable = rollouts.wait_phase("chat", {"Succeeded"}, 60)["stableRevision"]
    wait_for_servers(pods, stable)
    wait_until_served(gateway.url, "chat")

    with Load(gateway.url) as load:
        # The same weights, another revision (an env change): full agreement, stopped healthy.
        same = shadow_run(
            rollouts,
            kube_api,
            router,
            "same weights",
            {"runtime": {**manifest["spec"]["runtime"], "env": [{"name": "RUN", "value": "2"}]}},
        )
        # Different weights: low agreement, rolled back on it.
        different = shadow_run(
            rollouts,
            kube_api,
            router,
            "different weights",
            {"model": {"name": "chat", "uri": f"file://{tiny_models[1]}"}},
        )

    same_values = {check["name"]: check["value"] for check in same["checks"]}
    assert same_values["agreement"] == pytest.approx(1.0), same["checks"]
    assert same_values["exact"] == pytest.approx(1.0), same["checks"]
    assert same_values["length"] == pytest.approx(1.0), same["checks"]
    assert "healthy" in same["history"][0]["reason"], same["history"][0]
    different_values = {check["name"]: check.get("value") for check in different["checks"]}
    assert different_values["agreement"] < 0.8, different["checks"]
    assert "agreement" in different["history"][0]["reason"], different["history"][0]

    # Users only ever got stable's answers: each prompt one answer, from stable's pods.
    assert load.answers, "no requests went through"
    assert {status for _, _, status, _ in load.answers} == {200}, load.answers[-5:]
    assert {revision for _, revision, _, _ in load.answers} == {stable}
    by_prompt: dict[str, set[str]] = {}
    for prompt, _, _, text in load.answers:
        by_prompt.setdefault(prompt, set()).add(text)
    assert all(len(texts) == 1 for texts in by_prompt.values()), by_prompt
