"""What a field's value is, said in words: derived from the models' annotations.

``fields(feature)`` gives every field of a feature's record (or row) its ``Shape``, and
``describe`` says it for help and errors, with an example the shell accepts::

    servers: list of DNS servers, e.g. servers=10.0.0.53,10.0.0.54
    timeout_seconds: number 1-600, e.g. timeout_seconds=60
    mode: internet-root|local, e.g. mode=internet-root

Nothing here is written per feature.  A field type of ``schema.fields`` carries a
``Hint`` (what it is called, examples); a ``Literal`` lists its choices; numbers say
their bounds; a field naming a row of another feature says which (its ``Reference``);
a model is called by its ``noun`` ClassVar or its class name.  A model's *obvious key*
-- the one field an element of a list of them can be written as -- is the key it
declares (``shorthand: ClassVar[str] = "host"``), else its only required field;
``schema.words`` reads values written so.
"""

from __future__ import annotations

import enum
import json
import re
import shlex
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from clusterd.schema.feature import Feature
from clusterd.schema.fields import Hint

SCALARS = frozenset({"bool", "int", "choice", "text"})


@dataclass(frozen=True, kw_only=True)
class Shape:
    """What one value is, as the shell reads and names it.

    ``kind`` is bool, int, choice, text, list, model or json (anything else); ``what``
    names it without an article (``list of DNS servers``); ``examples`` are values in
    words (of a list: its elements); ``annotation`` is what pydantic checks it as.
    """

    kind: str
    what: str
    examples: tuple[str, ...]
    annotation: Any
    optional: bool = False
    required: bool = False
    plural: str = ""
    choices: tuple[str, ...] = ()
    item: Shape | None = None  # a list's element
    fields: Mapping[str, Shape] = field(default_factory=dict)  # a model's
    key: str | None = None  # a model's obvious key

    @property
    def expected(self) -> str:
        """``a list of DNS servers``, ``one of a|b``, ``yes or no``."""
        if self.kind == "bool":
            return "yes or no"
        if self.kind == "choice":
            return f"one of {self.what}"
        if self.what.startswith("text"):
            return self.what
        return f"{'an' if self.what[0] in 'aeioAEIO' else 'a'} {self.what}"

    @property
    def wordy(self) -> bool:
        """Whether a value is written in words rather than JSON (as a list element)."""
        return self.kind in SCALARS or (self.kind == "model" and self.key is not None)


def fields(feature: Feature, data: Mapping[str, Any] | None = None) -> dict[str, Shape]:
    """The shapes of the fields of ``feature``'s record (or row); for a model of several
    kinds (a discriminated union), of the kind ``data`` names, else of them all."""
    variants, tag = _variants(feature.model)
    refs = _references(feature)
    chosen = [v for v in variants if tag and (data or {}).get(tag) in _tags(v, tag)]
    if len(variants) == 1 or chosen:
        return _model_fields((chosen or variants)[0], refs)
    merged: dict[str, Shape] = {}
    for variant in variants:
        for name, shape in _model_fields(variant, refs).items():
            merged.setdefault(name, shape)
    if tag:
        tags = tuple(t for v in variants for t in _tags(v, tag))
        merged[tag] = replace(_shape(Literal[tags]), required=True)
    return merged


def describe(name: str, shape: Shape) -> str:
    """``servers: list of DNS servers, e.g. servers=10.0.0.53,10.0.0.54``"""
    unset = ", or null" if shape.optional else ""
    return f"{name}: {shape.what}{unset}, e.g. {example(name, shape)}"


def example(name: str, shape: Shape, op: str = "=") -> str:
    """One ``FIELD=VALUE`` word, quoted for the shell where it must be."""
    if shape.kind == "list" and shape.item is not None:
        if shape.item.wordy:
            words = ",".join(shape.examples[: 1 if op != "=" else 2])
        else:
            words = f"[{shape.item.examples[0]}]"
    else:
        words = shape.examples[0]
    return shlex.quote(f"{name}{op}{words}")


def help_lines(feature: Feature) -> list[str]:
    """Every field of ``feature`` described; a model of several kinds, kind by kind."""
    variants, tag = _variants(feature.model)
    if len(variants) < 2 or tag is None:
        return [describe(name, shape) for name, shape in fields(feature).items()]
    lines = [describe(tag, fields(feature)[tag])]
    for variant in variants:
        for kind in _tags(variant, tag):
            lines.append(f"with {tag}={kind}:")
            shapes = fields(feature, {tag: kind})
            lines += [f"  {describe(n, s)}" for n, s in shapes.items() if n != tag]
    return lines


def kind_field(feature: Feature) -> str | None:
    """The field that says which kind a row of several kinds is (``kind``), if any."""
    variants, tag = _variants(feature.model)
    return tag if len(variants) > 1 else None


def bracketed(host: str) -> str:
    """An IPv6 address in brackets, as ``host:port`` needs it."""
    return f"[{host}]" if ":" in host else host


# -- the models' annotations -------------------------------------------------------------


def _variants(model: Any) -> tuple[list[type[BaseModel]], str | None]:
    tag = None
    while get_origin(model) is Annotated:
        model, *meta = get_args(model)
        for m in meta:
            if isinstance(m, FieldInfo) and isinstance(m.discriminator, str):
                tag = m.discriminator
    arms = get_args(model) if get_origin(model) in (Union, types.UnionType) else (model,)
    return [a for a in arms if isinstance(a, type) and issubclass(a, BaseModel)], tag


def _tags(variant: type[BaseModel], tag: str) -> tuple[str, ...]:
    info = variant.model_fields.get(tag)
    return tuple(str(a) for a in get_args(info.annotation)) if info else ()


def _references(feature: Feature) -> dict[str, str]:
    found = {}
    for ref in feature.references:
        where = f" with {ref.where[0]} {ref.where[1]}" if ref.where else ""
        article = "an" if ref.target[0] in "aeiou" else "a"
        found[ref.path] = f"name of {article} {ref.target} row{where}"
    return found


def _model_fields(
    model: type[BaseModel], refs: Mapping[str, str], path: str = ""
) -> dict[str, Shape]:
    return {name: _field(info, refs, path + name) for name, info in model.model_fields.items()}


def _field(info: FieldInfo, refs: Mapping[str, str], path: str) -> Shape:
    required = info.is_required()
    default = None if required else info.get_default(call_default_factory=True)
    shape = _shape(info.annotation, tuple(info.metadata), default, refs, path)
    shape = replace(shape, required=required)
    if info.description:
        shape = replace(shape, what=info.description)
    if info.examples:
        sample = info.examples[0]
        shape = replace(
            shape, examples=tuple(map(_word, sample if isinstance(sample, list) else [sample]))
        )
    return shape


def _shape(
    tp: Any,
    meta: tuple[Any, ...] = (),
    default: Any = None,
    refs: Mapping[str, str] | None = None,
    path: str = "",
) -> Shape:
    whole = Annotated[(tp, *meta)] if meta else tp
    flat = list(meta)
    while get_origin(tp) is Annotated:
        tp, *more = get_args(tp)
        flat = [*more, *flat]
    flat = [m for x in flat for m in (x.metadata if isinstance(x, FieldInfo) else [x])]
    return replace(_kind(tp, flat, default, refs or {}, path), annotation=whole)


def _kind(tp: Any, meta: list[Any], default: Any, refs: Mapping[str, str], path: str) -> Shape:
    origin = get_origin(tp)
    arms = [a for a in get_args(tp) if a is not type(None)]
    if origin in (Union, types.UnionType) and len(arms) == 1:
        return replace(_shape(arms[0], (), default, refs, path), optional=True)
    if tp is bool:
        first = "no" if default is False else "yes"
        return Shape(kind="bool", what="yes|no", examples=(first,), annotation=tp)
    if tp is int:
        return _number(meta, default)
    if origin is Literal or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
        values = get_args(tp) if origin is Literal else [m.value for m in tp]
        choices = tuple(str(v) for v in values)
        first = str(default) if str(default) in choices else choices[0]
        what = "|".join(choices)
        return Shape(kind="choice", what=what, examples=(first,), annotation=tp, choices=choices)
    if tp is str:
        return _text(meta, default, refs.get(path))
    if origin in (list, tuple, set, frozenset):
        return _list(_shape(get_args(tp)[0], (), None, refs, path), default)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _model(tp, refs, f"{path}.")
    return Shape(kind="json", what="JSON value", examples=("null",), annotation=tp)


def _number(meta: list[Any], default: Any) -> Shape:
    low = high = None
    for m in meta:
        if isinstance(m, at.Ge | at.Gt):
            low = m.ge if isinstance(m, at.Ge) else m.gt + 1  # type: ignore[operator]
        if isinstance(m, at.Le | at.Lt):
            high = m.le if isinstance(m, at.Le) else m.lt - 1  # type: ignore[operator]
    what = "number"
    if low is not None and high is not None:
        what = f"number {low}-{high}"
    elif low is not None:
        what = f"number of at least {low}"
    elif high is not None:
        what = f"number up to {high}"
    first = default if isinstance(default, int) else (low if low is not None else 1)
    return Shape(kind="int", what=what, examples=(str(first),), annotation=int)


def _text(meta: list[Any], default: Any, ref: str | None) -> Shape:
    hint = next((m for m in reversed(meta) if isinstance(m, Hint)), None)
    longest = next((m.max_length for m in meta if isinstance(m, at.MaxLen)), None)
    if ref is not None:
        return Shape(kind="text", what=ref, examples=("NAME",), annotation=str)
    if hint is not None:
        what, plural = hint.what, hint.plural
        return Shape(kind="text", what=what, examples=hint.examples, annotation=str, plural=plural)
    what = "text" if longest is None else f"text of at most {longest} characters"
    first = default if isinstance(default, str) and default else "text"
    return Shape(kind="text", what=what, examples=(first,), annotation=str, plural="texts")


def _list(item: Shape, default: Any) -> Shape:
    many = item.what if item.kind == "choice" else (item.plural or _plural(item.what))
    examples = item.choices[:2] if item.kind == "choice" else item.examples[:2]
    if isinstance(default, list) and default and item.kind in SCALARS:
        examples = tuple(_word(v) for v in default[:2])
    what = f"list of {many}"
    return Shape(kind="list", what=what, examples=examples, annotation=list, item=item)


def _model(model: type[BaseModel], refs: Mapping[str, str], path: str) -> Shape:
    shapes = _model_fields(model, refs, path)
    key = getattr(model, "shorthand", None)
    needed = [n for n, s in shapes.items() if s.required]
    if key is None and len(needed) == 1 and shapes[needed[0]].kind in SCALARS:
        key = needed[0]
    noun = getattr(model, "noun", None) or re.sub(r"(?<!^)(?=[A-Z])", " ", model.__name__).lower()
    made = Shape(kind="model", what=noun, examples=(), annotation=model, fields=shapes, key=key)
    if key is None:
        sample = {n: _sample(s) for n, s in shapes.items() if s.required}
        return replace(made, examples=(json.dumps(sample, separators=(",", ":")),))
    keys = shapes[key].examples
    if "port" in shapes and key != "port" and len(keys) > 1:
        keys = (f"{bracketed(keys[0])}:{shapes['port'].examples[0]}", *keys[1:])
    return replace(made, examples=keys)


def _sample(shape: Shape) -> Any:
    """An example as JSON (in the JSON example of a model without an obvious key)."""
    first = shape.examples[0] if shape.examples else None
    if shape.kind == "list" and shape.item is not None:
        if shape.item.kind == "text":
            return list(shape.examples[:2])
        return [_sample(shape.item)]
    if shape.kind == "model":
        if shape.key is None:
            return json.loads(shape.examples[0])
        return {shape.key: _sample(shape.fields[shape.key])}
    if shape.kind == "int" and first is not None:
        return int(first)
    if shape.kind == "bool":
        return first == "yes"
    return first if shape.kind != "json" else None


def _word(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))


def _plural(noun: str) -> str:
    head, paren, rest = noun.partition(" (")
    if re.search(r"(s|x|sh|ch)$", head):
        head += "es"
    elif re.search(r"[^aeiou]y$", head):
        head = head[:-1] + "ies"
    else:
        head += "s"
    return head + paren + rest
