"""The ModelRollout field reference (docs/reference.md), generated from the CRD.

The CRD (itself generated from the pydantic models by `make crds`) gives
fields, types, constraints and descriptions. Defaults come from the pydantic
spec models: the operator applies them when it parses a spec, and the CRD
declares none of its own (where it does, its `default` is shown;
tests/unit/test_reference.py keeps the two equal).

    python -m modelrollout_dev.reference           # rewrite docs/reference.md
    python -m modelrollout_dev.reference --check   # exit 1 with a diff if it is out of date
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from modelrollout.models.durations import DURATION_PATTERN
from modelrollout.models.spec import ModelRolloutSpec

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "modelrollouts.modelrollout.dev.yaml"
REFERENCE_PATH = ROOT / "docs" / "reference.md"
COMMAND = "python -m modelrollout_dev.reference"

_HTML_START = re.compile(r"<(?=[A-Za-z/!?])")

SPEC_COLUMNS = ("Field", "Type", "Default", "Required", "Constraints", "Description")
STATUS_COLUMNS = ("Field", "Type", "Description")


@dataclass(frozen=True)
class SchemaField:
    """One property of the schema: a row of the reference."""

    path: str  # e.g. spec.analysis.checks[].breachWhen
    schema: Mapping[str, Any]
    required: bool
    # Messages of the CEL rules (on this field or an ancestor) whose fieldPath names it.
    rules: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        return str(self.schema.get("description", ""))

    @property
    def object_path(self) -> str | None:
        """Where the fields this one holds are: itself, its items (`[]`), or None (a leaf)."""
        return _object_path(self.path, self.schema)

    @property
    def object_schema(self) -> Mapping[str, Any]:
        """The schema of the object at `object_path`."""
        return self.schema if "properties" in self.schema else self.schema["items"]


def _object_path(path: str, node: Mapping[str, Any]) -> str | None:
    if "properties" in node:
        return path
    items = node.get("items")
    if isinstance(items, dict) and "properties" in items:
        return f"{path}[]"
    return None


def load_crd() -> dict[str, Any]:
    document = yaml.safe_load(CRD_PATH.read_text())
    if not isinstance(document, dict):
        raise ValueError(f"{CRD_PATH} is not a YAML mapping")
    return document


def _storage_version(crd: Mapping[str, Any]) -> dict[str, Any]:
    return dict(next(v for v in crd["spec"]["versions"] if v.get("storage")))


def root_schema(crd: Mapping[str, Any]) -> dict[str, Any]:
    """The openAPIV3Schema of the storage version."""
    return dict(_storage_version(crd)["schema"]["openAPIV3Schema"])


def _schema_fields(node: Mapping[str, Any], path: str) -> list[SchemaField]:
    """Every property under the object `node` at `path`, depth first, in the CRD's order."""
    rules: dict[str, list[str]] = {}
    _collect_field_rules(node, path, rules)
    return list(_fields(node, path, rules))


def spec_fields(crd: Mapping[str, Any]) -> list[SchemaField]:
    return _schema_fields(root_schema(crd)["properties"]["spec"], "spec")


def status_fields(crd: Mapping[str, Any]) -> list[SchemaField]:
    return _schema_fields(root_schema(crd)["properties"]["status"], "status")


def _fields(
    node: Mapping[str, Any], path: str, rules: Mapping[str, list[str]]
) -> Iterator[SchemaField]:
    required = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        member = f"{path}.{name}"
        field = SchemaField(member, child, name in required, tuple(rules.get(member, ())))
        yield field
        if field.object_path is not None:
            yield from _fields(field.object_schema, field.object_path, rules)


def _collect_field_rules(node: Mapping[str, Any], path: str, found: dict[str, list[str]]) -> None:
    """Messages of CEL rules that name a field (`fieldPath`), by that field's path."""
    for rule in node.get("x-kubernetes-validations", []):
        if "fieldPath" in rule:
            found.setdefault(path + rule["fieldPath"], []).append(rule["message"])
    for name, child in node.get("properties", {}).items():
        field = SchemaField(f"{path}.{name}", child, False)
        if field.object_path is not None:
            _collect_field_rules(field.object_schema, field.object_path, found)


def _object_rules(node: Mapping[str, Any]) -> list[str]:
    """Messages of the node's CEL rules about the object as a whole."""
    return [r["message"] for r in node.get("x-kubernetes-validations", []) if "fieldPath" not in r]


def pydantic_fields(model: type[BaseModel], prefix: str) -> dict[str, FieldInfo]:
    """Every field `model` accepts, by its path in the reference (aliases, `[]` for lists)."""
    found: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}.{info.alias or name}"
        found[path] = info
        inner, suffix = _unwrap(info.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            found.update(pydantic_fields(inner, path + suffix))
    return found


def _unwrap(annotation: Any) -> tuple[Any, str]:
    """The model type behind Annotated, Optional and list, with `[]` per list."""
    suffix = ""
    while True:
        origin, args = get_origin(annotation), get_args(annotation)
        if origin is Annotated:
            annotation = args[0]
        elif origin in (Union, UnionType):
            options = [a for a in args if a is not type(None)]
            if len(options) != 1:
                return annotation, suffix
            annotation = options[0]
        elif origin is list:
            annotation, suffix = args[0], f"{suffix}[]"
        else:
            return annotation, suffix


def operator_defaults() -> dict[str, Any]:
    """What the operator assumes for an omitted spec field, by path.

    Object defaults (`Traffic()`) are left out: their fields list their own.
    """
    defaults: dict[str, Any] = {}
    for path, info in pydantic_fields(ModelRolloutSpec, "spec").items():
        if info.is_required():
            continue
        value = info.get_default(call_default_factory=True)
        if value is not None and not isinstance(value, BaseModel):
            defaults[path] = value
    return defaults


def format_default(value: Any) -> str:
    """`15m`, `1`, `[]`; JSON where a bare text would mislead (`""`)."""
    return _code(value if isinstance(value, str) and value else json.dumps(value))


def render_reference(crd: Mapping[str, Any]) -> str:
    """docs/reference.md for `crd`: a section per area of the spec, a table per object."""
    schema = root_schema(crd)
    spec, status = schema["properties"]["spec"], schema["properties"]["status"]
    fields = spec_fields(crd)
    defaults = operator_defaults()

    def table(path: str) -> list[str]:
        members = [f for f in fields if f.path.rpartition(".")[0] == path]
        return _table(SPEC_COLUMNS, [_spec_row(f, defaults) for f in members])

    lines = _preamble(crd)
    areas = [f for f in fields if f.path.count(".") == 1 and f.object_path == f.path]
    for area in areas:
        required = ", required" if area.required else ""
        lines += ["", f"## {area.path.removeprefix('spec.').capitalize()}", ""]
        lines += _intro(f"{_code(area.path)} (object{required}): {area.description}", area.schema)
        lines += table(area.path)
        for field in fields:
            path = field.object_path
            if path is None or not field.path.startswith(f"{area.path}."):
                continue
            lead = field.description if path == field.path else f"Each item of {_code(field.path)}."
            lines += ["", f"### {_code(path)}", "", *_intro(lead, field.object_schema)]
            lines += table(path)
    lines += ["", "## Other fields", "", *_intro("Fields of `spec` itself.", spec)]
    others = [f for f in fields if f.path.count(".") == 1 and f not in areas]
    lines += _table(SPEC_COLUMNS, [_spec_row(f, defaults) for f in others])
    lines += ["", "## Status", "", *_intro(str(status.get("description", "")), status)]
    lines += _table(STATUS_COLUMNS, [_status_row(f) for f in status_fields(crd)])
    return "\n".join(lines) + "\n"


def _preamble(crd: Mapping[str, Any]) -> list[str]:
    names = crd["spec"]["names"]
    version = _storage_version(crd)["name"]
    short = ", ".join(_code(n) for n in names.get("shortNames", []))
    return [
        f"# {names['kind']} reference",
        "",
        f"Generated from `crds/{crd['metadata']['name']}.yaml` and the operator's defaults by "
        f"`{COMMAND}`; do not edit by hand.",
        "",
        f"`apiVersion: {crd['spec']['group']}/{version}`, `kind: {names['kind']}` "
        f"(short name {short}), {crd['spec']['scope'].lower()}.",
        "",
        "- **Default**: what the operator assumes when the field is left out.",
        "- **Required**: the API server refuses the object without the field "
        "(where its parent is set).",
        "- **Constraints** and rules (CEL validations) are checked by the API server. "
        "What it cannot check (template variables, label names) the operator reports as "
        "condition `InvalidSpec` naming the field, and changes nothing running.",
        "- **duration**: whole numbers with units h, m, s, ms, largest first: "
        f"`30s`, `5m`, `1h30m`, `250ms` (pattern {_code(DURATION_PATTERN)}).",
    ]


def _intro(text: str, node: Mapping[str, Any]) -> list[str]:
    """What is said above an object's table: `text`, then the object's own rules."""
    lines = [_cell(text), ""] if text else []
    rules = _object_rules(node)
    if rules:
        lines += ["Rules:", "", *(f"- {_cell(rule)}" for rule in rules), ""]
    return lines


def _spec_row(field: SchemaField, defaults: Mapping[str, Any]) -> list[str]:
    default = field.schema.get("default", defaults.get(field.path))
    return [
        _code(field.path),
        _type(field.schema),
        "" if default is None else format_default(default),
        "yes" if field.required else "no",
        "; ".join([*_constraints(field.schema), *(f"rule: {rule}" for rule in field.rules)]),
        field.description,
    ]


def _status_row(field: SchemaField) -> list[str]:
    kind = _type(field.schema)
    if "enum" in field.schema:
        kind += ", one of " + ", ".join(_code(str(v)) for v in field.schema["enum"])
    return [_code(field.path), kind, field.description]


def _type(node: Mapping[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "integer or string"
    kind = str(node.get("type", ""))
    if kind == "string" and node.get("pattern") == DURATION_PATTERN:
        return "duration"
    if kind == "string" and "format" in node:
        return f"string ({node['format']})"
    if kind == "array":
        return f"array of {_type(node['items'])}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of string to {_type(node['additionalProperties'])}"
    if kind == "object" and node.get("x-kubernetes-preserve-unknown-fields"):
        return "object (free-form)"
    return kind


def _constraints(node: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    if "enum" in node:
        found.append("one of " + ", ".join(_code(str(v)) for v in node["enum"]))
    found += _bounds(node.get("minimum"), node.get("maximum"), "")
    found += _bounds(node.get("minLength"), node.get("maxLength"), "length ")
    found += _bounds(node.get("minItems"), node.get("maxItems"), "items: ")
    found += _bounds(None, node.get("maxProperties"), "entries: ")
    if "pattern" in node and node["pattern"] != DURATION_PATTERN:
        found.append(f"pattern {_code(node['pattern'])}")
    keys = node.get("x-kubernetes-list-map-keys")
    if keys:
        found.append("unique " + ", ".join(_code(k) for k in keys))
    for key, label in (("items", "each"), ("additionalProperties", "each value")):
        inner = node.get(key)
        if isinstance(inner, dict) and "properties" not in inner:
            found += [f"{label}: {c}" for c in _constraints(inner)]
    return found


def _bounds(low: Any, high: Any, label: str) -> list[str]:
    if low is not None and high is not None:
        return [f"{label}{low} to {high}"]
    if low is not None:
        return [f"{label}at least {low}"]
    if high is not None:
        return [f"{label}at most {high}"]
    return []


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return lines


def _code(text: str) -> str:
    return f"`{text}`"


def _cell(text: str) -> str:
    """`text` on one line, safe in a table cell: `|` escaped, and `<tag` outside code spans."""
    parts = " ".join(text.split()).replace("|", "\\|").split("`")
    # Even parts lie outside code spans, where Markdown would read `<name>` as HTML.
    return "`".join(_HTML_START.sub("&lt;", p) if i % 2 == 0 else p for i, p in enumerate(parts))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=COMMAND, description=f"Write {REFERENCE_PATH.relative_to(ROOT)} from the CRD."
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 with a diff if out of date"
    )
    args = parser.parse_args(argv)
    expected = render_reference(load_crd())
    current = REFERENCE_PATH.read_text() if REFERENCE_PATH.exists() else ""
    name = str(REFERENCE_PATH.relative_to(ROOT))
    if args.check:
        if current == expected:
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                current.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                fromfile=name,
                tofile=f"{name} (generated)",
            )
        )
        print(f"{name} is out of date: run {COMMAND}", file=sys.stderr)
        return 1
    REFERENCE_PATH.write_text(expected)
    print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
