"""The CRD in crds/ is generated from the pydantic models, structural and explicit."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from modelrollout.models import ModelRolloutSpec, ModelRolloutStatus, crd, schema
from modelrollout.models.durations import DURATION_PATTERN
from modelrollout.models.spec import BREACH_WHEN_PATTERN

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
CRD_PATH = REPO / "crds" / "modelrollouts.modelrollout.dev.yaml"

# What a structural schema node may say (apiextensions v1 JSONSchemaProps we use).
SCHEMA_KEYS = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "maxProperties",
    "format",
    "anyOf",
    "x-kubernetes-validations",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
}


def load_crd() -> dict[str, Any]:
    document = yaml.safe_load(CRD_PATH.read_text())
    assert isinstance(document, dict)
    return document


def version() -> dict[str, Any]:
    versions = load_crd()["spec"]["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1"]
    return dict(versions[0])


def root_schema() -> dict[str, Any]:
    return dict(version()["schema"]["openAPIV3Schema"])


def nodes(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


def test_names_scope_and_subresources() -> None:
    crd = load_crd()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "modelrollouts.modelrollout.dev"
    assert crd["spec"]["group"] == "modelrollout.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "ModelRollout",
        "modelrollouts",
        ["mro"],
    )
    assert version()["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.runtime.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }


def test_printer_columns() -> None:
    columns = {c["name"]: c["jsonPath"] for c in version()["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Stable": ".status.stableRevision",
        "Canary": ".status.canaryRevision",
        "Weight": ".status.weights.canary",
        "Step": ".status.currentStep",
        "Age": ".metadata.creationTimestamp",
    }


FREE_FORM_PATHS = {
    "$.status.history[].spec",
    "$.spec.runtime.affinity",
    "$.spec.runtime.topologySpreadConstraints[]",
    "$.spec.runtime.securityContext",
    "$.spec.runtime.containerSecurityContext",
    "$.spec.runtime.volumes[]",
    "$.spec.runtime.volumeMounts[]",
}


def test_schema_is_structural_and_explicit() -> None:
    for path, node in nodes(root_schema(), "$"):
        unknown = set(node) - SCHEMA_KEYS
        assert not unknown, f"{path}: unknown schema keys {unknown}"
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
            continue
        assert "type" in node, f"{path} has no type"
        if node.get("x-kubernetes-preserve-unknown-fields"):
            # Only a copy of the user's own spec (history's undo data) and the Kubernetes pod
            # types passed through as written (the API server checks them in the Deployment).
            assert path in FREE_FORM_PATHS, f"{path}: free-form object"
            continue
        if node["type"] == "object" and path not in ("$.metadata",):
            assert "properties" in node or "additionalProperties" in node, (
                f"{path}: an object must list its fields"
            )


def test_every_rule_has_a_human_message() -> None:
    rules = [
        (path, rule)
        for path, node in nodes(root_schema(), "$")
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) >= 6
    for path, rule in rules:
        assert rule.get("message"), f"{path}: rule {rule['rule']} has no message"


def test_patterns_match_the_parsers() -> None:
    durations = [n for p, n in nodes(root_schema(), "$") if n.get("pattern") == DURATION_PATTERN]
    assert len(durations) >= 15
    spec = root_schema()["properties"]["spec"]
    check = spec["properties"]["analysis"]["properties"]["checks"]["items"]
    assert check["properties"]["breachWhen"]["pattern"] == BREACH_WHEN_PATTERN


def _pydantic_tree(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """{field: subtree} of a pydantic JSON schema, refs and Optional resolved."""
    schema = _resolve(schema, defs)
    if "properties" in schema:
        return {name: _pydantic_tree(sub, defs) for name, sub in schema["properties"].items()}
    if schema.get("type") == "array":
        return {"[]": _pydantic_tree(schema["items"], defs)}
    if isinstance(schema.get("additionalProperties"), dict):
        return {"{}": _pydantic_tree(schema["additionalProperties"], defs)}
    if "enum" in schema:
        return {"enum": sorted(map(str, schema["enum"]))}
    if "const" in schema:
        return {"enum": [str(schema["const"])]}
    return {}


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while True:
        if "$ref" in schema:
            schema = defs[schema["$ref"].split("/")[-1]]
        elif "anyOf" in schema:
            options = [s for s in schema["anyOf"] if s.get("type") != "null"]
            if len(options) != 1:
                return {}
            schema = options[0]
        else:
            return schema


def _crd_tree(node: dict[str, Any]) -> dict[str, Any]:
    if "properties" in node:
        return {name: _crd_tree(sub) for name, sub in node["properties"].items()}
    if node.get("type") == "array":
        return {"[]": _crd_tree(node["items"])}
    if isinstance(node.get("additionalProperties"), dict):
        return {"{}": _crd_tree(node["additionalProperties"])}
    if "enum" in node:
        return {"enum": sorted(map(str, node["enum"]))}
    return {}


@pytest.mark.parametrize(
    ("section", "model"), [("spec", ModelRolloutSpec), ("status", ModelRolloutStatus)]
)
def test_crd_and_models_have_the_same_fields_and_enums(
    section: str, model: type[BaseModel]
) -> None:
    pydantic_schema = model.model_json_schema(by_alias=True, mode="validation")
    expected = _pydantic_tree(pydantic_schema, pydantic_schema.get("$defs", {}))
    actual = _crd_tree(root_schema()["properties"][section])
    assert actual == expected


@pytest.mark.parametrize("directory", ["crds", "charts/modelrollout/files/crds"])
def test_the_committed_crd_is_the_one_the_models_generate(directory: str) -> None:
    committed = REPO / directory / crd.FILE_NAME
    assert committed.exists() and committed.read_text() == crd.crd_yaml(), (
        f"{committed.relative_to(REPO)} differs from the pydantic models: run `{crd.COMMAND}` "
        "(python -m modelrollout_dev.crds) and commit the result"
    )


class _Limits(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        use_attribute_docstrings=True,
        json_schema_extra=schema.validations(
            schema.rule("self.low <= self.high", "low above high", ".low")
        ),
    )

    low: int = 0
    """The lower bound."""
    high: Annotated[int, Field(gt=0)] = 1
    """The upper bound."""


class _Sample(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, use_attribute_docstrings=True)

    size: Annotated[str, Field(json_schema_extra=schema.INT_OR_STRING)] = "1"
    """How big."""
    limits: Annotated[
        _Limits, Field(json_schema_extra=schema.validations(schema.rule("true", "always")))
    ]
    """The limits, written over
    two lines."""
    history: list[_Limits] = []
    """Past limits."""
    extra: Annotated[dict[str, Any], Field(json_schema_extra=schema.FREE_FORM)] | None = None
    """Anything."""


def test_the_builder_writes_a_structural_schema_from_a_model() -> None:
    schema = crd.structural_schema(_Sample, "spec", "A sample.")
    limits: dict[str, Any] = {
        "type": "object",
        "x-kubernetes-validations": [
            {"rule": "self.low <= self.high", "fieldPath": ".low", "message": "low above high"},
            {"rule": "true", "message": "always"},
        ],
        "properties": {
            "low": {"description": "The lower bound.", "type": "integer"},
            "high": {
                "description": "The upper bound.",
                "type": "integer",
                "minimum": 0,
                "exclusiveMinimum": True,
            },
        },
    }
    assert schema == {
        "description": "A sample.",
        "type": "object",
        "required": ["limits"],
        "properties": {
            "size": {
                "description": "How big.",
                "anyOf": [{"type": "integer"}, {"type": "string"}],
                "x-kubernetes-int-or-string": True,
            },
            "limits": {"description": "The limits, written over two lines.", **limits},
            "history": {
                "description": "Past limits.",
                "type": "array",
                "items": {
                    **limits,
                    "x-kubernetes-validations": limits["x-kubernetes-validations"][:1],
                },
            },
            "extra": {
                "description": "Anything.",
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
    }


class _Undescribed(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    documented: int = 0
    """Has one."""
    forgotten: int = 0


class _Union(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    either: int | str = 0
    """An int or a str."""


class _Loose(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    anything: dict[str, Any] = {}
    """Not marked free-form."""


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_Undescribed, "spec.forgotten has no description"),
        (_Union, "spec.either: a union of 2 types"),
        (_Loose, "spec.anything: a free-form object"),
    ],
)
def test_what_a_crd_cannot_say_fails_the_build_naming_the_field(
    model: type[BaseModel], message: str
) -> None:
    with pytest.raises(crd.SchemaError, match=re.escape(message)):
        crd.structural_schema(model, "spec", "A sample.")
