"""`{{variable}}` templates in PromQL, rendered safely.

Values are escaped for a PromQL double-quoted string (backslash, quote,
newline), because templates sit inside label matchers: `revision="{{canary.revision}}"`.
An unknown variable is an error naming it, never an empty string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

TEMPLATE_VARIABLES = ("namespace", "rollout", "canary.revision", "stable.revision", "model")

_VARIABLE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class TemplateError(ValueError):
    """A template names a variable that does not exist."""


def template_variables(text: str) -> list[str]:
    """The variable names a template uses, in order of appearance."""
    return [match.group(1) for match in _VARIABLE.finditer(text)]


def escape_promql_string(value: str) -> str:
    """`value` made safe between double quotes in PromQL."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


def render(template: str, context: Mapping[str, str]) -> str:
    """Replace every `{{name}}` with its escaped value from `context`."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in TEMPLATE_VARIABLES:
            raise TemplateError(f"unknown template variable {{{{{name}}}}}")
        if name not in context:
            raise TemplateError(f"template variable {{{{{name}}}}} has no value here")
        return escape_promql_string(context[name])

    return _VARIABLE.sub(substitute, template)
