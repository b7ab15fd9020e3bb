"""A notification's text: `string.Template` (`$rollout`, `${check}`), never code.

Templates come from users (a rollout's spec, a namespace's Secret), so they
are substitutions only: no expressions, attribute access or filters that a
template engine would evaluate. An unknown variable is refused when the spec
is read (a clear error naming the field), not discovered at delivery.
"""

from __future__ import annotations

from collections.abc import Mapping
from string import Template

TEMPLATE_VARIABLES = (
    "kind",
    "severity",
    "namespace",
    "rollout",
    "phase",
    "message",
    "reason",
    "revision",
    "stable",
    "canary",
    "model",
    "step",
    "steps",
    "weight",
    "check",
    "value",
    "threshold",
    "time",
)

DEFAULT_TEMPLATE = "[$namespace/$rollout] $kind: $message"


def template_problem(text: str) -> str | None:
    """Why `text` is not a usable template, or None."""
    template = Template(text)
    if not template.is_valid():
        return "not a valid template: write $name or ${name}, and $$ for a dollar sign"
    unknown = [name for name in template.get_identifiers() if name not in TEMPLATE_VARIABLES]
    if unknown:
        return f"unknown template variable ${unknown[0]}; known: " + ", ".join(
            f"${name}" for name in TEMPLATE_VARIABLES
        )
    return None


def render_text(text: str | None, variables: Mapping[str, str]) -> str:
    """`text` (DEFAULT_TEMPLATE when None) with every variable replaced; a checked template."""
    return Template(text or DEFAULT_TEMPLATE).substitute(
        {name: variables.get(name, "") for name in TEMPLATE_VARIABLES}
    )
