"""Where metric values come from: the MetricProvider protocol and what it may read.

A provider answers one query in its own language with one number, or says
why it cannot. It never raises and never blocks longer than its configured
timeout: the tick that calls it moves every rollout. It also owns its query
language: it renders `{{variable}}` templates, quoting values the way its
language needs, and writes the queries of alerts and built-in checks.

Providers are chosen by the `type` of `spec.analysis.provider`
(analysis/registry.py). Credentials come from Secrets (and CAs from
ConfigMaps) named in the spec, read through `References`; a reference that
cannot be read makes the analysis unavailable with a message naming the field,
and no value read ever appears in a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from modelrollout.analysis.builtins import CheckQueries
from modelrollout.models.spec import Alert, Check, ConfigMapKeyRef, SecretKeyRef


@dataclass(frozen=True)
class QueryResult:
    """One query's answer.

    `value` is a number (possibly +/-Inf) when the query returned exactly one
    finite-or-infinite sample; otherwise None, with `empty` True when the
    query matched nothing and `error` saying what went wrong otherwise.
    """

    value: float | None
    error: str | None = None
    empty: bool = False


class MetricProvider(Protocol):
    def query(self, query: str) -> QueryResult: ...

    def is_online(self) -> bool: ...

    def offline_reason(self) -> str:
        """Why the last `is_online()` said no, for status: never a secret value."""
        ...

    def render_query(self, template: str, context: Mapping[str, str]) -> str:
        """The template with each `{{name}}` replaced by its value, quoted for the language.

        Raises TemplateError for an unknown variable or one where quoting cannot protect.
        """
        ...

    def alert_query(self, alert: Alert, context: Mapping[str, str]) -> str:
        """A query counting the firing series of `alert` (no series: none fires)."""
        ...

    def check_queries(self, check: Check) -> CheckQueries:
        """The query templates of a check: its own query, or a built-in's in this language."""
        ...


class UnresolvedReference(Exception):
    """A Secret or ConfigMap key named in the spec could not be read."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field_path = field_path


class References(Protocol):
    """Reads the keys a provider's config names, in the rollout's namespace.

    Both raise UnresolvedReference naming `field_path` when the object or key
    is missing or may not be read.
    """

    def secret(self, ref: SecretKeyRef, field_path: str) -> str: ...

    def config_map(self, ref: ConfigMapKeyRef, field_path: str) -> str: ...


class NoReferences:
    """References where nothing may be read: a config that names a Secret cannot be used."""

    def secret(self, ref: SecretKeyRef, field_path: str) -> str:
        raise UnresolvedReference(field_path, "no Secrets can be read here")

    def config_map(self, ref: ConfigMapKeyRef, field_path: str) -> str:
        raise UnresolvedReference(field_path, "no ConfigMaps can be read here")


class UnconfiguredProvider:
    """Stands in where a rollout names no metric source: every answer is 'unavailable'."""

    _REASON = "no metric provider configured (spec.analysis.provider)"

    def query(self, query: str) -> QueryResult:
        return QueryResult(None, error=self._REASON)

    def is_online(self) -> bool:
        return False

    def offline_reason(self) -> str:
        return self._REASON

    def render_query(self, template: str, context: Mapping[str, str]) -> str:
        return template

    def alert_query(self, alert: Alert, context: Mapping[str, str]) -> str:
        return alert.alertname

    def check_queries(self, check: Check) -> CheckQueries:
        return CheckQueries(check.query or check.name)
