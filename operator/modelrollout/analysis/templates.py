"""`{{variable}}` templates in PromQL, rendered safely.

Values are escaped for a PromQL double-quoted string (backslash, quote,
newline), because templates sit inside label matchers: `revision="{{canary.revision}}"`.
Escaping protects a value only there, so a variable anywhere else (bare, in a
single-quoted or backquoted string, in a comment) is an error, as is an
unknown variable: never an empty string. A label value given on its own
(an alert's matchLabels) is escaped whole, its literal text included.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

TEMPLATE_VARIABLES = ("namespace", "rollout", "canary.revision", "stable.revision", "model")

_VARIABLE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class TemplateError(ValueError):
    """A template names a variable that does not exist, or uses one where it is not escaped."""


def template_variables(text: str) -> list[str]:
    """The variable names a template uses, in order of appearance."""
    return [match.group(1) for match in _VARIABLE.finditer(text)]


def _double_quoted(text: str) -> list[bool]:
    """For each character of PromQL `text`: whether it lies inside a double-quoted string.

    PromQL has three string forms ("...", '...' with backslash escapes, `...`
    raw) and `#` comments to the end of the line; a quote character inside
    one of them opens nothing.
    """
    inside: list[bool] = []
    opened: str | None = None  # the quote or "#" that is open
    escaped = False
    for char in text:
        inside.append(opened == '"')
        if opened is None:
            if char in "\"'`#":
                opened = char
        elif opened == "#":
            if char == "\n":
                opened = None
        elif escaped:
            escaped = False
        elif char == "\\" and opened != "`":
            escaped = True
        elif char == opened:
            opened = None
            inside[-1] = False
    return inside


def unquoted_variables(template: str) -> list[str]:
    """Variables of `template` outside a double-quoted string, where escaping cannot protect."""
    inside = _double_quoted(template)
    return [
        match.group(1)
        for match in _VARIABLE.finditer(template)
        if not all(inside[match.start() : match.end()])
    ]


def escape_promql_string(value: str) -> str:
    """`value` made safe between double quotes in PromQL."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


def _value(name: str, context: Mapping[str, str]) -> str:
    if name not in TEMPLATE_VARIABLES:
        raise TemplateError(f"unknown template variable {{{{{name}}}}}")
    if name not in context:
        raise TemplateError(f"template variable {{{{{name}}}}} has no value here")
    return context[name]


def render(template: str, context: Mapping[str, str]) -> str:
    """Replace every `{{name}}` with its escaped value from `context`."""
    unquoted = unquoted_variables(template)
    if unquoted:
        raise TemplateError(
            f"template variable {{{{{unquoted[0]}}}}} is outside a double-quoted string"
        )
    return _VARIABLE.sub(
        lambda match: escape_promql_string(_value(match.group(1), context)), template
    )


def label_value(template: str, context: Mapping[str, str]) -> str:
    """`template` with every variable replaced by its value, unescaped: the label's value."""
    parts: list[str] = []
    end = 0
    for match in _VARIABLE.finditer(template):
        parts += [template[end : match.start()], _value(match.group(1), context)]
        end = match.end()
    parts.append(template[end:])
    return "".join(parts)


def render_label_value(template: str, context: Mapping[str, str]) -> str:
    """`template` as the escaped content of one double-quoted label value: literal text too."""
    return escape_promql_string(label_value(template, context))
