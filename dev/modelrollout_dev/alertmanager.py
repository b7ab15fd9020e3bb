"""A real Alertmanager (Debian's prometheus-alertmanager) on loopback, routing to the operator.

The local Prometheus finds it through file discovery (`PrometheusHandle.register_alertmanager`),
so starting one needs no change to Prometheus's configuration: the rules' alerts go to it
within a second. Its one route sends every alert to the operator's receiver with the
receiver's bearer token, with the short `group_wait`/`group_interval` a test wants.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelrollout_dev.processes import free_port, pid_alive, stop_pid

BINARY = "prometheus-alertmanager"


class AlertmanagerError(RuntimeError):
    """Alertmanager is not installed, did not start, or answered with an error."""


def alertmanager_binary() -> str:
    found = shutil.which(BINARY)
    if found is None:
        raise AlertmanagerError(f"{BINARY} is not on PATH: apt-get install prometheus-alertmanager")
    return found


def alertmanager_config(
    webhook_url: str,
    token_file: Path,
    group_wait: str = "0s",
    group_interval: str = "1s",
    repeat_interval: str = "1h",
    send_resolved: bool = True,
    matchers: list[str] | None = None,
) -> dict[str, Any]:
    """Alerts to the operator's receiver, grouped per alert and revision.

    With `matchers`, only the alerts that match them; the others go to a receiver
    that sends nothing.
    """
    route: dict[str, Any] = {
        "receiver": "modelrollout",
        "group_by": ["alertname", "namespace", "rollout", "revision"],
        "group_wait": group_wait,
        "group_interval": group_interval,
        "repeat_interval": repeat_interval,
    }
    if matchers is not None:
        route = {
            **route,
            "receiver": "none",
            "routes": [{"receiver": "modelrollout", "matchers": matchers}],
        }
    return {
        "route": route,
        "receivers": [
            {"name": "none"},
            {
                "name": "modelrollout",
                "webhook_configs": [
                    {
                        "url": webhook_url,
                        "send_resolved": send_resolved,
                        "max_alerts": 100,
                        "http_config": {
                            "authorization": {
                                "type": "Bearer",
                                "credentials_file": str(token_file),
                            }
                        },
                    }
                ],
            },
        ],
    }


@dataclass
class Alertmanager:
    """A running Alertmanager: its URL, pid and log (which records each notification)."""

    url: str
    pid: int
    log: Path

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://")

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts it holds now (API v2)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=10) as response:
            alerts: list[dict[str, Any]] = json.load(response)
        return alerts

    def notifications(self) -> tuple[int, int]:
        """(sent, failed) webhook notifications, from its own metrics."""
        sent = failed = 0
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                if 'integration="webhook"' not in line:
                    continue
                if line.startswith("alertmanager_notifications_total"):
                    sent += int(float(line.rsplit(" ", 1)[1]))
                elif line.startswith("alertmanager_notifications_failed_total"):
                    failed += int(float(line.rsplit(" ", 1)[1]))
        return sent, failed

    def stop(self) -> None:
        stop_pid(self.pid)


def start_alertmanager(
    directory: Path, webhook_url: str, token_file: Path, **route: Any
) -> Alertmanager:
    """Alertmanager on a free loopback port, its config and storage under `directory`.

    Clustering (gossip, port 9094 by default) is off: one instance, nothing else bound.
    Debug logging records each notification with its time ("Notify success").
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    config_file = directory / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(alertmanager_config(webhook_url, token_file, **route)))
    port = free_port()
    log_path = directory / "alertmanager.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                alertmanager_binary(),
                f"--config.file={config_file}",
                f"--storage.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=debug",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    manager = Alertmanager(f"http://127.0.0.1:{port}", process.pid, log_path)
    deadline = time.monotonic() + 30
    while not manager.is_ready():
        if not pid_alive(process.pid) or time.monotonic() > deadline:
            manager.stop()
            raise AlertmanagerError(
                f"Alertmanager did not become ready; its log: {log_path}\n"
                + log_path.read_text()[-2000:]
            )
        time.sleep(0.2)
    return manager
