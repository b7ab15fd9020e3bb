"""PromQL templates: variables rendered, values escaped, unknown names refused."""

from __future__ import annotations

import pytest

from modelrollout.analysis.prometheus import PromQL, alert_query
from modelrollout.analysis.templates import (
    TemplateError,
    render,
    render_label_value,
    template_variables,
    unquoted_variables,
)
from modelrollout.models import Alert

pytestmark = pytest.mark.unit

CONTEXT = {
    "namespace": "ml",
    "rollout": "chat",
    "canary.revision": "bbbb",
    "stable.revision": "aaaa",
    "model": "chat",
}


def test_renders_every_variable() -> None:
    template = (
        'x{namespace="{{namespace}}",rollout="{{ rollout }}",revision=~"{{canary.revision}}|'
        '{{stable.revision}}",model="{{model}}"}'
    )
    assert render(template, CONTEXT) == (
        'x{namespace="ml",rollout="chat",revision=~"bbbb|aaaa",model="chat"}'
    )


def test_values_cannot_break_out_of_the_string() -> None:
    rendered = render('x{model="{{model}}"}', {**CONTEXT, "model": 'a"} or up{b="\\\n'})
    assert rendered == 'x{model="a\\"} or up{b=\\"\\\\\\n"}'


def test_unknown_variable_is_an_error_naming_it() -> None:
    with pytest.raises(TemplateError, match=r"\{\{pod\}\}"):
        render('x{pod="{{pod}}"}', CONTEXT)


def test_lists_the_variables_a_template_uses() -> None:
    assert template_variables("{{a}} {{ b.c }} {x}") == ["a", "b.c"]


@pytest.mark.parametrize(
    ("template", "unquoted"),
    [
        ('x{a="{{model}}"}', []),
        ('x{a="pre-{{model}}-post",b=~"{{canary.revision}}|{{stable.revision}}"}', []),
        ('x{a="\\"} / {{model}}"}', []),  # an escaped quote does not close the string
        ('x{a="\\\\"} / {{model}}', ["model"]),
        ('x{a="\\\\", b="{{model}}"}', []),
        ("x{a='{{model}}'}", ["model"]),
        ("x{a=`{{model}}`}", ["model"]),
        ('x{a=`"`} {{model}}', ["model"]),  # a double quote in a raw string opens nothing
        ('vector(1) # "{{model}}"', ["model"]),  # nor does one in a comment
        ('vector(1) # "\nx{a="{{model}}"}', []),
        ("{{model}}", ["model"]),
    ],
)
def test_finds_variables_outside_double_quoted_strings(template: str, unquoted: list[str]) -> None:
    assert unquoted_variables(template) == unquoted


def test_a_variable_outside_a_double_quoted_string_is_not_rendered() -> None:
    with pytest.raises(TemplateError, match="outside a double-quoted string"):
        render("sum(x) / {{model}}", {**CONTEXT, "model": "1) or vector(1"})


def test_label_values_are_escaped_whole() -> None:
    hostile = 'x"} or vector(1) #'
    assert render_label_value(f"{hostile}{{{{model}}}}", {**CONTEXT, "model": '\\"'}) == (
        'x\\"} or vector(1) #\\\\\\"'
    )


def test_alert_match_labels_stay_label_values() -> None:
    alert = Alert(alertname="A", match_labels={"namespace": 'ml"} or vector(1) #'})
    assert alert_query(alert, CONTEXT) == (
        'count(ALERTS{alertname="A",alertstate="firing",namespace="ml\\"} or vector(1) #"})'
    )


def test_a_rendered_query_is_remembered_per_revision() -> None:
    promql = PromQL()
    template = 'max(x{revision="{{canary.revision}}"})'
    assert promql.render_query(template, CONTEXT) == 'max(x{revision="bbbb"})'
    assert promql.render_query(template, dict(CONTEXT)) == 'max(x{revision="bbbb"})'
    assert promql.renders == 1
    # A new canary revision is a new query, rendered at its first evaluation.
    assert (
        promql.render_query(template, {**CONTEXT, "canary.revision": "cccc"})
        == 'max(x{revision="cccc"})'
    )
    assert promql.renders == 2
    # So is any other variable, and another template.
    promql.render_query(template, {**CONTEXT, "namespace": "other"})
    promql.render_query('max(y{revision="{{canary.revision}}"})', CONTEXT)
    assert promql.renders == 4
    assert promql.render_query(template, CONTEXT) == 'max(x{revision="bbbb"})'
    assert promql.renders == 4


def test_remembered_alert_queries_follow_the_labels_and_the_revision() -> None:
    promql = PromQL()
    alert = Alert(alertname="High", matchLabels={"revision": "{{canary.revision}}"})
    assert promql.alert_query(alert, CONTEXT) == alert_query(alert, CONTEXT)
    promql.alert_query(alert, CONTEXT)
    assert promql.renders == 1
    other_revision = {**CONTEXT, "canary.revision": "cccc"}
    assert promql.alert_query(alert, other_revision) == alert_query(alert, other_revision)
    other_labels = Alert(alertname="High", matchLabels={"revision": "{{stable.revision}}"})
    assert promql.alert_query(other_labels, CONTEXT) == alert_query(other_labels, CONTEXT)
    assert promql.renders == 3


def test_rendered_queries_are_bounded_and_errors_not_remembered() -> None:
    promql = PromQL(max_rendered=2)
    for revision in ("r1", "r2", "r3"):
        promql.render_query('x{r="{{canary.revision}}"}', {**CONTEXT, "canary.revision": revision})
    promql.render_query('x{r="{{canary.revision}}"}', {**CONTEXT, "canary.revision": "r1"})
    assert promql.renders == 4  # r1 was dropped for r3, the least recently used
    for _ in range(2):
        with pytest.raises(TemplateError, match="unknown"):
            promql.render_query('x{r="{{nope}}"}', CONTEXT)
    assert promql.renders == 4
