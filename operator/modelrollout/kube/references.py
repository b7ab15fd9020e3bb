"""Reads the Secret and ConfigMap keys a rollout's spec names, in its own namespace.

One GET by name per reference, never a list or a watch: the operator reads
only the objects users point it at (the chart grants `get` alone), and the
cache keeps no copy of them. A value read is handed to its user and never
put into a message.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from modelrollout.analysis.provider import UnresolvedReference
from modelrollout.kube.api import CONFIGMAPS, SECRETS, KubeApi, KubeApiError, Resource
from modelrollout.models.spec import ConfigMapKeyRef, SecretKeyRef


class KubeReferences:
    def __init__(self, api: KubeApi, namespace: str, reader: str = "the operator") -> None:
        self._api = api
        self._namespace = namespace
        # Who reads, for the message of a 403: the operator, or the dashboard.
        self._reader = reader

    def _read(self, resource: Resource, kind: str, name: str, field_path: str) -> dict[str, Any]:
        try:
            obj = self._api.get(resource, self._namespace, name)
        except KubeApiError as error:
            if error.status == 403:
                raise UnresolvedReference(
                    field_path,
                    f"{self._reader} may not read {kind} {self._namespace}/{name} (403): "
                    "grant it get on this object",
                ) from None
            raise UnresolvedReference(
                field_path, f"reading {kind} {self._namespace}/{name} failed: {error.status}"
            ) from None
        except Exception as error:  # the API unreachable: the analysis is unavailable, no crash
            raise UnresolvedReference(
                field_path,
                f"reading {kind} {self._namespace}/{name} failed: {type(error).__name__}",
            ) from None
        if obj is None:
            raise UnresolvedReference(field_path, f"{kind} {self._namespace}/{name} not found")
        return obj

    def secret(self, ref: SecretKeyRef, field_path: str) -> str:
        secret = self._read(SECRETS, "Secret", ref.name, field_path)
        encoded = (secret.get("data") or {}).get(ref.key)
        if encoded is None:
            raise UnresolvedReference(
                field_path, f"Secret {self._namespace}/{ref.name} has no key {ref.key!r}"
            )
        try:
            return base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise UnresolvedReference(
                field_path, f"key {ref.key!r} of Secret {self._namespace}/{ref.name} is not text"
            ) from None

    def config_map(self, ref: ConfigMapKeyRef, field_path: str) -> str:
        config_map = self._read(CONFIGMAPS, "ConfigMap", ref.name, field_path)
        value = (config_map.get("data") or {}).get(ref.key)
        if value is None:
            raise UnresolvedReference(
                field_path, f"ConfigMap {self._namespace}/{ref.name} has no key {ref.key!r}"
            )
        return str(value)
