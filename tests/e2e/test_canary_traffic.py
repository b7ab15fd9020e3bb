"""Rollouts driven by real traffic through real model server processes.

One stand-in, and nothing else: `PodProcesses`, the kubelet, runs the pod's own
`modelserve serve` command for each pod kwok schedules (kwok runs no
containers), on the pod's own address. Traefik routes requests as the Service
(through a user's HTTPRoute to it) or the rollout's own HTTPRoute says, and
Prometheus finds the pods through the API server. The operator, the API server,
the scheduler, Traefik, Prometheus, the model servers and their metrics are all
real. The shadow test alone mirrors through the project's proxy (Traefik has no
RequestMirror).
"""

from __future__ import annotations

import ipaddress
import json
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelrollout.kube.api import ENDPOINT_SLICES, KubeApi
from modelrollout.kube.cache import SERVICE_NAME_LABEL
from modelrollout.traffic.gatewayapi import PREVIEW_HEADER
from modelrollout_dev.gateway import Gateway
from modelrollout_dev.load import BackgroundLoad, wait_until_served
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.podnetwork import PodNetwork, on_host_interface
from modelrollout_dev.podprocesses import PodProcesses
from modelrollout_dev.prometheus import PrometheusHandle
from modelrollout_dev.traefik import Traefik
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, StatusRecorder, rollout_manifest
from tests.support.serving_placement import ServingPlacement

pytestmark = [pytest.mark.e2e, pytest.mark.localharness]


def analysis(prometheus: PrometheusHandle) -> dict[str, Any]:
    return {
        "prometheus": {"address": prometheus.url, "timeout": "2s"},
        "interval": "1s",
        "checks": [
            {
                "name": "error-rate",
                "builtin": "errorRate",
                "window": "10s",
                "breachWhen": "> 0.2",
                "for": "2s",
                "action": "rollback",
            }
        ],
        "whenMetricsUnavailable": {"action": "pause", "after": "60s"},
    }


def wait_for_servers(pods: PodProcesses, revision: str, count: int = 2) -> None:
    """Until `count` real servers of `revision` answer: kwok's Ready comes before they load."""
    deadline = time.monotonic() + 90
    while sum(1 for e in pods.endpoints().values() if e.revision == revision and e.healthy) < count:
        assert time.monotonic() < deadline, f"{revision} servers not healthy: {pods.endpoints()}"
        time.sleep(0.5)


def serving_addresses(api: KubeApi, namespace: str, service: str) -> set[str]:
    """The ready `ip:port`s of the Service's EndpointSlices, as a gateway would read them."""
    addresses = set()
    for endpoint_slice in api.list(ENDPOINT_SLICES, namespace, f"{SERVICE_NAME_LABEL}={service}"):
        ports = [port["port"] for port in endpoint_slice.get("ports") or []]
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready"):
                addresses |= {f"{ip}:{port}" for ip in endpoint["addresses"] for port in ports}
    return addresses


def assert_endpoint_slices_name_serving_pods(
    api: KubeApi, namespace: str, pod_network: PodNetwork, pods: PodProcesses
) -> None:
    """What `kubectl get endpointslices` lists are the pods' own addresses, and they answer."""
    healthy = {e.address for e in pods.endpoints().values() if e.healthy}
    listed = wait_until(
        lambda: (found := serving_addresses(api, namespace, "chat")) == healthy and found,
        30,
        f"the Service's EndpointSlices to list the ready pods {sorted(healthy)}",
    )
    for address in listed:
        ip = address.rsplit(":", 1)[0]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(pod_network.cidr), address
        assert not on_host_interface(ip), f"{ip} is configured on a host interface"
        with urllib.request.urlopen(f"http://{address}/health", timeout=10) as response:
            assert response.status == 200, address


def test_good_revision_is_promoted_and_a_failing_one_rolled_back_under_real_traffic(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    traffic: tuple[PodProcesses, Traefik],
    tiny_models: list[Path],
    prometheus: PrometheusHandle,
    pod_network: PodNetwork,
    kube_api_client: client.ApiClient,
) -> None:
    pods, gateway = traffic
    steps = [{"setWeight": 50}, {"analysis": {"duration": "12s"}}]
    v1 = rollout_manifest(
        "chat",
        f"file://{tiny_models[0]}",
        steps,
        analysis=analysis(prometheus),
        placement=pods.placement(),
    )
    rollouts.create(v1)
    stable = rollouts.wait_phase("chat", {"Succeeded"}, 60)["stableRevision"]
    wait_for_servers(pods, stable)
    assert_endpoint_slices_name_serving_pods(
        KubeApi(kube_api_client), rollouts.namespace, pod_network, pods
    )
    wait_until_served(gateway.url, "chat")

    with BackgroundLoad(gateway.url, "chat") as load:
        # A good model: walks the steps under load and is promoted.
        rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": f"file://{tiny_models[1]}"}})
        promoted = rollouts.wait_phase("chat", {"Succeeded", "RolledBack"}, 120)
        assert promoted["phase"] == "Succeeded", promoted
        good = promoted["stableRevision"]
        assert good != stable
        error_check = next(c for c in promoted["history"] if c["revision"] == good)
        assert error_check["outcome"] == "Promoted"

        # The same model answering half its requests with 500s: rolled back on its own.
        recorder = StatusRecorder(rollouts, "chat")
        with recorder.recording():
            rollouts.patch_spec(
                "chat",
                {
                    "runtime": {
                        **v1["spec"]["runtime"],
                        "args": ["--fault-injection", "--fault-error-rate=0.6", "--fault-seed=1"],
                    }
                },
            )
            rolled_back = rollouts.wait_phase("chat", {"RolledBack", "Succeeded"}, 150)
    assert rolled_back["phase"] == "RolledBack", rolled_back
    assert rolled_back["stableRevision"] == good
    assert rolled_back["weights"]["canary"] == 0
    check = next(c for c in rolled_back["checks"] if c["name"] == "error-rate")
    assert check["value"] > 0.2
    assert "error-rate" in rolled_back["history"][0]["reason"]
    # The failing canary really served traffic before it was rolled back.
    bad = rolled_back["history"][0]["revision"]
    assert load.count(bad, "500") > 0, load.snapshot()
    assert load.count(good, "200") > 0, load.snapshot()
    assert load.count(stable, "200") > 0, load.snapshot()


def test_blue_green_switches_every_request_at_once_and_back_on_a_post_promotion_breach(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    traffic: tuple[PodProcesses, Traefik],
    tiny_models: list[Path],
    prometheus: PrometheusHandle,
) -> None:
    pods, gateway = traffic
    selector = 'namespace="{{namespace}}",revision="{{canary.revision}}",handler=~"/v1/.*"'
    # Zero without traffic, so the idle preview passes; real errors once it serves.
    error_share = (
        f'(sum(rate(http_requests_total{{{selector},status=~"5.."}}[10s])) or vector(0))'
        f" / clamp_min(sum(rate(http_requests_total{{{selector}}}[10s])) or vector(0), 0.001)"
    )
    at = pods.placement()
    manifest = rollout_manifest("chat", f"file://{tiny_models[0]}", [], placement=at, analysis={
        "prometheus": {"address": prometheus.url, "timeout": "2s"},
        "interval": "1s",
        "checks": [{"name": "errors", "query": error_share, "breachWhen": "> 0.2",
                    "for": "2s", "action": "rollback"}],
    })  # fmt: skip
    manifest["spec"]["strategy"] = {
        "blueGreen": {
            # kwok marks pods Ready at once, while the real servers standing in for
            # them load the model for seconds: this gives the preview time to load.
            "autoPromotionAfter": "30s",
            "scaleDownDelay": "30s",
            "postPromotionAnalysis": {"duration": "15s"},
        }
    }
    rollouts.create(manifest)
    blue = rollouts.wait_phase("chat", {"Succeeded"}, 60)["stableRevision"]
    wait_for_servers(pods, blue)
    wait_until_served(gateway.url, "chat")

    def preview_loaded_before_the_switch() -> None:
        preview = wait_until(
            lambda: rollouts.status("chat").get("canaryRevision"), 30, "the preview revision"
        )
        wait_for_servers(pods, preview)
        assert rollouts.status("chat")["weights"]["canary"] == 0, "switched before it loaded"

    with BackgroundLoad(gateway.url, "chat") as load:
        rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": f"file://{tiny_models[1]}"}})
        preview_loaded_before_the_switch()
        promoted = rollouts.wait_phase("chat", {"Succeeded", "RolledBack"}, 150)
        assert promoted["phase"] == "Succeeded", promoted
        green = promoted["stableRevision"]
        assert promoted["previousRevision"] == blue
        switched = load.snapshot()
        # The previous color stays up for scaleDownDelay: both Deployments at full size.
        sizes = {rev: d.spec.replicas for rev, d in rollouts.deployments("chat").items()}
        assert sizes == {blue: 2, green: 2}, sizes

        # A revision failing 60% of requests passes the idle preview, is switched to,
        # breaches in the post-promotion window and is switched back.
        failing = {**manifest["spec"]["runtime"], "model": None}
        failing.pop("model")
        failing["args"] = ["--fault-injection", "--fault-error-rate=0.6", "--fault-seed=1"]
        rollouts.patch_spec("chat", {"runtime": failing})
        preview_loaded_before_the_switch()
        rolled_back = rollouts.wait_phase("chat", {"RolledBack", "Succeeded"}, 150)
        wait_for_answers(load, 20, "after the switch back")
        after = load.snapshot()
    assert rolled_back["phase"] == "RolledBack", (
        rolled_back["history"],
        rolled_back["checks"],
        after,
    )
    assert rolled_back["stableRevision"] == green
    red = rolled_back["history"][0]["revision"]

    # The switch to green: every answer a 200, from blue and then green, none lost.
    assert {status for (_, status) in switched} == {"200"}, switched
    assert switched.get((blue, "200"), 0) > 0 and switched.get((green, "200"), 0) > 0, switched
    # The failing color answered (500s are its own), and the switch back lost nothing.
    assert after.get((red, "500"), 0) > 0, after
    failed_by_routing = {k: n for k, n in after.items() if k[0] != red and k[1] != "200"}
    assert failed_by_routing == {}, after
    assert after[(green, "200")] > switched[(green, "200")], after


CANARY_WEIGHT = 30


def answered_since(
    load: BackgroundLoad, before: dict[tuple[str, str], int]
) -> Counter[tuple[str, str]]:
    return Counter(load.snapshot()) - Counter(before)


def wait_for_answers(load: BackgroundLoad, count: int, what: str) -> dict[tuple[str, str], int]:
    """Until `count` more answers than now; returns the counts from before them."""
    before = load.snapshot()
    wait_until(
        lambda: sum(answered_since(load, before).values()) >= count, 180, f"{count} answers {what}"
    )
    return before


def test_a_canary_through_the_gateway_takes_its_weight_of_requests_and_loses_none(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    routed_serving: tuple[ServingPlacement, Traefik],
    prometheus: PrometheusHandle,
) -> None:
    """The gatewayAPI router's weights, carried by Traefik to the pods' own addresses: at
    setWeight 30, 30% of real requests reach the canary; the promotion, and the rollback of
    a failing revision, lose no request that was not the failing revision's own answer.
    Run on the harness's pods and on the real node's containers."""
    serving, gateway = routed_serving
    steps = [{"setWeight": CANARY_WEIGHT}, {"pause": {}}]
    v1 = rollout_manifest(
        "chat", serving.model_uri(0), steps, router="gatewayAPI",
        analysis=analysis(prometheus), placement=serving.placement(),
    )  # fmt: skip
    rollouts.create(v1)
    stable = rollouts.wait_phase("chat", {"Succeeded"}, 180)["stableRevision"]
    serving.wait_for_servers(stable)
    wait_until_served(gateway.url, "chat")

    with BackgroundLoad(gateway.url, "chat") as load:
        wait_until(lambda: load.count(stable, "200") >= 10, 60, "the stable served by Traefik")
        served = load.snapshot()
        rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": serving.model_uri(1)}})
        paused = rollouts.wait_phase("chat", {"Paused", "RolledBack"}, 120)
        assert paused["phase"] == "Paused", paused
        assert paused["weights"]["canary"] == CANARY_WEIGHT, paused
        canary = paused["canaryRevision"]
        # Traefik applies a route's new weights within its providers' throttle (2 s).
        wait_until(lambda: load.count(canary, "200") >= 1, 60, "Traefik routing to the canary")
        split = answered_since(load, wait_for_answers(load, 300, "at 30%"))

        rollouts.annotate("chat", {"modelrollout.dev/promote": uuid.uuid4().hex})
        promoted = rollouts.wait_phase("chat", {"Succeeded", "RolledBack"}, 120)
        assert promoted["phase"] == "Succeeded", promoted
        assert promoted["stableRevision"] == canary
        wait_for_answers(load, 50, "after the promotion")

        failing = {**v1["spec"]["runtime"]}
        failing["args"] = ["--fault-injection", "--fault-error-rate=0.6", "--fault-seed=1"]
        rollouts.patch_spec("chat", {"runtime": failing})
        rolled_back = rollouts.wait_phase("chat", {"RolledBack"}, 150)
        assert rolled_back["phase"] == "RolledBack", rolled_back
        wait_for_answers(load, 50, "after the rollback")
        answered = answered_since(load, served)

    assert set(split) == {(stable, "200"), (canary, "200")}, split
    share = split[(canary, "200")] / sum(split.values())
    print(f"canary at {CANARY_WEIGHT}%: {share:.1%} of {sum(split.values())} requests")
    assert 0.2 <= share <= 0.4, split
    assert rolled_back["stableRevision"] == canary
    assert rolled_back["weights"]["canary"] == 0
    bad = rolled_back["history"][0]["revision"]
    assert answered[(bad, "500")] > 0, answered
    # Every request answered 200 but the failing revision's own 500s: none lost on the way.
    lost = {key: n for key, n in answered.items() if key[1] != "200" and key != (bad, "500")}
    assert lost == {}, answered


def test_a_blue_green_preview_through_the_gateway_answers_only_requests_with_the_header(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    routed_serving: tuple[ServingPlacement, Traefik],
) -> None:
    """Traefik matches the preview route by its header: testers reach the new color before
    the switch, users never do; the switch moves every user at once and loses none.
    Run on the harness's pods and on the real node's containers."""
    serving, gateway = routed_serving
    manifest = rollout_manifest(
        "chat", serving.model_uri(0), [], router="gatewayAPI", placement=serving.placement()
    )
    manifest["spec"]["strategy"] = {"blueGreen": {"scaleDownDelay": "30s"}}
    rollouts.create(manifest)
    blue = rollouts.wait_phase("chat", {"Succeeded"}, 180)["stableRevision"]
    serving.wait_for_servers(blue)
    wait_until_served(gateway.url, "chat")

    users = BackgroundLoad(gateway.url, "chat")
    testers = BackgroundLoad(gateway.url, "chat", workers=1, headers={PREVIEW_HEADER: "true"})
    with users, testers:
        wait_until(lambda: users.count(blue, "200") >= 10, 60, "the blue color served by Traefik")
        served = users.snapshot()
        rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": serving.model_uri(1)}})
        previewing = rollouts.wait_phase("chat", {"Paused", "RolledBack"}, 120)
        assert previewing["phase"] == "Paused", previewing
        green = previewing["canaryRevision"]
        wait_until(lambda: testers.count(green, "200") >= 1, 60, "the preview route programmed")
        tested = answered_since(testers, wait_for_answers(testers, 40, "with the header"))
        before_switch = answered_since(users, served)
        assert rollouts.status("chat")["weights"]["canary"] == 0

        rollouts.annotate("chat", {"modelrollout.dev/promote": uuid.uuid4().hex})
        promoted = rollouts.wait_phase("chat", {"Succeeded", "RolledBack"}, 120)
        assert promoted["phase"] == "Succeeded", promoted
        after_switch = answered_since(users, wait_for_answers(users, 60, "after the switch"))
        answered = answered_since(users, served)

    assert tested == {(green, "200"): sum(tested.values())}, tested
    assert before_switch == {(blue, "200"): sum(before_switch.values())}, before_switch
    assert promoted["stableRevision"] == green
    # Within Traefik's throttle of the switch, then green alone.
    assert after_switch[(green, "200")] > 0, after_switch
    assert {status for _, status in answered} == {"200"}, answered


def test_shadow_gets_the_mirrored_share_users_see_only_stable_and_a_slow_one_is_stopped(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    mirrored_traffic: tuple[PodProcesses, Gateway],
    tiny_models: list[Path],
    prometheus: PrometheusHandle,
) -> None:
    pods, gateway = mirrored_traffic
    manifest = rollout_manifest(
        "chat",
        f"file://{tiny_models[0]}",
        [],
        router="gatewayAPI",
        placement=pods.placement(),
        analysis={
            "prometheus": {"address": prometheus.url, "timeout": "2s"},
            "interval": "1s",
            "checks": [
                {"name": "errors", "builtin": "errorRate", "window": "10s",
                 "breachWhen": "> 0.2", "for": "2s"},
                {"name": "latency-vs-stable", "builtin": "latencyP99", "compareTo": "stable",
                 "window": "10s", "breachWhen": "> 3", "for": "2s"},
            ],
        },
    )  # fmt: skip
    manifest["spec"]["strategy"] = {
        "shadow": {"mirrorPercent": 50, "duration": "15s", "then": "promote"}
    }
    rollouts.create(manifest)
    stable = rollouts.wait_phase("chat", {"Succeeded"}, 60)["stableRevision"]
    wait_for_servers(pods, stable)
    wait_until_served(gateway.url, "chat")

    with BackgroundLoad(gateway.url, "chat") as load:
        rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": f"file://{tiny_models[1]}"}})
        shadow = wait_until(
            lambda: rollouts.status("chat").get("canaryRevision"), 30, "the shadow revision"
        )
        wait_for_servers(pods, shadow, count=1)  # sized for the mirrored half: 1 of 2
        before = gateway.snapshot()
        promoted = rollouts.wait_phase("chat", {"Succeeded", "RolledBack"}, 150)
        seen_during_shadow = load.snapshot()
        after = gateway.snapshot()

        slow = {**manifest["spec"]["runtime"]}
        # Slow enough to breach a ratio of 3 even on a busy 2-core machine. (The healthy
        # shadow's p99, one replica taking the mirrored half, reached twice stable's in CI.)
        slow["args"] = ["--fault-injection", "--fault-latency=3.0"]
        rollouts.patch_spec("chat", {"runtime": slow})
        slow_shadow = wait_until(
            lambda: (
                (rollouts.status("chat").get("canaryRevision") or "") not in ("", shadow)
                and rollouts.status("chat")["canaryRevision"]
            ),
            30,
            "the slow shadow revision",
        )
        stopped = rollouts.wait_phase("chat", {"RolledBack", "Succeeded"}, 150)
        seen = load.snapshot()

    assert promoted["phase"] == "Succeeded", promoted
    assert promoted["stableRevision"] == shadow
    # Users only ever got stable's answers until the promotion, while the shadow
    # answered about the mirrored half of those requests.
    assert {status for _, status in seen_during_shadow} == {"200"}, seen_during_shadow
    routed = after["routed"].get(stable, 0) - before["routed"].get(stable, 0)
    mirrored = after["mirrored"].get(f"{shadow} 200", 0) - before["mirrored"].get(
        f"{shadow} 200", 0
    )
    print(f"shadow: {mirrored} mirrored copies for {routed} user requests to stable")
    assert routed > 20 and 0.3 <= mirrored / routed <= 0.7, (routed, mirrored, after)

    assert stopped["phase"] == "RolledBack", json.dumps(
        [stopped["checks"], gateway.snapshot(), {" ".join(k): n for k, n in seen.items()}]
    )
    assert stopped["stableRevision"] == shadow, "the slow shadow was never promoted"
    check = next(c for c in stopped["checks"] if c["name"] == "latency-vs-stable")
    assert check["value"] > 3, check
    assert not any(revision == slow_shadow for revision, _ in seen), seen
    assert {status for _, status in seen} == {"200"}, seen
    mirrored_slow = gateway.snapshot()["mirrored"]
    assert any(key.startswith(slow_shadow) for key in mirrored_slow), mirrored_slow


def test_a_ready_canary_takes_no_request_until_its_weight_is_above_zero(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    traffic: tuple[PodProcesses, Traefik],
    tiny_models: list[Path],
) -> None:
    """Under the service router, weight 0 means 0: a canary waiting at a pause before its
    first setWeight is Ready, yet the rollout's Service does not select it."""
    pods, gateway = traffic
    v1 = rollout_manifest(
        "chat", f"file://{tiny_models[0]}", [{"pause": {}}], placement=pods.placement()
    )
    rollouts.create(v1)
    stable = rollouts.wait_phase("chat", {"Succeeded"}, 120)["stableRevision"]
    wait_for_servers(pods, stable)
    # The harness's health comes before the pod's Ready reaches Traefik through its
    # EndpointSlice: every request of the load below must find a server.
    wait_until_served(gateway.url, "chat")

    with BackgroundLoad(gateway.url, "chat") as load:
        rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": f"file://{tiny_models[1]}"}})
        canary = wait_until(
            lambda: rollouts.status("chat").get("canaryRevision"), 30, "the canary revision"
        )
        wait_for_servers(pods, canary, count=1)
        answered = sum(load.snapshot().values())
        # Many requests after the canary pod is Ready, all still at weight 0.
        wait_until(lambda: sum(load.snapshot().values()) >= answered + 60, 120, "60 requests")
        paused = rollouts.status("chat")
        assert paused["phase"] == "Paused" and paused["weights"]["canary"] == 0, paused
        assert load.count(canary, "200") == 0, load.snapshot()
        assert load.count(stable, "200") > answered, load.snapshot()

        rollouts.annotate("chat", {"modelrollout.dev/promote": uuid.uuid4().hex})
        promoted = rollouts.wait_phase("chat", {"Succeeded"}, 120)
        assert promoted["stableRevision"] == canary
        wait_until(lambda: load.count(canary, "200") >= 20, 60, "the promoted revision serving")
    assert {status for _, status in load.snapshot()} == {"200"}, load.snapshot()


def test_an_idle_preview_gets_analysis_load_so_its_builtin_checks_decide(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    pods: PodProcesses,
    tiny_models: list[Path],
    prometheus: PrometheusHandle,
    kube_api_client: client.ApiClient,
    namespace: str,
) -> None:
    """No user sends a blue-green preview a request; `analysis.load` does, through the
    preview's own Service. A healthy preview is promoted on the built-in errorRate, and a
    failing one is rolled back before the switch, with no hand-written query."""
    at = pods.placement()
    manifest = rollout_manifest("chat", f"file://{tiny_models[0]}", [], placement=at, analysis={
        "prometheus": {"address": prometheus.url, "timeout": "2s"},
        "interval": "1s",
        "checks": [{"name": "errors", "builtin": "errorRate", "window": "20s",
                    "breachWhen": "> 0.2", "for": "2s", "action": "rollback"}],
        "load": {"rate": 4, "maxTokens": 4},
    })  # fmt: skip
    manifest["spec"]["strategy"] = {"blueGreen": {"autoPromotionAfter": "15s"}}
    rollouts.create(manifest)
    blue = rollouts.wait_phase("chat", {"Succeeded"}, 60)["stableRevision"]

    rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": f"file://{tiny_models[1]}"}})
    promoted = rollouts.wait_phase("chat", {"Succeeded", "RolledBack", "Paused"}, 180)
    assert promoted["phase"] == "Succeeded", (promoted["checks"], promoted.get("message"))
    green = promoted["stableRevision"]
    assert green != blue
    # Every request the preview answered came from the load Job: nothing else addressed it.
    answered = prometheus.query(
        f'sum(http_requests_total{{namespace="{namespace}",revision="{green}",'
        f'handler=~"/v1/.*",status=~"2.."}})'
    )
    assert answered and float(answered[0]["value"][1]) > 0, answered

    failing = {**manifest["spec"]["runtime"]}
    failing["args"] = ["--fault-injection", "--fault-error-rate=0.6", "--fault-seed=1"]
    rollouts.patch_spec("chat", {"runtime": failing})
    rolled_back = rollouts.wait_phase("chat", {"RolledBack", "Succeeded"}, 180)
    assert rolled_back["phase"] == "RolledBack", rolled_back["checks"]
    assert rolled_back["stableRevision"] == green
    red = rolled_back["history"][0]["revision"]
    assert "errors" in rolled_back["history"][0]["reason"]
    check = next(c for c in rolled_back["checks"] if c["name"] == "errors")
    assert check["value"] > 0.2
    # Never switched: the Service kept selecting green, and the load Job is gone.
    core, batch = client.CoreV1Api(kube_api_client), client.BatchV1Api(kube_api_client)
    selector = core.read_namespaced_service("chat", namespace).spec.selector
    assert selector["modelrollout.dev/revision"] == green
    wait_until(
        lambda: (
            not batch.list_namespaced_job(namespace, label_selector="modelrollout.dev/load").items
        ),
        60,
        f"the load Job of {red} deleted",
    )
