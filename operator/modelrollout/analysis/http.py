"""Headers, credentials and TLS of an HTTP metric provider, built from its config.

Shared by every provider that speaks HTTP (Prometheus and the APIs that
copy it: Thanos, Mimir, managed services). Values read from Secrets go into
headers and the basic-auth pair only: a message about them names the spec
field, never the value.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelrollout.analysis.provider import References, UnresolvedReference
from modelrollout.models.spec import HttpAuth, HttpHeader, PlainOrSecretValue, TlsConfig

# What an HTTP header value may hold (RFC 9110 field-value, ASCII): a line break
# would start another header.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
_PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"
# The operator's root filesystem is read-only; the chart mounts an emptyDir on /tmp.
CA_DIRECTORY = Path(tempfile.gettempdir()) / "modelrollout-ca"


@dataclass(frozen=True)
class HttpSettings:
    """What each request carries; `verify` is as requests takes it (a CA bundle's path)."""

    headers: dict[str, str] = field(default_factory=dict)
    basic_auth: tuple[str, str] | None = None
    verify: bool | str = True


def _header_safe(value: str, field_path: str) -> str:
    if _HEADER_VALUE.fullmatch(value) is None:
        raise UnresolvedReference(
            field_path, "the value holds a line break or non-ASCII character, which no header may"
        )
    return value


def _secret(references: References, value: PlainOrSecretValue, field_path: str) -> str:
    if value.secret_key_ref is not None:
        # Token and password files end with a newline more often than not (Prometheus trims too).
        return references.secret(value.secret_key_ref, f"{field_path}.secretKeyRef").strip()
    if value.value is None:
        raise UnresolvedReference(field_path, "set one of value or secretKeyRef")
    return value.value


def ca_bundle(pem: str, field_path: str) -> str:
    """The path of a file holding `pem` (requests verifies against a file), written once."""
    if _PEM_CERTIFICATE not in pem:
        raise UnresolvedReference(field_path, "holds no PEM certificate")
    path = CA_DIRECTORY / f"{hashlib.sha256(pem.encode()).hexdigest()}.pem"
    if path.exists():
        return str(path)
    try:
        CA_DIRECTORY.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor, partial = tempfile.mkstemp(dir=CA_DIRECTORY, suffix=".partial")
        with os.fdopen(descriptor, "w") as file:
            file.write(pem)
        # Rename is atomic: a concurrent tick never reads half a bundle.
        os.replace(partial, path)
    except OSError as error:
        raise UnresolvedReference(
            field_path, f"the CA cannot be written to {CA_DIRECTORY}: {error.strerror}"
        ) from None
    return str(path)


def http_settings(
    auth: HttpAuth | None,
    tls: TlsConfig | None,
    headers: Sequence[HttpHeader],
    references: References,
    path: str,
) -> HttpSettings:
    """Headers, basic auth and verification for a provider written at `path` in the spec.

    Raises UnresolvedReference naming the field whose Secret or ConfigMap key cannot be read.
    """
    built: dict[str, str] = {}
    for index, header in enumerate(headers):
        header_path = f"{path}.headers[{index}]"
        built[header.name] = _header_safe(_secret(references, header, header_path), header_path)
    basic_auth = None
    if auth is not None and auth.bearer_token is not None:
        token_path = f"{path}.auth.bearerToken.secretKeyRef"
        token = references.secret(auth.bearer_token.secret_key_ref, token_path).strip()
        built["Authorization"] = f"Bearer {_header_safe(token, token_path)}"
    if auth is not None and auth.basic_auth is not None:
        basic = auth.basic_auth
        username = _secret(references, basic.username, f"{path}.auth.basicAuth.username")
        password = references.secret(
            basic.password.secret_key_ref, f"{path}.auth.basicAuth.password.secretKeyRef"
        ).strip()
        basic_auth = (
            _header_safe(username, f"{path}.auth.basicAuth.username"),
            _header_safe(password, f"{path}.auth.basicAuth.password.secretKeyRef"),
        )
    verify: bool | str = True
    if tls is not None and tls.insecure_skip_verify:
        verify = False
    elif tls is not None and tls.ca is not None:
        ca = tls.ca
        if ca.secret_key_ref is not None:
            ca_path = f"{path}.tls.ca.secretKeyRef"
            pem = references.secret(ca.secret_key_ref, ca_path)
        elif ca.config_map_key_ref is not None:
            ca_path = f"{path}.tls.ca.configMapKeyRef"
            pem = references.config_map(ca.config_map_key_ref, ca_path)
        else:
            raise UnresolvedReference(
                f"{path}.tls.ca", "set one of secretKeyRef or configMapKeyRef"
            )
        verify = ca_bundle(pem, ca_path)
    return HttpSettings(built, basic_auth, verify)
