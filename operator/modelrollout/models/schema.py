"""What the CRD says beyond pydantic's own schema, for the models to carry.

The API server checks a field with its CRD schema; the operator checks the
same field with pydantic and `parse_spec`. Where the API server needs more
than pydantic's types and constraints say (CEL rules across fields, Kubernetes
list and map semantics, a pattern the operator checks with a validator that
gives a better message), the model says it where the field or model is
written, as `json_schema_extra` built here; models/crd.py writes it into the
CRD.
"""

from __future__ import annotations

from typing import Any

# What `json_schema_extra` takes (pydantic's own alias for it is not public).
JsonDict = dict[str, Any]

# A value written as a number or a string (`nvidia.com/gpu: 1`, `cpu: 500m`).
INT_OR_STRING: JsonDict = {"x-kubernetes-int-or-string": True}
# A free-form object the API server stores as sent (a copy of the user's own spec).
FREE_FORM: JsonDict = {"x-kubernetes-preserve-unknown-fields": True}


def rule(cel: str, message: str, field_path: str | None = None) -> JsonDict:
    """A CEL rule; `field_path` (`.replicas`) names the field the API server's message blames."""
    found: JsonDict = {"rule": cel}
    if field_path is not None:
        found["fieldPath"] = field_path
    found["message"] = message
    return found


def validations(*rules: JsonDict) -> JsonDict:
    """`x-kubernetes-validations`: the CEL rules the API server checks on a field or object."""
    return {"x-kubernetes-validations": [*rules]}


def list_map(*keys: str) -> JsonDict:
    """A list whose items are unique by `keys`, as a map (a server-side apply merges by them)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [*keys]}
