"""Forms generated from the features' pydantic models, and what a submitted form means.

Each field of a record (or of a table's row) is one input: a checkbox for a yes/no, a
choice for a fixed set of words, a number, a line of text, or JSON for a list or a
nested object (with an example).  A secret field is a password input that shows
nothing: left empty, it keeps its value.  A model the form cannot take apart (a row
of several kinds, as ``ldapconfig``) is one JSON field.
"""

from __future__ import annotations

import json
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from starlette.datastructures import FormData

from clusterd.schema.feature import Feature

PROBLEM_FIELD = re.compile(r"field '([^'.]+)")
WHOLE = "__json__"  # the one field of a model without fields of its own


@dataclass
class Field:
    name: str
    kind: str  # checkbox, choice, number, text, json, secret
    value: Any
    choices: list[str]
    required: bool
    problems: list[str]

    @property
    def text(self) -> str:
        """The input's text: JSON for what is not a plain word or number."""
        if self.kind == "secret" or self.value is None:
            return ""
        if self.kind in ("json",):
            return json.dumps(self.value, indent=1, sort_keys=True)
        return str(self.value)


def _kind(annotation: Any) -> tuple[str, list[str]]:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _kind(args[0])
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _kind(args[0])
    if origin is Literal:
        return "choice", [str(a) for a in typing.get_args(annotation)]
    if annotation is bool:
        return "checkbox", []
    if annotation in (int, float):
        return "number", []
    if annotation is str:
        return "text", []
    return "json", []


def fields(feature: Feature, value: Any, problems: list[str] | None = None) -> list[Field]:
    """The inputs of one record or row, filled with ``value`` (shown: secrets "set")."""
    value = value if isinstance(value, dict) else {}
    model_fields = getattr(feature.model, "model_fields", None)
    problems = problems or []
    if not model_fields:
        return [Field(WHOLE, "json", value or None, [], True, problems)]
    found = []
    for name, info in model_fields.items():
        kind, choices = _kind(info.annotation)
        if name in feature.secrets:
            kind = "secret"
        mine = [p for p in problems if (m := PROBLEM_FIELD.search(p)) and m[1] == name]
        found.append(Field(name, kind, value.get(name, None if info.is_required()
                                                  else info.get_default(call_default_factory=True)),
                           choices, info.is_required(), mine))  # fmt: skip
    return found


def submitted(feature: Feature, form: FormData) -> dict[str, Any]:
    """A record or row from a submitted form: each input read as its kind says (an
    empty one left out, so the model's default applies or, for a secret, the value
    kept)."""
    if not getattr(feature.model, "model_fields", None):
        return _json(form.get(f"f.{WHOLE}"), WHOLE) or {}
    found: dict[str, Any] = {}
    for field in fields(feature, {}):
        raw = form.getlist(f"f.{field.name}")
        text = str(raw[-1]) if raw else ""
        if field.kind == "checkbox":
            found[field.name] = text == "true"
        elif not text.strip():
            continue
        elif field.kind == "number" or field.kind == "json":
            found[field.name] = _json(text, field.name)
        else:
            found[field.name] = text
    return found


def _json(text: Any, name: str) -> Any:
    if text is None or not str(text).strip():
        return None
    try:
        return json.loads(str(text))
    except ValueError:
        from clusterd.schema.validation import InvalidSetting

        raise InvalidSetting([f"field '{name}': not JSON: {str(text)[:80]!r}"]) from None
