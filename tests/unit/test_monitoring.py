"""The chart's standard alerts and Grafana dashboard, checked with Prometheus' own promtool.

The alerting rules run their unit tests (`alerts.rules.test.yaml`) in
`promtool test rules`; every PromQL expression of the dashboard goes through
promtool's parser; every metric name in either must be one that modelserve or
the operator really exports, read from their prometheus_client registries.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from modelrollout.metrics import OperatorMetrics
from modelserve.metrics import ServingMetrics

pytestmark = pytest.mark.unit

FILES = Path(__file__).resolve().parents[2] / "charts" / "modelrollout" / "files"
RULES = FILES / "alerts.rules.yaml"
RULES_TEST = FILES / "alerts.rules.test.yaml"
DASHBOARD = FILES / "grafana-dashboard.json"
RUNBOOK = "https://github.com/modelrollout/modelrollout/blob/main/docs/troubleshooting.md"

# Exported by vLLM itself (engine `vllm`) and not by modelserve; checked below to stay so.
VLLM_ONLY = frozenset({"vllm:kv_cache_usage_perc"})
# Series Prometheus writes itself.
PROMETHEUS_SERIES = frozenset({"ALERTS"})

# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
VARIABLE_VALUES = {"namespace": "default", "rollout": "chat"}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# A whole identifier not called as a function; the lookbehind skips units of `5m`, `0.99`.
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "offset", "bool", "inf", "nan"}
)  # fmt: skip
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.*),\s*(?P<label>\w+)\)$")


def metric_names(promql: str) -> set[str]:
    """The metric names a PromQL expression selects (strings, matchers and grouping stripped)."""
    text = _STRING.sub('""', promql)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name not in _KEYWORDS}


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Series names a registry exposes, labelled families without children included."""
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        elif family.type == "summary":
            names.update({family.name, f"{family.name}_sum", f"{family.name}_count"})
        elif family.type == "gauge":
            names.add(family.name)
        else:
            raise AssertionError(f"metric {family.name}: type {family.type} not handled here")
    return names


def serving_names() -> set[str]:
    return exported_names(ServingMetrics("chat").registry)


def known_names() -> set[str]:
    return serving_names() | exported_names(OperatorMetrics().registry) | VLLM_ONLY


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and annotation query of the dashboard."""
    exprs: list[tuple[str, str]] = []
    board = dashboard()
    for panel in _walk(board["panels"]):
        for target in panel.get("targets", []):
            exprs.append((f"panel {panel['title']!r} target {target['refId']}", target["expr"]))
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            exprs.append((f"annotation {annotation['name']!r}", annotation["expr"]))
    return exprs


def variable_selectors() -> list[tuple[str, str]]:
    """(where, selector) of every `label_values(selector, label)` template variable."""
    selectors: list[tuple[str, str]] = []
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text)
        assert match, f"variable {variable['name']}: {text!r} is not label_values(selector, label)"
        selectors.append((f"variable {variable['name']!r}", match["selector"]))
    return selectors


def substitute(promql: str, variables: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        assert name in variables, f"undefined dashboard variable ${name} in {promql!r}"
        return variables[name]

    return _VARIABLE.sub(value, promql)


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is needed: apt-get install prometheus (scripts/bootstrap.sh does)")
    return binary


def run_promtool(promtool: str, *args: str, cwd: Path) -> None:
    result = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def test_the_rules_file_is_valid(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", RULES.name, cwd=FILES)


def test_the_alerts_pass_their_unit_tests(promtool: str) -> None:
    run_promtool(promtool, "test", "rules", RULES_TEST.name, cwd=FILES)


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = [
        case
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']}: no case fires it"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']}: no quiet case"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"warning", "critical"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    # The anchor GitHub derives from a `## <AlertName>` heading of the troubleshooting doc.
    assert annotations["runbook_url"] == f"{RUNBOOK}#{rule['alert'].lower()}"


def test_serving_alerts_name_the_rollout_and_revision_they_group_by() -> None:
    for rule in alert_rules():
        grouping = re.search(r"by \(([^)]*)\)", rule["expr"])
        labels = {label.strip() for label in grouping[1].split(",")} if grouping else set()
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        for label in {"namespace", "rollout", "revision"} & labels:
            assert f"$labels.{label}" in text, f"{rule['alert']} does not name its {label}"


def test_dashboard_identity_and_variables() -> None:
    board = dashboard()
    assert (board["uid"], board["title"]) == ("modelrollout-overview", "ModelRollout")
    assert board["schemaVersion"] >= 39
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "rollout"} <= set(variables)
    for node in _walk(board["panels"]):
        if "datasource" in node and node.get("type") != "row":
            assert node["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, node


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    declared = {variable["name"] for variable in dashboard()["templating"]["list"]}
    assert set(VARIABLE_VALUES) <= declared
    variables = {**GRAFANA_BUILTINS, **VARIABLE_VALUES}
    queries = dashboard_exprs() + variable_selectors()
    rules = [
        {"record": f"dashboard:query_{index}", "expr": substitute(expr, variables)}
        for index, (_, expr) in enumerate(queries)
    ]
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    where = "\n".join(f"dashboard:query_{i}: {w}" for i, (w, _) in enumerate(queries))
    try:
        run_promtool(promtool, "check", "rules", path.name, cwd=tmp_path)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{where}") from None


def test_metric_names_are_parsed_out_of_promql() -> None:
    promql = (
        'sum by (le) (rate(a:b_bucket{x="y}", z=~"5.."}[5m]))'
        " / ignoring (revision) group_left c_total offset 1h"
        ' or label_replace(vector(0.99), "d", "e", "", "") and on () absent(f)'
    )
    assert metric_names(promql) == {"a:b_bucket", "c_total", "f"}


def test_vllm_only_names_are_really_not_exported_by_modelserve() -> None:
    # Once modelserve exports one of them, it belongs to the checked names instead.
    assert not VLLM_ONLY & serving_names()


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    known = known_names() | PROMETHEUS_SERIES
    queries = [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    queries += dashboard_exprs() + variable_selectors()
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric name found in {expr!r}"
        assert names <= known, f"{where}: {sorted(names - known)} not exported"


def test_the_plain_prometheus_job_in_the_docs_is_the_charts_own() -> None:
    """docs/monitoring.md gives users without the Operator the job to paste: the same one."""
    docs = (FILES.parents[2] / "docs" / "monitoring.md").read_text()
    blocks = re.findall(r"```yaml\n(scrape_configs:\n.*?)```", docs, re.S)
    assert len(blocks) == 1, blocks
    (job,) = yaml.safe_load(blocks[0])["scrape_configs"]
    assert job == yaml.safe_load((FILES / "model-pods.scrape.yaml").read_text())
