"""Which sinks a rollout's notifications go to, with their URLs read from Secrets.

A rollout's `spec.notifications`, or, when it sets none, its namespace's
default: the Secret `modelrollout-notifications`, key `notifications.yaml`,
holding the same object as YAML. Read when notifications are sent (by the
sender, never in a tick), each Secret by one GET by name: a rotated URL is
seen at the next notification. A namespace's default is looked up at most
once per `DEFAULT_LOOKUP_SECONDS` (`SinkResolver`): most namespaces have none,
and a GET per notification for nothing was most of the operator's reads at
scale; a default created or changed is used within that time. A problem (a
Secret or key missing, a default that does not parse) is reported with the
field it is about; the URL itself never appears in a message.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from modelrollout.analysis.provider import UnresolvedReference
from modelrollout.kube.api import SECRETS, KubeApi, KubeApiError
from modelrollout.kube.references import KubeReferences
from modelrollout.models.notifications import NotificationEvent
from modelrollout.models.spec import Notifications

NAMESPACE_DEFAULT_SECRET = "modelrollout-notifications"
NAMESPACE_DEFAULT_KEY = "notifications.yaml"
# How long a namespace's default (or its absence) is used before it is read again.
DEFAULT_LOOKUP_SECONDS = 15.0


@dataclass(frozen=True)
class Target:
    """One sink of one rollout, ready to send to."""

    field_path: str
    name: str
    sink_type: str
    url: str
    events: frozenset[str]
    template: str | None

    def accepts(self, kind: NotificationEvent) -> bool:
        """The sink's filter: no events listed means all of them."""
        return not self.events or kind in self.events


@dataclass(frozen=True)
class ConfigProblem:
    field_path: str
    message: str

    def __str__(self) -> str:
        return f"{self.field_path}: {self.message}"


NamespaceDefault = tuple[Notifications | None, str, ConfigProblem | None]


def namespace_default(api: KubeApi, namespace: str) -> NamespaceDefault:
    """The namespace's default (None: there is none), the path naming it, and a problem."""
    path = f"Secret {namespace}/{NAMESPACE_DEFAULT_SECRET} key {NAMESPACE_DEFAULT_KEY}"
    try:
        secret = api.get(SECRETS, namespace, NAMESPACE_DEFAULT_SECRET)
    except KubeApiError as error:
        if error.status == 403:
            # Not granted (chart rbac.providerReferences): namespaces have no default then,
            # and a rollout that configured nothing is not told about it at every event.
            return None, path, None
        return None, path, ConfigProblem(path, f"could not be read ({error.status})")
    if secret is None:
        return None, path, None
    encoded = (secret.get("data") or {}).get(NAMESPACE_DEFAULT_KEY)
    if encoded is None:
        return None, path, ConfigProblem(path, "missing")
    try:
        document: Any = yaml.safe_load(base64.b64decode(encoded, validate=True).decode())
        return Notifications.model_validate(document), path, None
    except (binascii.Error, UnicodeDecodeError, yaml.YAMLError):
        return None, path, ConfigProblem(path, "is not YAML text")
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(the document)"
        return None, path, ConfigProblem(f"{path}: {where}", str(first["msg"]))


def resolve(
    api: KubeApi,
    namespace: str,
    configured: Notifications | None,
    default_of: Callable[[KubeApi, str], NamespaceDefault] = namespace_default,
) -> tuple[list[Target], list[ConfigProblem]]:
    """The rollout's sinks with their URLs, and what kept any from being used."""
    if configured is not None:
        notifications, path = configured, "spec.notifications"
    else:
        default, path, problem = default_of(api, namespace)
        if default is None:
            return [], [] if problem is None else [problem]
        notifications = default
    references = KubeReferences(api, namespace)
    targets: list[Target] = []
    problems: list[ConfigProblem] = []
    for index, sink in enumerate(notifications.sinks):
        field_path = f"{path}.sinks[{index}]"
        try:
            url = references.secret(sink.url_secret_ref, f"{field_path}.urlSecretRef").strip()
        except UnresolvedReference as error:
            problems.append(ConfigProblem(error.field_path, str(error).split(": ", 1)[-1]))
            continue
        if not url.startswith(("http://", "https://")):
            problems.append(
                ConfigProblem(
                    f"{field_path}.urlSecretRef", "the Secret's value is not an http(s) URL"
                )
            )
            continue
        targets.append(
            Target(field_path, sink.name, sink.type, url, frozenset(sink.events), sink.template)
        )
    return targets, problems


class SinkResolver:
    """`resolve` for the sender, each namespace's default remembered for `remember` seconds."""

    def __init__(
        self,
        api: KubeApi,
        remember: float = DEFAULT_LOOKUP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._remember = remember
        self._clock = clock
        self._defaults: dict[str, tuple[float, NamespaceDefault]] = {}
        self._lock = threading.Lock()

    def __call__(
        self, namespace: str, configured: Notifications | None
    ) -> tuple[list[Target], list[ConfigProblem]]:
        return resolve(self._api, namespace, configured, self._default_of)

    def _default_of(self, api: KubeApi, namespace: str) -> NamespaceDefault:
        now = self._clock()
        with self._lock:
            held = self._defaults.get(namespace)
        if held is not None and now - held[0] < self._remember:
            return held[1]
        found = namespace_default(api, namespace)
        with self._lock:
            self._defaults[namespace] = (now, found)
        return found
