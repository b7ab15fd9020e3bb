"""The local cluster's Prometheus, on loopback.

It finds the rollouts' serving pods the way a cluster's Prometheus does: the
chart's scrape job (charts/modelrollout/files/model-pods.scrape.yaml, the
PodMonitor's relabelings in Prometheus' spelling) with Kubernetes pod
discovery against the local API server, so each series carries the
`namespace`, `rollout`, `revision`, `role` and `pod` labels the built-in
checks and the shipped alerts read, taken from the pods' own labels. Targets
that are not pods (a benchmark's gauge) are registered through files.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from modelrollout_dev import toolchain

SCRAPE_INTERVAL = "1s"
CHART_FILES = Path(__file__).resolve().parents[2] / "charts" / "modelrollout" / "files"
MODEL_PODS_JOB = CHART_FILES / "model-pods.scrape.yaml"

ALERTMANAGERS_DIR = "alertmanagers"

_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")


class PrometheusError(RuntimeError):
    """Prometheus did not start, or answered with an error."""


def prometheus_binary() -> str:
    """Prometheus built from its module with Kubernetes discovery (toolchain), on first use."""
    binary = toolchain.expected_binaries().prometheus
    if not binary.is_file():
        toolchain.build_prometheus()
    return str(binary)


def model_pods_job(kubeconfig: Path) -> dict[str, Any]:
    """The chart's scrape job, discovering pods through the API server of `kubeconfig`.

    In a cluster Prometheus authenticates with its ServiceAccount; here with the
    local cluster's kubeconfig. Scraped as often as every other target here.
    """
    job: dict[str, Any] = yaml.safe_load(MODEL_PODS_JOB.read_text())
    for discovery in job["kubernetes_sd_configs"]:
        discovery["kubeconfig_file"] = str(kubeconfig)
    return {**job, "scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL}


def prometheus_config(sd_dir: Path, rules_dir: Path, kubeconfig: Path | None) -> str:
    """Targets from files, and with `kubeconfig` the serving pods of that cluster too."""
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules_dir / "*.yml")],
        # Alertmanagers are registered through files too (register_alertmanager):
        # one started for a test is used within a second, with no reload.
        "alerting": {
            "alertmanagers": [
                {
                    "file_sd_configs": [
                        {
                            "files": [str(sd_dir / ALERTMANAGERS_DIR / "*.json")],
                            "refresh_interval": SCRAPE_INTERVAL,
                        }
                    ]
                }
            ]
        },
        "scrape_configs": [
            *([model_pods_job(kubeconfig)] if kubeconfig else []),
            {
                "job_name": "modelrollout-targets",
                "scrape_timeout": SCRAPE_INTERVAL,
                "file_sd_configs": [
                    {"files": [str(sd_dir / "*.json")], "refresh_interval": SCRAPE_INTERVAL}
                ],
            },
        ],
    }
    return json.dumps(config, indent=2)


@dataclass(frozen=True)
class PrometheusHandle:
    """Talks to a running Prometheus and manages its file-discovered targets."""

    url: str
    sd_dir: Path
    rules_dir: Path

    def register_target(self, name: str, address: str, labels: dict[str, str]) -> None:
        """Scrape `address` (host:port) with `labels`; replaces a target of the same name."""
        if not _TARGET_NAME.match(name):
            raise ValueError(f"target name {name!r} must match {_TARGET_NAME.pattern}")
        entry = [{"targets": [address], "labels": labels}]
        tmp = self.sd_dir / f".{name}.json.tmp"
        tmp.write_text(json.dumps(entry))
        # Rename is atomic: Prometheus never reads a half-written file.
        os.replace(tmp, self.sd_dir / f"{name}.json")

    def unregister_target(self, name: str) -> None:
        (self.sd_dir / f"{name}.json").unlink(missing_ok=True)

    def register_alertmanager(self, name: str, address: str) -> None:
        """Send the rules' alerts to the Alertmanager at `address` (host:port) as well."""
        if not _TARGET_NAME.match(name):
            raise ValueError(f"alertmanager name {name!r} must match {_TARGET_NAME.pattern}")
        directory = self.sd_dir / ALERTMANAGERS_DIR
        directory.mkdir(exist_ok=True)
        tmp = directory / f".{name}.json.tmp"
        tmp.write_text(json.dumps([{"targets": [address]}]))
        os.replace(tmp, directory / f"{name}.json")

    def unregister_alertmanager(self, name: str) -> None:
        (self.sd_dir / ALERTMANAGERS_DIR / f"{name}.json").unlink(missing_ok=True)

    def write_rules(self, name: str, rules_yaml: str) -> None:
        """Install an alerting/recording rule file and make Prometheus load it now."""
        (self.rules_dir / f"{name}.yml").write_text(rules_yaml)
        self.reload()

    def remove_rules(self, name: str) -> None:
        (self.rules_dir / f"{name}.yml").unlink(missing_ok=True)
        self.reload()

    def reload(self) -> None:
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise PrometheusError(f"reload answered {response.status}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns the result vector, raises on an error answer."""
        params = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise PrometheusError(f"query {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise PrometheusError(f"Prometheus at {self.url} not ready after {timeout:.0f}s")
            time.sleep(0.2)


class CountingProxy:
    """Forwards HTTP GETs/POSTs to Prometheus, keeping the most requests in flight at once.

    With `upstream` "" it is a forward proxy: clients send it absolute URLs.

    `delay` holds each request that long before forwarding it, so that clients'
    requests overlap as they would against a busy Prometheus.
    """

    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        self.in_flight = 0
        self.most_in_flight = 0
        self.requests = 0
        # Answers the client no longer waited for (it timed out or closed first).
        self.abandoned = 0
        self.slowest = 0.0
        lock = threading.Lock()
        proxy = self
        # Straight to the upstream whatever HTTP_PROXY says: a test may point clients
        # at this proxy through the environment.
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        class Handler(BaseHTTPRequestHandler):
            def _forward(self, body: bytes | None) -> None:
                with lock:
                    proxy.in_flight += 1
                    proxy.requests += 1
                    proxy.most_in_flight = max(proxy.most_in_flight, proxy.in_flight)
                started = time.monotonic()
                try:
                    time.sleep(delay)
                    request = urllib.request.Request(
                        upstream + self.path,
                        data=body,
                        method=self.command,
                        headers={"Content-Type": self.headers.get("Content-Type", "")},
                    )
                    with direct.open(request, timeout=10) as response:
                        payload, status = response.read(), response.status
                except urllib.error.HTTPError as error:
                    payload, status = error.read(), error.code
                finally:
                    with lock:
                        proxy.in_flight -= 1
                        proxy.slowest = max(proxy.slowest, time.monotonic() - started)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    with lock:
                        proxy.abandoned += 1

            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                self._forward(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


class MetricsEndpoint:
    """A loopback scrape target serving what `render()` returns, in the text format."""

    def __init__(self, render: Callable[[], str]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"
