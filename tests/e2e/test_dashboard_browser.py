"""The dashboard in a real browser (Debian's headless chromium) during real canaries.

The real operator walks the canaries; the dashboard runs as its command; the
browser only looks and clicks, as a user would. Pods run no containers (kwok)
and the checks query constants from the real Prometheus, so no model traffic is
involved: the checks' values and breaches come from Prometheus all the same.
The screenshots of docs/dashboard.md are saved when MODELROLLOUT_SCREENSHOTS
names a directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from modelrollout_dev import toolchain
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.podnetwork import PodNetwork
from modelrollout_dev.processes import free_port
from modelrollout_dev.prometheus import PrometheusHandle
from tests.cluster.test_dashboard import write_status
from tests.conftest import ClusterUnderTest
from tests.support.dashboard import Dashboard, viewer_kubeconfig
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest, with_model

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
STEPS = [
    {"setWeight": 25},
    {"pause": {}},
    {"setWeight": 50},
    {"analysis": {"duration": "10m"}},
    {"setWeight": 75},
]
SECONDS = 60


def analysis(prometheus: PrometheusHandle, value: str) -> dict[str, Any]:
    return {
        "prometheus": {"address": prometheus.url, "timeout": "2s"},
        "interval": "1s",
        "checks": [
            {
                "name": "error-rate",
                "query": f"vector({value})",
                "breachWhen": "> 0.01",
                "action": "rollback",
            }
        ],
    }


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver (bootstrap.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1400"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, condition: Any, what: str, timeout: float = SECONDS) -> Any:
    """Wait on the page's own state (the DOM), as selenium's WebDriverWait does."""
    return WebDriverWait(driver, timeout, ignored_exceptions=(WebDriverException,)).until(
        condition, f"waiting for {what}"
    )


def text_of(driver: WebDriver, selector: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(url)
    # A mark only this page load has: still there later means no reload happened.
    driver.execute_script("window.sameLoad = true")


def same_load(driver: WebDriver) -> bool:
    return bool(driver.execute_script("return window.sameLoad === true"))


def screenshot(driver: WebDriver, name: str) -> None:
    directory = os.environ.get("MODELROLLOUT_SCREENSHOTS")
    if directory:
        driver.save_screenshot(str(Path(directory) / name))


def confirm(driver: WebDriver, command: str) -> None:
    """The command's button, then the confirmation's, by keyboard as well as a mouse could."""
    driver.find_element(By.CSS_SELECTOR, f'button[data-command="{command}"]').send_keys(Keys.ENTER)
    wait(
        driver,
        lambda d: d.find_element(By.ID, "confirm").get_attribute("open") is not None,
        "the confirmation",
    )
    driver.find_element(By.ID, "confirm-ok").send_keys(Keys.ENTER)


def current_step(driver: WebDriver) -> str:
    steps = driver.find_elements(By.CSS_SELECTOR, '#steps li[data-state="current"]')
    return str(steps[0].text) if steps else ""


def test_a_canary_updates_live_and_the_promote_button_promotes(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    cluster_under_test: ClusterUnderTest,
    namespace: str,
    prometheus: PrometheusHandle,
    browser: WebDriver,
    tmp_path: Path,
) -> None:
    v1 = rollout_manifest(
        "chat", "file:///models/v1", STEPS, analysis=analysis(prometheus, "0.002")
    )
    rollouts.create(v1)
    rollouts.wait_phase("chat", {"Succeeded"}, SECONDS)
    with Dashboard(cluster_under_test.kubeconfig, namespace, tmp_path / "dashboard.log") as board:
        open_page(browser, f"{board.url}/")
        row = f'tr[data-key="{namespace}/chat"]'
        wait(browser, lambda d: "Succeeded" in text_of(d, row), "the stable rollout's row")

        rollouts.patch_spec("chat", {"model": with_model(v1, "file:///models/v2")["spec"]["model"]})
        wait(
            browser,
            lambda d: (
                "2/5" in text_of(d, f'{row} [data-field="step"]')
                and text_of(d, f'{row} [data-field="weight"]') == "25%"
            ),
            "step 2/5 at 25% on the list, without a reload",
        )
        assert same_load(browser)
        screenshot(browser, "dashboard-list.png")

        browser.find_element(By.LINK_TEXT, "chat").click()
        browser.execute_script("window.sameLoad = true")
        wait(browser, lambda d: current_step(d).startswith("2. pause until promoted"), "step 2")
        assert "canary 25%" in text_of(browser, "#weight-text")
        wait(
            browser,
            lambda d: d.find_elements(By.CSS_SELECTOR, 'figure[data-check="error-rate"] canvas'),
            "the error-rate plot from Prometheus",
        )
        screenshot(browser, "dashboard-canary.png")

        confirm(browser, "promote")
        wait(browser, lambda d: "promoted" in text_of(d, "#notice"), "the promote's answer")
        wait(
            browser,
            lambda d: (
                current_step(d).startswith("4. analysis")
                and "canary 50%" in text_of(d, "#weight-text")
            ),
            "step 4 at 50%, without a reload",
        )
        assert same_load(browser)
        assert rollouts.status("chat")["weights"]["canary"] == 50
        screenshot(browser, "dashboard-promoted.png")


def test_a_breach_shows_on_the_plot_and_the_rollback_on_the_steps(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    cluster_under_test: ClusterUnderTest,
    namespace: str,
    prometheus: PrometheusHandle,
    browser: WebDriver,
    tmp_path: Path,
) -> None:
    v1 = rollout_manifest("chat", "file:///models/v1", STEPS, analysis=analysis(prometheus, "0.2"))
    rollouts.create(v1)
    rollouts.wait_phase("chat", {"Succeeded"}, SECONDS)
    with Dashboard(cluster_under_test.kubeconfig, namespace, tmp_path / "dashboard.log") as board:
        open_page(browser, f"{board.url}/rollouts/{namespace}/chat")
        rollouts.patch_spec("chat", {"model": with_model(v1, "file:///models/v2")["spec"]["model"]})
        wait(
            browser,
            lambda d: (
                "RolledBack" in text_of(d, "#phase")
                and d.find_elements(By.CSS_SELECTOR, '#steps li[data-state="stopped"]')
            ),
            "the rollback on the page, without a reload",
        )
        assert same_load(browser)
        assert "canary 0%" in text_of(browser, "#weight-text")
        # The plot is drawn again at most every 15 s: wait for one with breaches marked.
        wait(
            browser,
            lambda d: (
                " 0 breaching"
                not in (
                    d.find_element(
                        By.CSS_SELECTOR, 'figure[data-check="error-rate"]'
                    ).get_attribute("aria-label")
                    or " 0 breaching"
                )
            ),
            "the breaching samples on the error-rate plot",
        )
        assert "breach when > 0.01" in browser.find_element(
            By.CSS_SELECTOR, 'figure[data-check="error-rate"]'
        ).get_attribute("aria-label")
        screenshot(browser, "dashboard-rollback.png")


def test_a_user_without_patch_rights_sees_the_refusal_in_the_page(
    kube_api_client: client.ApiClient,
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    cluster_under_test: ClusterUnderTest,
    namespace: str,
    prometheus: PrometheusHandle,
    browser: WebDriver,
    tmp_path: Path,
) -> None:
    v1 = rollout_manifest(
        "chat", "file:///models/v1", STEPS, analysis=analysis(prometheus, "0.002")
    )
    rollouts.create(v1)
    rollouts.wait_phase("chat", {"Succeeded"}, SECONDS)
    rollouts.patch_spec("chat", {"model": with_model(v1, "file:///models/v2")["spec"]["model"]})
    rollouts.wait_phase("chat", {"Paused"}, SECONDS)
    kubeconfig = viewer_kubeconfig(
        kube_api_client, cluster_under_test.kubeconfig, namespace, tmp_path / "viewer.yaml"
    )
    with Dashboard(kubeconfig, namespace, tmp_path / "viewer.log") as board:
        open_page(browser, f"{board.url}/rollouts/{namespace}/chat")
        wait(browser, lambda d: current_step(d).startswith("2."), "step 2")
        confirm(browser, "promote")
        wait(browser, lambda d: "refused (403)" in text_of(d, "#notice"), "the refusal")
        notice = text_of(browser, "#notice")
        assert f'User "system:serviceaccount:{namespace}:viewer" cannot patch resource' in notice
        screenshot(browser, "dashboard-forbidden.png")
    assert rollouts.status("chat")["currentStep"] == 1


def test_the_rollback_button_goes_back_to_the_warm_revision_and_history_shows_records(
    kube_api_client: client.ApiClient,
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    cluster_under_test: ClusterUnderTest,
    namespace: str,
    prometheus: PrometheusHandle,
    browser: WebDriver,
    tmp_path: Path,
) -> None:
    steps = [{"setWeight": 50}, {"pause": {"duration": "1s"}}]
    v1 = rollout_manifest(
        "chat", "file:///models/v1", steps, analysis=analysis(prometheus, "0.002")
    )
    v1["spec"]["strategy"]["canary"]["rollbackWindow"] = {"duration": "10m"}
    rollouts.create(v1)
    old = rollouts.wait_phase("chat", {"Succeeded"}, SECONDS)["stableRevision"]
    model = {**with_model(v1, "file:///models/v2")["spec"]["model"]}
    model["card"] = {"license": "apache-2.0", "parameters": 3_000_000_000}
    rollouts.patch_spec("chat", {"model": model})
    promoted = rollouts.wait_phase("chat", {"Succeeded"}, SECONDS)
    new = promoted["stableRevision"]
    assert promoted["previousRevision"] == old

    # A read-only dashboard (the chart's default) draws no button and sends nothing.
    with Dashboard(
        cluster_under_test.kubeconfig,
        namespace,
        tmp_path / "read-only.log",
        arguments=["-n", namespace, "dashboard", "--read-only"],
    ) as board:
        open_page(browser, f"{board.url}/rollouts/{namespace}/chat")
        wait(browser, lambda d: "read-only" in text_of(d, "#actions"), "the read-only notice")
        assert not browser.find_elements(By.CSS_SELECTOR, "#actions button, button[data-undo]")

    # RBAC: a user without patch sees the API server's refusal of the rollback.
    kubeconfig = viewer_kubeconfig(
        kube_api_client, cluster_under_test.kubeconfig, namespace, tmp_path / "viewer.yaml"
    )
    with Dashboard(kubeconfig, namespace, tmp_path / "viewer.log") as board:
        open_page(browser, f"{board.url}/rollouts/{namespace}/chat")
        wait(browser, lambda d: "kept warm until" in text_of(d, "#rollback-window"), "the window")
        confirm(browser, "rollback")
        wait(browser, lambda d: "refused (403)" in text_of(d, "#notice"), "the refusal")
        assert "cannot patch resource" in text_of(browser, "#notice")
    assert rollouts.status("chat")["phase"] == "Succeeded"

    with Dashboard(cluster_under_test.kubeconfig, namespace, tmp_path / "dashboard.log") as board:
        open_page(browser, f"{board.url}/rollouts/{namespace}/chat")
        wait(browser, lambda d: old in text_of(d, "#rollback-window"), "the rollback window")
        assert "license apache-2.0, parameters 3,000,000,000" in text_of(browser, "#card")
        record = f'details[data-record="{new}"]'
        browser.find_element(By.CSS_SELECTOR, f"{record} summary").send_keys(Keys.ENTER)
        wait(browser, lambda d: "URI" in text_of(d, f"{record} dl"), "the model record")
        text = text_of(browser, f"{record} dl")
        assert "file:///models/v2" in text and "Card (declared)" in text
        browser.execute_script(
            "arguments[0].scrollIntoView()", browser.find_element(By.ID, "history")
        )
        screenshot(browser, "dashboard-history.png")

        confirm(browser, "rollback")
        wait(browser, lambda d: "kept warm" in text_of(d, "#notice"), "the rollback's answer")
        wait(browser, lambda d: "RolledBack" in text_of(d, "#phase"), "the rollback, no reload")
        assert same_load(browser)
    status = rollouts.status("chat")
    assert (status["stableRevision"], status["history"][0]["outcome"]) == (old, "RolledBack")


@contextlib.contextmanager
def behind_service_proxy(
    kube_api_client: client.ApiClient,
    cluster_under_test: ClusterUnderTest,
    pod_network: PodNetwork,
    namespace: str,
    board: Dashboard,
    log: Path,
) -> Iterator[str]:
    """The dashboard behind a Service and the API server's service proxy, reached through
    `kubectl proxy`: the URL of its first page.

    The local cluster runs no container of the operator's image, so the dashboard runs here
    and a pod address of the cluster's network forwards to it (`netns_forward`). The API
    server proxies only to an endpoint that is a pod with that address: a stand-in pod (never
    scheduled) gets it in its status, written as a kubelet would, and the Service's endpoint
    names that pod.
    """
    address = pod_network.claim_address("dashboard-proxy", namespace)
    port = 3100
    forwarder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelrollout_dev.netns_forward",
            pod_network.netns,
            f"{address}:{port}",
            f"127.0.0.1:{board.port}",
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    proxy_port = free_port()
    kubectl = subprocess.Popen(
        [
            str(toolchain.expected_binaries().kubectl),
            "--kubeconfig",
            cluster_under_test.kubeconfig,
            "proxy",
            f"--port={proxy_port}",
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        core = client.CoreV1Api(kube_api_client)
        core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": "dashboard"},
                "spec": {
                    "nodeSelector": {"example.com/nowhere": "true"},
                    "containers": [{"name": "dashboard", "image": "modelrollout/operator:dev"}],
                },
            },
        )
        core.patch_namespaced_pod_status(
            "dashboard", namespace, {"status": {"podIP": address, "podIPs": [{"ip": address}]}}
        )
        core.create_namespaced_service(
            namespace,
            {
                "metadata": {"name": "dashboard"},
                "spec": {"ports": [{"name": "http", "port": port, "targetPort": port}]},
            },
        )
        # A Service without a selector: its endpoint is written by hand, as for any server
        # outside the cluster's pods.
        core.create_namespaced_endpoints(
            namespace,
            {
                "metadata": {"name": "dashboard"},
                "subsets": [
                    {
                        "addresses": [
                            {
                                "ip": address,
                                "targetRef": {
                                    "kind": "Pod",
                                    "name": "dashboard",
                                    "namespace": namespace,
                                },
                            }
                        ],
                        "ports": [{"name": "http", "port": port}],
                    }
                ],
            },
        )
        url = (
            f"http://127.0.0.1:{proxy_port}/api/v1/namespaces/{namespace}"
            "/services/http:dashboard:http/proxy/"
        )

        def answers() -> bool:
            try:
                return httpx.get(f"{url}api/stats", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, SECONDS, "the dashboard through the API server's service proxy")
        yield url
    finally:
        for process in (kubectl, forwarder):
            process.terminate()
            process.wait(timeout=15)
        pod_network.release_address(address)


def test_the_pages_work_behind_the_api_servers_service_proxy(
    kube_api_client: client.ApiClient,
    rollouts: Rollouts,
    cluster_under_test: ClusterUnderTest,
    namespace: str,
    pod_network: PodNetwork,
    browser: WebDriver,
    tmp_path: Path,
) -> None:
    """Under the proxy's path prefix the pages load their assets, stream and link with URLs
    relative to where they are served (the chart's dashboard is reached this way)."""
    rollouts.create(rollout_manifest("chat", "file:///models/v1", STEPS))
    write_status(rollouts, "chat", step=1, canary_weight=25)
    with (
        Dashboard(
            cluster_under_test.kubeconfig,
            namespace,
            tmp_path / "dashboard.log",
            arguments=["-n", namespace, "dashboard", "--read-only"],
        ) as board,
        behind_service_proxy(
            kube_api_client, cluster_under_test, pod_network, namespace, board, tmp_path / "p.log"
        ) as url,
    ):
        open_page(browser, url)
        row = f'tr[data-key="{namespace}/chat"]'
        wait(browser, lambda d: "2/5" in text_of(d, f'{row} [data-field="step"]'), "the row")
        assert text_of(browser, "#connection") == "live"
        browser.find_element(By.LINK_TEXT, "chat").click()
        wait(browser, lambda d: current_step(d).startswith("2."), "the rollout's page")
        assert browser.current_url == f"{url}rollouts/{namespace}/chat"
        assert "canary 25%" in text_of(browser, "#weight-text")
        assert "read-only" in text_of(browser, "#actions")
        # The stylesheet came through the proxy too: the header is drawn dark.
        header = browser.find_element(By.TAG_NAME, "header").value_of_css_property("background")
        assert "36, 41, 47" in header
        write_status(rollouts, "chat", step=2, canary_weight=50)
        wait(browser, lambda d: "canary 50%" in text_of(d, "#weight-text"), "a live update")
        browser.find_element(By.LINK_TEXT, "All rollouts").click()
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the list again")
        assert browser.current_url == url
