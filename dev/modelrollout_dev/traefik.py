"""Traefik as the local cluster's Gateway API implementation (built by toolchain.ensure_traefik).

Traefik runs as a process beside the control plane, as a Gateway controller
would run in a cluster: it watches GatewayClasses, Gateways and HTTPRoutes
through the API server, writes their status, and serves what they declare on
one HTTP entrypoint. Its API (the routers and services it built) listens on a
second entrypoint, so a test can see what Traefik made of the routes.

It reaches the API server through `KUBECONFIG`: Traefik's Gateway provider
hands that file to client-go's own loader, which takes client certificates
(what the local cluster's kubeconfig has), whereas its `endpoint`/`token`/
`certAuthFilePath` options have no client certificate.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modelrollout.engine.revision import REVISION_LENGTH
from modelrollout_dev import toolchain
from modelrollout_dev.logs import log_tail
from modelrollout_dev.processes import free_port

CONTROLLER_NAME = "traefik.io/gateway-controller"
GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"
# The entrypoint Gateway listeners attach to (Traefik matches a listener to it by port).
ENTRYPOINT = "web"
# Traefik serves its API and /ping on the entrypoint of this name.
API_ENTRYPOINT = "traefik"
# How Traefik forwards to HTTP/1.1 servers. Its default proxy (Go's httputil.ReverseProxy
# on net/http's Transport) can cut an answer after its 200: when the answer's first bytes
# go out while the Transport still reads the request body (its last read checks that the
# body ends at its Content-Length), Go's HTTP/1 server drains and closes that body, the
# Transport's read fails, and it closes the server connection the answer is coming on
# (golang/go#40747; seen here as "ReverseProxy read error during body copy: use of closed
# network connection" about once in 2000 requests on a loaded machine). The fast proxy
# writes the whole request before it reads the answer.
PROXY_ARGS = ("--experimental.fastProxy=true",)


class TraefikError(RuntimeError):
    """Traefik did not start; the message carries the end of its log."""


def gateway_class_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}",
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": CONTROLLER_NAME},
    }


def gateway_manifest(name: str, namespace: str, class_name: str, port: int) -> dict[str, Any]:
    """One HTTP listener on Traefik's entrypoint port, taking routes from every namespace."""
    return {
        "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "gatewayClassName": class_name,
            "listeners": [
                {
                    "name": "http",
                    "protocol": "HTTP",
                    "port": port,
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                }
            ],
        },
    }


def service_route(namespace: str, gateway: str, service: str, port: int = 8000) -> dict[str, Any]:
    """A user's HTTPRoute sending everything on `gateway` to one Service: the gateway in
    front of the service router's Service, spreading over its endpoints as kube-proxy does."""
    return {
        "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}",
        "kind": "HTTPRoute",
        "metadata": {"name": f"{service}-entry", "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": gateway}],
            "rules": [{"backendRefs": [{"name": service, "port": port}]}],
        },
    }


class Traefik:
    """One Traefik process, its GatewayClass and one Gateway on its entrypoint."""

    def __init__(
        self,
        kubeconfig: str,
        log_dir: Path,
        gateway_namespace: str,
        gateway_name: str = "traefik",
        class_name: str = "traefik",
        host: str = "127.0.0.1",
        namespaces: tuple[str, ...] = (),
    ) -> None:
        self.kubeconfig = kubeconfig
        # Where it takes Gateways, routes and endpoints from (all when empty): Traefiks of
        # one cluster that watch apart do not program each other's Gateways.
        self.namespaces = namespaces
        self.gateway_namespace = gateway_namespace
        self.gateway_name = gateway_name
        self.class_name = class_name
        self.host = host
        self.log_path = log_dir / f"traefik-{gateway_namespace}-{gateway_name}.log"
        # One JSON line per request: which router, service and server took it, and how.
        self.access_log_path = self.log_path.with_suffix(".access.jsonl")
        self.port = 0
        self.api_port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where the Gateway's listener serves."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """Traefik's own API: /api/http/routers, /api/http/services, /ping."""
        return f"http://{self.host}:{self.api_port}"

    @property
    def pid(self) -> int:
        assert self._process is not None, "traefik not started"
        return self._process.pid

    def command(self, binary: Path) -> list[str]:
        return [
            str(binary),
            "--global.checkNewVersion=false",
            "--global.sendAnonymousUsage=false",
            f"--entryPoints.{ENTRYPOINT}.address={self.host}:{self.port}",
            f"--entryPoints.{API_ENTRYPOINT}.address={self.host}:{self.api_port}",
            "--api.insecure=true",
            "--api.dashboard=false",
            "--ping=true",
            *PROXY_ARGS,
            "--providers.kubernetesgateway=true",
            *(
                [f"--providers.kubernetesgateway.namespaces={','.join(self.namespaces)}"]
                if self.namespaces
                else []
            ),
            f"--providers.kubernetesgateway.statusAddress.ip={self.host}",
            "--log.level=INFO",
            "--accesslog=true",
            f"--accesslog.filepath={self.access_log_path}",
            "--accesslog.format=json",
        ]

    def start(self, timeout: float = 60.0) -> None:
        """Start Traefik, wait for its /ping, then create the CRDs it watches that the
        cluster lacks, the GatewayClass and the Gateway."""
        binary = toolchain.ensure_traefik()
        self.port = free_port(self.host)
        self.api_port = free_port(self.host)
        # Traefik would take these for an in-cluster client and ignore KUBECONFIG.
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
        }
        env["KUBECONFIG"] = self.kubeconfig
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(binary),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self._wait_for_ping(timeout)
            self._apply_gateway()
        except BaseException:
            self.stop()
            raise

    def _wait_for_ping(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise TraefikError(
                    f"traefik exited ({self._process.returncode}):\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.api_url}/ping", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TraefikError(
            f"traefik did not answer /ping within {timeout:.0f}s:\n{self.log_tail()}"
        )

    def _apply_gateway(self) -> None:
        with config.new_client_from_config(config_file=self.kubeconfig) as api_client:
            self._create_missing_crds(client.ApiextensionsV1Api(api_client))
            self._create_gateway(client.CustomObjectsApi(api_client))

    def _create_missing_crds(self, api: client.ApiextensionsV1Api, timeout: float = 60) -> None:
        for path in toolchain.traefik_extra_crd_files():
            crd = yaml.safe_load(path.read_text())
            try:
                api.create_custom_resource_definition(crd)
            except ApiException as error:
                if error.status != 409:  # there already, from this release or a later one
                    raise
            deadline = time.monotonic() + timeout
            while not any(
                condition.type == "Established" and condition.status == "True"
                for condition in api.read_custom_resource_definition(
                    crd["metadata"]["name"]
                ).status.conditions
                or []
            ):
                if time.monotonic() > deadline:
                    raise TraefikError(f"CRD {crd['metadata']['name']} not Established")
                time.sleep(0.2)

    def _create_gateway(self, api: client.CustomObjectsApi) -> None:
        try:
            api.create_cluster_custom_object(
                GATEWAY_GROUP,
                GATEWAY_VERSION,
                "gatewayclasses",
                gateway_class_manifest(self.class_name),
            )
        except ApiException as error:
            if error.status != 409:  # another Traefik of this cluster made it
                raise
        gateway = gateway_manifest(
            self.gateway_name, self.gateway_namespace, self.class_name, self.port
        )
        try:
            api.create_namespaced_custom_object(
                GATEWAY_GROUP, GATEWAY_VERSION, self.gateway_namespace, "gateways", gateway
            )
        except ApiException as error:
            if error.status != 409:
                raise
            # A Gateway left from an earlier Traefik: point its listener at this one's port.
            api.patch_namespaced_custom_object(
                GATEWAY_GROUP,
                GATEWAY_VERSION,
                self.gateway_namespace,
                "gateways",
                self.gateway_name,
                {"spec": gateway["spec"]},
            )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM by pid (its own process group), SIGKILL when it lingers."""
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def access_log_length(self) -> int:
        """Requests logged so far: where `answers_by_revision(since=...)` starts counting."""
        if not self.access_log_path.exists():
            return 0
        return len(self.access_log_path.read_text().splitlines())

    def answers_by_revision(
        self, namespace: str, rollout: str, since: int = 0
    ) -> Counter[tuple[str, str]]:
        """The requests Traefik answered after the first `since`, by (revision, status).

        From its access log: the revision is that of the gatewayAPI router's Service the
        request went to (`<rollout>-<revision>`, in Traefik's service name), "none"
        where it went to none. What the gateway saw: a client's own connection errors
        are not in it, and an answer it cut after its headers counts as sent.
        """
        service = re.compile(
            rf"-svc-{re.escape(namespace)}-{re.escape(rollout)}-([0-9a-f]{{{REVISION_LENGTH}}})-"
        )
        answers: Counter[tuple[str, str]] = Counter()
        for line in self.access_log_path.read_text().splitlines()[since:]:
            entry = json.loads(line)
            match = service.search(entry.get("ServiceName", ""))
            answers[(match.group(1) if match else "none", str(entry["DownstreamStatus"]))] += 1
        return answers

    def __enter__(self) -> Traefik:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
