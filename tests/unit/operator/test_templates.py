"""PromQL templates: variables rendered, values escaped, unknown names refused."""

from __future__ import annotations

import pytest

from modelrollout.analysis.templates import TemplateError, render, template_variables

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
