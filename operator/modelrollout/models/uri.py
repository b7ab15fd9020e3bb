"""Model URIs: where `modelserve serve` (and the operator's pod builders) find a model.

Accepted forms:
- a plain path (`/models/chat`, `./tiny`) or `file:///models/chat`;
- `pvc://CLAIM/SUB/PATH`: a PersistentVolumeClaim mounted under a mount root
  (default `/models`), i.e. the directory `/models/CLAIM/SUB/PATH`;
- `hf://ORG/NAME@REVISION` (revision optional): loaded through
  `from_pretrained(..., revision=...)` where the pod can reach a hub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit

DEFAULT_PVC_MOUNT_ROOT = "/models"

# A PVC name is a DNS-1123 subdomain.
_CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_HF_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelURIError(ValueError):
    """The model URI cannot be understood; the message says what is wrong and what is accepted."""


@dataclass(frozen=True)
class LocalModel:
    """A model in a directory of this filesystem."""

    path: Path


@dataclass(frozen=True)
class PVCModel:
    """A model on a PersistentVolumeClaim, at `sub_path` inside the claim."""

    claim: str
    sub_path: str

    def mounted_path(self, mount_root: str | Path = DEFAULT_PVC_MOUNT_ROOT) -> Path:
        """The directory where the claim's model appears when mounted at `mount_root/claim`."""
        return Path(mount_root) / self.claim / self.sub_path


@dataclass(frozen=True)
class HubModel:
    """A model on a Hugging Face hub, pinned to a revision when one is given."""

    repo_id: str
    revision: str | None


ModelSource = LocalModel | PVCModel | HubModel

_ACCEPTED = "expected a path, file:///abs/path, pvc://claim/sub/path or hf://org/name@revision"


def parse_model_uri(uri: str) -> ModelSource:
    """Parse a model URI into where the model lives; raise ModelURIError on anything else."""
    text = uri.strip()
    if not text:
        raise ModelURIError(f"empty model URI: {_ACCEPTED}")
    if "://" not in text:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", text) and not Path(text).exists():
            raise ModelURIError(f"unsupported model URI {uri!r}: {_ACCEPTED}")
        return LocalModel(Path(text))
    scheme = text.split("://", 1)[0].lower()
    if scheme == "file":
        return _parse_file(uri, text)
    if scheme == "pvc":
        return _parse_pvc(uri, text)
    if scheme == "hf":
        return _parse_hub(uri, text)
    raise ModelURIError(f"unsupported scheme {scheme!r} in model URI {uri!r}: {_ACCEPTED}")


def _parse_file(uri: str, text: str) -> LocalModel:
    parts = urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise ModelURIError(f"file URI {uri!r} names host {parts.netloc!r}: use file:///abs/path")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ModelURIError(f"file URI {uri!r} must hold an absolute path (file:///abs/path)")
    return LocalModel(Path(path))


def _parse_pvc(uri: str, text: str) -> PVCModel:
    rest = text.split("://", 1)[1]
    claim, _, sub = rest.partition("/")
    if not _CLAIM_NAME.match(claim):
        raise ModelURIError(
            f"pvc URI {uri!r}: claim name {claim!r} is not a valid PersistentVolumeClaim name"
        )
    sub_path = PurePosixPath(sub.strip("/")) if sub.strip("/") else PurePosixPath()
    if ".." in sub_path.parts:
        raise ModelURIError(f"pvc URI {uri!r}: the path inside the claim must not contain '..'")
    return PVCModel(claim=claim, sub_path=str(sub_path) if sub_path.parts else "")


def _parse_hub(uri: str, text: str) -> HubModel:
    rest = text.split("://", 1)[1]
    repo_id, at, revision = rest.partition("@")
    parts = repo_id.split("/")
    if len(parts) not in (1, 2) or not all(_HF_REPO_PART.match(part) for part in parts):
        raise ModelURIError(f"hf URI {uri!r}: expected hf://org/name or hf://org/name@revision")
    if at and not revision:
        raise ModelURIError(f"hf URI {uri!r}: empty revision after '@'")
    return HubModel(repo_id=repo_id, revision=revision or None)


def resolve_local_directory(
    source: ModelSource, pvc_mount_root: str | Path = DEFAULT_PVC_MOUNT_ROOT
) -> Path | None:
    """The directory holding the model for local and PVC sources; None for hub models."""
    if isinstance(source, LocalModel):
        return source.path
    if isinstance(source, PVCModel):
        return source.mounted_path(pvc_mount_root)
    return None


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters (an ellipsis marks a cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def redact_uri(uri: str) -> str:
    """`uri` without user, password, query or fragment (hf://org/name@rev keeps its revision).

    Signed URLs carry their credentials in the query; what is left is safe to
    show in status, records and logs. At most 256 characters.
    """
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    return clip(urlunsplit((parts.scheme, host, parts.path, "", "")), 256)


# The model-zoo naming convention (opt-in, spec.model.naming: zoo): the URI's last three path
# parts are ORG/NAME/VERSION[-QUANT], e.g. pvc://models/meta/llama-3.2-3b/v1.4-awq, or
# hf://ORG/NAME@VERSION[-QUANT].
_ZOO_PART = re.compile(r"^[a-z0-9]([a-z0-9._]*[a-z0-9])?(-[a-z0-9]([a-z0-9._]*[a-z0-9])?)*$")
_ZOO_VERSION = re.compile(r"^v?(?P<version>[0-9]+(\.[0-9]+){0,3})(-(?P<quant>[a-z0-9_]+))?$")
ZOO_FORM = "ORG/NAME/VERSION[-QUANT], lowercase, e.g. meta/llama-3.2-3b/v1.4-awq"


@dataclass(frozen=True)
class ZooName:
    """A model URI's parts under the model-zoo naming convention."""

    org: str
    name: str
    version: str
    quantization: str | None


def parse_zoo_name(uri: str) -> ZooName:
    """The ORG/NAME/VERSION[-QUANT] a URI names; ModelURIError says which part breaks the form."""
    source = parse_model_uri(uri)
    if isinstance(source, HubModel):
        if source.revision is None:
            raise ModelURIError(f"{uri!r}: the zoo form needs hf://ORG/NAME@VERSION[-QUANT]")
        parts = [*source.repo_id.split("/"), source.revision]
    else:
        path = source.sub_path if isinstance(source, PVCModel) else str(source.path)
        parts = [part for part in path.split("/") if part]
    if len(parts) < 3:
        raise ModelURIError(f"{uri!r} does not end in {ZOO_FORM}")
    org, name, version = parts[-3:]
    for label, part in (("ORG", org), ("NAME", name)):
        if not _ZOO_PART.match(part):
            raise ModelURIError(
                f"{uri!r}: {label} {part!r} is not lowercase letters, digits, '.', '_' "
                f"and single '-' ({ZOO_FORM})"
            )
    matched = _ZOO_VERSION.match(version)
    if matched is None:
        raise ModelURIError(
            f"{uri!r}: {version!r} is not VERSION[-QUANT] (v1, 1.4, v2.0.1-int8; {ZOO_FORM})"
        )
    return ZooName(org, name, matched["version"], matched["quant"])
