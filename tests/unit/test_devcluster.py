"""Pure parts of the local cluster: wrapper go.mod, version stamping, fake nodes, scrape config."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from modelrollout_dev.alertmanager import alertmanager_config
from modelrollout_dev.load import served_revision
from modelrollout_dev.nodes import GPU_RESOURCE, cluster_nodes
from modelrollout_dev.podnetwork import PodNetwork
from modelrollout_dev.podprocesses import local_command, local_eval_command, local_load_command
from modelrollout_dev.prometheus import MODEL_PODS_JOB, prometheus_config
from modelrollout_dev.toolchain import (
    ToolchainError,
    kubernetes_ldflags,
    kubernetes_wrapper_go_mod,
    staging_modules,
    traefik_wrapper_go_mod,
    with_only_dns_providers,
)

pytestmark = pytest.mark.unit

RELEASE_GO_MOD = """module k8s.io/kubernetes

go 1.24.0

require (
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/kube-openapi => k8s.io/kube-openapi v0.0.0-2025
)
"""


def test_wrapper_replaces_every_staging_module_with_its_published_version() -> None:
    go_mod = kubernetes_wrapper_go_mod("v1.34.4", RELEASE_GO_MOD)
    assert "require k8s.io/kubernetes v1.34.4" in go_mod
    assert "\tk8s.io/api => k8s.io/api v0.34.4" in go_mod
    assert "\tk8s.io/client-go => k8s.io/client-go v0.34.4" in go_mod
    # Only staging modules are replaced; pinned third-party replaces are not copied.
    assert "kube-openapi" not in go_mod
    assert staging_modules(RELEASE_GO_MOD) == ["k8s.io/api", "k8s.io/client-go"]


def test_a_go_mod_without_staging_replaces_is_an_error() -> None:
    with pytest.raises(ToolchainError, match="no staging replace"):
        staging_modules("module k8s.io/kubernetes\n")


def test_version_is_stamped_for_server_and_client_packages() -> None:
    flags = kubernetes_ldflags("v1.34.4")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.34.4" in flags
        assert f"-X {package}.gitMajor=1" in flags
        assert f"-X {package}.gitMinor=34" in flags


TRAEFIK_GO_MOD = """module github.com/traefik/traefik/v3

go 1.26.0

require (
\tgithub.com/traefik/traefik/dynamic/ext v0.0.0-00010101000000-000000000000
)

// Dynamic config extension.
replace github.com/traefik/traefik/dynamic/ext => ./pkg/config/dynamic/ext

// Containous forks
replace (
\tgithub.com/abbot/go-http-auth => github.com/containous/go-http-auth v0.4.1-0.2026
\tgithub.com/gorilla/mux => github.com/containous/mux v0.0.0-2025 // a fork
)

exclude github.com/tencentcloud/tencentcloud-sdk-go v3.0.83+incompatible
"""


def test_traefik_wrapper_carries_its_replaces_and_excludes_with_ext_in_the_wrapper() -> None:
    go_mod = traefik_wrapper_go_mod("v3.7.13", TRAEFIK_GO_MOD)
    assert "\ngo 1.26.0\n" in go_mod
    assert "require github.com/traefik/traefik/v3 v3.7.13" in go_mod
    assert "\tgithub.com/traefik/traefik/dynamic/ext => ./traefik-dynamic-ext\n" in go_mod
    # Traefik's fork of go-http-auth is refused by the proxy here: the wrapper carries one.
    assert "\tgithub.com/abbot/go-http-auth => ./go-http-auth\n" in go_mod
    assert "\tgithub.com/gorilla/mux => github.com/containous/mux v0.0.0-2025\n" in go_mod
    assert "\tgithub.com/go-acme/lego/v5 => ./lego\n" in go_mod
    assert "exclude github.com/tencentcloud/tencentcloud-sdk-go v3.0.83+incompatible" in go_mod


def test_a_traefik_go_mod_with_another_local_replace_is_an_error() -> None:
    with pytest.raises(ToolchainError, match="with a path"):
        traefik_wrapper_go_mod("v3.7.13", TRAEFIK_GO_MOD + "replace example.com/x => ../x\n")


LEGO_PROVIDERS_GO = """package dns

import (
\t"github.com/go-acme/lego/v5/providers/dns/edgedns"
\t"github.com/go-acme/lego/v5/providers/dns/exec"
)

func NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {
\tswitch name {
\tcase "edgedns", "fastdns":
\t\treturn edgedns.NewDNSProvider()
\tcase "exec":
\t\treturn exec.NewDNSProvider()
\t}
}
"""


def test_the_provider_table_keeps_only_the_named_providers_imports_and_cases() -> None:
    trimmed = with_only_dns_providers(LEGO_PROVIDERS_GO, ("exec",))
    assert "edgedns" not in trimmed and "fastdns" not in trimmed
    assert '\t"github.com/go-acme/lego/v5/providers/dns/exec"\n' in trimmed
    assert '\tcase "exec":\n\t\treturn exec.NewDNSProvider()\n' in trimmed
    assert with_only_dns_providers(LEGO_PROVIDERS_GO, ("edgedns", "exec")) == LEGO_PROVIDERS_GO
    with pytest.raises(ToolchainError, match="provider table changed: yandexcloud not found"):
        with_only_dns_providers(LEGO_PROVIDERS_GO, ("exec", "yandexcloud"))


def test_gpu_nodes_are_tainted_and_advertise_gpus_cpu_nodes_do_not() -> None:
    nodes = cluster_nodes(gpu_nodes=2, gpus_per_node=4, cpu_nodes=1)
    gpu = [n for n in nodes if GPU_RESOURCE in n["status"]["allocatable"]]
    cpu = [n for n in nodes if GPU_RESOURCE not in n["status"]["allocatable"]]
    assert [n["metadata"]["name"] for n in gpu] == ["gpu-node-0", "gpu-node-1"]
    assert len(cpu) == 1
    for node in gpu:
        assert node["status"]["allocatable"][GPU_RESOURCE] == "4"
        assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
        assert node["spec"]["taints"] == [
            {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
        ]
    assert "taints" not in cpu[0]["spec"]
    assert all(n["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake" for n in nodes)


def test_bad_node_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        cluster_nodes(gpu_nodes=1, gpus_per_node=0, cpu_nodes=0)


def test_prometheus_discovers_targets_and_rules_from_the_given_folders(tmp_path: Path) -> None:
    config = json.loads(prometheus_config(tmp_path / "sd", tmp_path / "rules", None))
    (scrape,) = config["scrape_configs"]
    assert scrape["file_sd_configs"][0]["files"] == [str(tmp_path / "sd" / "*.json")]
    assert config["rule_files"] == [str(tmp_path / "rules" / "*.yml")]
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    assert alertmanagers["file_sd_configs"][0]["files"] == [
        str(tmp_path / "sd" / "alertmanagers" / "*.json")
    ]


def test_prometheus_discovers_serving_pods_with_the_charts_own_scrape_job(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    config = json.loads(prometheus_config(tmp_path / "sd", tmp_path / "rules", kubeconfig))
    pods, files = config["scrape_configs"]
    chart_job = yaml.safe_load(MODEL_PODS_JOB.read_text())
    assert pods["relabel_configs"] == chart_job["relabel_configs"]
    assert pods["kubernetes_sd_configs"] == [{"role": "pod", "kubeconfig_file": str(kubeconfig)}]
    assert "file_sd_configs" in files


def test_an_evaluation_pod_runs_locally_against_the_servers_of_its_revisions() -> None:
    container = {
        "command": ["modelserve", "eval"],
        "args": ["--suite", "/suite/suite.yaml", "--candidate", "http://chat-new:8000",
                 "--stable", "http://chat-old:8000", "--model", "chat"],
    }  # fmt: skip
    servers = {"http://chat-new:8000": "http://127.0.0.1:4001"}
    command = local_eval_command(
        container, Path("/tmp/s.yaml"), Path("/tmp/log"), lambda url: servers.get(url, url)
    )
    assert command is not None
    assert command[1:] == [
        "eval", "--suite", "/tmp/s.yaml", "--candidate", "http://127.0.0.1:4001",
        "--stable", "http://chat-old:8000", "--model", "chat", "--termination-log", "/tmp/log",
    ]  # fmt: skip
    serving = {"command": ["modelserve", "serve"], "args": []}
    assert local_eval_command(serving, Path("s"), Path("l"), str) is None


def test_a_load_pod_runs_locally_against_the_server_of_its_candidate() -> None:
    container = {
        "command": ["modelserve", "loadgen"],
        "args": ["--target", "http://chat-new:8000", "--model", "chat", "--rate", "2",
                 "--duration", "60", "--prompts-file", "/prompts/prompts.txt"],
    }  # fmt: skip
    servers = {"http://chat-new:8000": "http://127.0.0.1:4001"}
    command = local_load_command(container, Path("/tmp/p.txt"), lambda url: servers.get(url, url))
    assert command is not None
    assert command[1:] == [
        "loadgen", "--target", "http://127.0.0.1:4001", "--model", "chat", "--rate", "2",
        "--duration", "60", "--prompts-file", "/tmp/p.txt",
    ]  # fmt: skip
    evaluation = {"command": ["modelserve", "eval"], "args": []}
    assert local_load_command(evaluation, Path("p"), str) is None


def test_each_node_takes_a_24_of_the_cluster_pod_cidr_the_same_one_every_time() -> None:
    network = PodNetwork("modelrollout-t", "10.241.0.0/16")
    subnet = network.node_subnet("harness-ns-a")
    assert subnet.prefixlen == 24
    assert subnet.subnet_of(ipaddress.IPv4Network("10.241.0.0/16"))
    assert network.node_subnet("harness-ns-a") == subnet


def test_a_pod_server_listens_on_its_pod_ip_and_declared_port_inside_the_namespace() -> None:
    container = {
        "command": ["modelserve", "serve"],
        "args": ["--model-uri", "file:///m", "--host", "0.0.0.0", "--port=8000"],
        "ports": [{"name": "http", "containerPort": 9000}],
    }
    command = local_command(container, "10.241.7.9")
    assert command is not None
    assert command[1:] == [
        "serve", "--model-uri", "file:///m", "--host", "10.241.7.9", "--port", "9000"
    ]  # fmt: skip
    wrapped = PodNetwork("modelrollout-t", "10.241.0.0/16").command(command)
    assert wrapped == ["ip", "netns", "exec", "modelrollout-t", *command]


def test_an_answer_is_counted_for_the_revision_of_the_pod_that_gave_it() -> None:
    def headers(**values: str) -> httpx.Headers:
        return httpx.Headers({k.replace("_", "-"): v for k, v in values.items()})

    by_pod = headers(x_modelserve_pod="chat-4b4e49c77f-7d9f8c6b5-x2k4q")
    assert served_revision(by_pod, "chat") == "4b4e49c77f"
    # The project's proxy says it outright.
    assert served_revision(headers(x_served_by_revision="0a1b2c3d4e"), "chat") == "0a1b2c3d4e"
    # Not a Deployment's pod of this rollout, or no pod named (the gateway's own answer).
    for pod in ("other-4b4e49c77f-7d9f8c6b5-x2k4q", "chat-4b4e49c77f", ""):
        assert served_revision(headers(x_modelserve_pod=pod), "chat") == "none"
    assert served_revision(headers(), "chat") == "none"


def test_the_local_alertmanagers_configuration_routes_to_the_receiver_with_the_token(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t")
    for matchers in (None, ['path="pushed"']):
        config = alertmanager_config("http://127.0.0.1:1/alerts", token_file, matchers=matchers)
        route = config["route"] if matchers is None else config["route"]["routes"][0]
        assert route["receiver"] == "modelrollout"
        assert config["route"]["group_wait"] == "0s"
        (webhook,) = next(r for r in config["receivers"] if r["name"] == "modelrollout")[
            "webhook_configs"
        ]
        assert webhook["http_config"]["authorization"]["credentials_file"] == str(token_file)
        config_file = tmp_path / "alertmanager.yml"
        config_file.write_text(yaml.safe_dump(config))
        # Alertmanager's own checker accepts it.
        checked = subprocess.run(
            ["amtool", "check-config", str(config_file)], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
