"""The ModelRollout CustomResourceDefinition, built from the pydantic models.

The models are the one schema source. A field's type and constraints, its
description (the docstring under the field) and what only the API server
checks (CEL rules and Kubernetes extensions, see models/schema.py) are
written there once; this module turns pydantic's JSON schema into a
Kubernetes structural schema: every `$ref` inlined, an optional field simply
absent (never null), pydantic's titles and defaults left out. Defaults stay
the operator's, applied when it parses a spec: a CRD default would be written
into every stored object (and so into what GitOps tools compare).

A field without a description, or a type Kubernetes cannot express
structurally (a union, a free-form object not marked as one), fails the
build with `SchemaError` naming the field.

`python -m modelrollout_dev.crds` (`make crds`) writes `crd_yaml()` to
crds/ and the Helm chart; tests/unit/operator/test_crd.py fails when either
differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel

from modelrollout.models.schema import rule
from modelrollout.models.spec import ModelRolloutSpec
from modelrollout.models.status import ModelRolloutStatus

GROUP = "modelrollout.dev"
VERSION = "v1alpha1"
KIND = "ModelRollout"
PLURAL = "modelrollouts"
NAME = f"{PLURAL}.{GROUP}"
FILE_NAME = f"{NAME}.yaml"
COMMAND = "make crds"

SPEC_DESCRIPTION = (
    "The desired rollout: what to serve (model, runtime) and how a new revision takes over "
    "(traffic, strategy, analysis). The operator never writes it."
)
STATUS_DESCRIPTION = "Written by the operator only; holds all progress of a rollout."
# The operator names its Deployments and Services NAME-REVISION.
METADATA_NAME_RULE = rule(
    "self.metadata.name.size() <= 52 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    "metadata.name must be a DNS label of at most 52 characters that starts with a letter: the "
    "operator names its Deployments and Services NAME-REVISION (11 more characters, 63 at most)",
    ".metadata.name",
)
PRINTER_COLUMNS: list[dict[str, str]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stableRevision"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canaryRevision"},
    {
        "name": "Weight",
        "type": "integer",
        "jsonPath": ".status.weights.canary",
        "description": "canary traffic percent",
    },
    {
        "name": "Step",
        "type": "integer",
        "jsonPath": ".status.currentStep",
        "description": "current canary step (0-based)",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

HEADER = f"""\
# ModelRollout: progressive delivery of a served model (see DESIGN.md, "The resource").
# Generated from the pydantic models (operator/modelrollout/models) by `{COMMAND}`;
# do not edit: change the models and run it again. The Helm chart holds the same file.
# What only the operator can judge (template variables, ...) is reported as condition
# InvalidSpec.
"""

# JSON schema keywords a structural schema keeps as they are, in the order they are written.
KEPT = (
    "description",
    "type",
    "format",
    "enum",
    "anyOf",
    "x-kubernetes-int-or-string",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-preserve-unknown-fields",
    "required",
    "x-kubernetes-validations",
    "properties",
    "items",
    "additionalProperties",
)
# Annotations for documentation and UIs that validate nothing; a CRD has no place for them.
DROPPED = frozenset({"title", "default", "examples", "readOnly", "writeOnly", "deprecated"})
RULE_KEYS = ("rule", "fieldPath", "message", "messageExpression", "reason", "optionalOldSelf")
INT_OR_STRING = "x-kubernetes-int-or-string"
FREE_FORM = "x-kubernetes-preserve-unknown-fields"
VALIDATIONS = "x-kubernetes-validations"


class SchemaError(ValueError):
    """A model says something the CRD cannot (or leaves out what it must say)."""


def custom_resource_definition() -> dict[str, Any]:
    """The whole CustomResourceDefinition manifest of ModelRollout."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["mro"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        # What an HPA or KEDA scales: the stable revision's pods.
                        "scale": {
                            "specReplicasPath": ".spec.runtime.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def openapi_schema() -> dict[str, Any]:
    """The resource's openAPIV3Schema: spec and status from the models."""
    return {
        "type": "object",
        "required": ["spec"],
        VALIDATIONS: [METADATA_NAME_RULE],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            # Only what the rule above reads; the API server validates metadata itself.
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
            "spec": structural_schema(ModelRolloutSpec, "spec", SPEC_DESCRIPTION),
            "status": structural_schema(ModelRolloutStatus, "status", STATUS_DESCRIPTION),
        },
    }


def structural_schema(model: type[BaseModel], path: str, description: str) -> dict[str, Any]:
    """`model`'s JSON schema as a Kubernetes structural schema, for the property at `path`."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    return _structural({**schema, "description": description}, defs, path)


def crd_yaml() -> str:
    """The CRD file as committed in crds/ and the Helm chart."""
    # One line per description and rule: a changed text is a one-line diff.
    body = yaml.safe_dump(
        custom_resource_definition(), sort_keys=False, allow_unicode=True, width=1 << 16
    )
    return HEADER + body


def _structural(node: Mapping[str, Any], defs: Mapping[str, Any], path: str) -> dict[str, Any]:
    node = _resolve(node, defs, path)
    found: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED:
            continue
        if key == "properties":
            found[key] = {
                name: _property(child, defs, f"{path}.{name}") for name, child in value.items()
            }
        elif key == "items":
            found[key] = _structural(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if isinstance(value, Mapping):
                found[key] = _structural(value, defs, f"{path}{{}}")
            elif value is True and not node.get(FREE_FORM):
                raise SchemaError(
                    f"{path}: a free-form object; give its values a type, or mark it "
                    "json_schema_extra=FREE_FORM (models/schema.py) if it is one"
                )
            # False (extra="forbid"): a CRD prunes unknown fields; the operator refuses them.
        elif key == VALIDATIONS:
            # pydantic sorts the keys of what it is given; a rule reads rule, fieldPath, message.
            found[key] = [{k: r[k] for k in RULE_KEYS if k in r} for r in value]
        elif key == "const":
            found["enum"] = [value]
        elif key == "description":
            # Docstrings wrap at the line length; a description is one line.
            found[key] = " ".join(value.split())
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON schema's number is OpenAPI v3's bound plus a flag.
            found["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            found[key] = True
        elif key == "uniqueItems":
            raise SchemaError(
                f"{path}: Kubernetes has no uniqueItems; use a list with "
                "x-kubernetes-list-type set or map (models/schema.py)"
            )
        elif key in KEPT:
            found[key] = value
        else:
            raise SchemaError(f"{path}: JSON schema keyword {key!r} has no place in a CRD")
    if found.get(INT_OR_STRING):
        found.pop("type", None)
        found["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    elif "type" not in found:
        raise SchemaError(f"{path}: no type (a union or Any has no structural schema)")
    return {key: found[key] for key in KEPT if key in found}


def _property(node: Mapping[str, Any], defs: Mapping[str, Any], path: str) -> dict[str, Any]:
    schema = _structural(node, defs, path)
    if not schema.get("description"):
        raise SchemaError(
            f"{path} has no description: write a docstring under the field in "
            "operator/modelrollout/models (it is the CRD's and docs/reference.md's text; "
            "its model needs use_attribute_docstrings=True, as SpecModel and StatusModel have)"
        )
    return schema


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any], path: str) -> dict[str, Any]:
    """`node` with `$ref` and Optional's `anyOf` folded in; the field's own keywords win."""
    node = dict(node)
    if "$ref" in node:
        target = dict(defs[node.pop("$ref").removeprefix("#/$defs/")])
        # A model's docstring is for Python readers; the field that holds it describes it.
        target.pop("description", None)
        return _merge(_resolve(target, defs, path), node)
    if "anyOf" in node and not node.get(INT_OR_STRING):
        options = [option for option in node.pop("anyOf") if option != {"type": "null"}]
        if len(options) != 1:
            raise SchemaError(f"{path}: a union of {len(options)} types has no structural schema")
        return _merge(_resolve(options[0], defs, path), node)
    return node


def _merge(inner: dict[str, Any], outer: Mapping[str, Any]) -> dict[str, Any]:
    """`inner` (a model's or type's schema) under `outer` (the field's); CEL rules add up."""
    merged = {**inner, **outer}
    if VALIDATIONS in inner and VALIDATIONS in outer:
        merged[VALIDATIONS] = [*inner[VALIDATIONS], *outer[VALIDATIONS]]
    return merged
