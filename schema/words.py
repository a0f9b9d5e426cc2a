"""The words an admin types for a field's value, read into the JSON its model checks.

The shell edits a record or row with ``FIELD=VALUE`` words; ``edited`` turns them into
the fields to set, from each field's ``Shape`` (``schema.shapes``, derived from the type
annotations: no table per feature)::

    a list              servers=10.0.0.53,10.0.0.54       (or JSON: '["10.0.0.53"]')
    a list of models    destinations=mx1.example.com:25,mx2.example.com
                        -> [{"host": "mx1.example.com", "port": 25},
                            {"host": "mx2.example.com"}]
    yes/no              hard_bounce_messages=no
    null                bounce_profile=null               (an optional field: unset)
    anything else       JSON where it parses as JSON, else the text

An element of a list of models is written as the value of the model's obvious key, a
string of a JSON list too; if the model has a ``port`` field, ``host:port`` sets both
(``[2001:db8::1]:25`` for IPv6).  ``FIELD+=VALUE`` and ``FIELD-=VALUE`` add elements to,
or remove them from, the list the edit starts from; an element given by some of its
fields (``servers-=10.0.0.53``) matches every element holding those values.

Each field is checked on its own as it is read, and refused in the admin's words: the
field, what is wrong, what was expected and an example -- never pydantic's wording::

    dnsconfig field 'servers': not an IP address: 'foo' (item 1); expected a list of
    DNS servers, e.g. servers=10.0.0.53,10.0.0.54

The whole record or row is validated afterwards by ``Feature`` as always.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from clusterd.schema.feature import Feature
from clusterd.schema.shapes import Shape, bracketed, example, fields, kind_field
from clusterd.schema.validation import InvalidSetting

Op = Literal["=", "+=", "-="]
YES = frozenset({"yes", "y", "true", "on", "1"})
NO = frozenset({"no", "n", "false", "off", "0"})
JSON_TYPES: dict[str, type] = {"bool": bool, "int": int, "model": dict}


def edited(
    feature: Feature,
    given: list[tuple[str, Op, str]],
    current: Mapping[str, Any] | None,
    *,
    row: str | None = None,
) -> dict[str, Any]:
    """The fields ``given`` set, as JSON: ``(name, "=", text)`` its value in words;
    ``+=``/``-=`` the list ``current`` holds with elements added or removed.  Raises
    InvalidSetting, in the admin's words, for a field that is not there or does not fit."""
    where = _where(feature, row)
    base = dict(current or {})
    shapes = fields(feature, {**base, **{n: _plain(t) for n, op, t in given if op == "="}})
    out: dict[str, Any] = {}
    for name, op, text in given:
        shape = shapes.get(name)
        if shape is None and not shapes:  # not a model: JSON where it parses
            out[name] = _plain(text)
        elif shape is None:
            known = ", ".join(shapes)
            raise InvalidSetting([f"{where} field {name!r}: no such field; the fields: {known}"])
        elif op == "=":
            out[name] = check(where, name, shape, value(shape, text))
        elif shape.kind != "list":
            raise InvalidSetting(
                [
                    f"{where} field {name!r}: {op} adds to or removes from a list, and {name} is "
                    f"{shape.expected}; e.g. {example(name, shape)}"
                ]
            )
        else:
            now = out.get(name, base.get(name))
            now = _changed(where, name, shape, op, list(now or []), text)
            out[name] = check(where, name, shape, now)
    return out


def value(shape: Shape, text: str) -> Any:
    """The JSON value ``FIELD=text`` gives a field of this shape (not checked)."""
    parsed, is_json = _parsed(text)
    if is_json and parsed is None and shape.optional:
        return None
    item = shape.item
    if shape.kind == "list" and is_json and isinstance(parsed, list):
        return [scalar(item, x) if item and isinstance(x, str) else x for x in parsed]
    if shape.kind == "list":  # a,b,c (empty parts dropped)
        parts = [p.strip() for p in text.split(",")]
        return [scalar(item, p) if item else p for p in parts if p]
    if shape.kind in ("text", "choice") and is_json and isinstance(parsed, str):
        return scalar(shape, parsed)
    if is_json and type(parsed) is JSON_TYPES.get(shape.kind):
        return parsed
    if shape.kind == "json":
        return parsed if is_json else text
    return scalar(shape, text)


def scalar(shape: Shape, text: str) -> Any:
    """One value in words, not JSON: yes/no, a number, a choice in any case, a model by
    its obvious key (``host:port``); else the text itself, for the check to refuse."""
    if shape.kind == "bool" and text.lower() in YES | NO:
        return text.lower() in YES
    if shape.kind == "int" and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if shape.kind == "choice":
        return next((c for c in shape.choices if c.lower() == text.lower()), text)
    if shape.kind == "model" and shape.key is not None:
        return _shorthand(shape, shape.key, text)
    return text


def check(where: str, name: str, shape: Shape, found: Any) -> Any:
    """``found`` if it fits ``shape``; else InvalidSetting, a line per problem."""
    try:
        TypeAdapter(shape.annotation).validate_python(found)
    except ValidationError as exc:
        raise InvalidSetting(_problems(where, name, shape, exc)) from None
    return found


def missing(feature: Feature, data: Mapping[str, Any], *, row: str | None = None) -> list[str]:
    """A line per required field ``data`` lacks, saying what to give (of a row of several
    kinds whose kind is not given, only that)."""
    shapes = fields(feature, data)
    tag = kind_field(feature)
    if tag is not None and tag not in data:
        shapes = {tag: shapes[tag]}
    return [
        f"{_where(feature, row)}: field {name!r} is required: {shape.what}, "
        f"e.g. {example(name, shape)}"
        for name, shape in shapes.items()
        if shape.required and name not in data
    ]


def _where(feature: Feature, row: str | None) -> str:
    return f"{feature.command} row {row!r}" if row is not None else feature.command


def _parsed(text: str) -> tuple[Any, bool]:
    try:
        return json.loads(text), True
    except (ValueError, RecursionError):  # (not JSON, or nested past Python's limit)
        return None, False


def _plain(text: str) -> Any:
    parsed, is_json = _parsed(text)
    return parsed if is_json else text


def _shorthand(shape: Shape, key: str, text: str) -> dict[str, Any]:
    host, port = text, None
    if "port" in shape.fields and key != "port":
        inside = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", text)
        if inside:
            host, port = inside[1], inside[2]
        elif text.count(":") == 1:  # (more: an IPv6 address without a port)
            host, port = text.split(":")
    elif text.startswith("[") and text.endswith("]"):
        host = text[1:-1]
    found = {key: scalar(shape.fields[key], host)}
    if port is not None:
        found["port"] = scalar(shape.fields["port"], port)
    return found


def _changed(where: str, name: str, shape: Shape, op: str, now: list[Any], text: str) -> list[Any]:
    """``now`` with the elements ``text`` names added (``+=``) or removed (``-=``)."""
    assert shape.item is not None
    given = value(shape, text)
    if not given:
        what = "add" if op == "+=" else "remove"
        raise InvalidSetting([f"{where} field {name!r}: nothing to {what}; "
                              f"e.g. {example(name, shape, op)}"])  # fmt: skip
    listed: Any = types.GenericAlias(list, (shape.item.annotation,))
    items: TypeAdapter[list[Any]] = TypeAdapter(listed)
    try:
        dumped = items.dump_python(items.validate_python(given), mode="json")
    except ValidationError as exc:
        raise InvalidSetting(_problems(where, name, shape, exc)) from None
    for g, d in zip(given, dumped, strict=True):  # canonical, as given: only the keys typed
        element = {k: d[k] for k in g if k in d} if isinstance(g, dict) else d
        there = [e for e in now if _matches(e, element)]
        said = _said(element, shape.item)
        if op == "+=" and there:
            raise InvalidSetting([f"{where} field {name!r}: {said} is already there"])
        if op == "-=" and not there:
            held = ", ".join(_said(e, shape.item) for e in now) or "nothing"
            raise InvalidSetting([f"{where} field {name!r}: {said} is not there (it holds {held})"])
        now = [*now, element] if op == "+=" else [e for e in now if not _matches(e, element)]
    return now


def _matches(element: Any, wanted: Any) -> bool:
    if isinstance(element, dict) and isinstance(wanted, dict):
        return all(element.get(k) == v for k, v in wanted.items())
    return bool(element == wanted)


def _said(v: Any, item: Shape | None = None) -> str:
    """A value as the admin would type it, quoted: a model element by its obvious key
    (and port)."""
    key = item.key if item is not None else None
    if isinstance(v, dict) and key is not None and key in v:
        text = str(v[key])
        if "port" in v:
            text = f"{bracketed(text)}:{v['port']}"
        return f"'{text}'"
    return f"'{v}'" if isinstance(v, str) else json.dumps(v, separators=(",", ":"))


def _problems(where: str, name: str, shape: Shape, exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        part, at = _locate(shape, err["loc"])
        why, plain = _why(err, part)
        expected = "" if plain and part is shape else f"; expected {shape.expected}"
        lines.append(f"{where} field {name!r}: {why}{at}{expected}, e.g. {example(name, shape)}")
    return lines


def _locate(shape: Shape, loc: tuple[int | str, ...]) -> tuple[Shape, str]:
    """The part of ``shape`` an error is about, and where it is (`` (item 2, port)``)."""
    part, steps = shape, []
    for step in loc:
        if isinstance(step, int) and part.item is not None:
            steps.append(f"item {step + 1}")
            part = part.item
        elif isinstance(step, str) and step in part.fields:
            if step != part.key:
                steps.append(step)
            part = part.fields[step]
        # else: a tag of pydantic's (a union's arm, a validator), not the admin's
    return part, f" ({', '.join(steps)})" if steps else ""


def _why(err: Any, part: Shape) -> tuple[str, bool]:
    """What is wrong, and whether it is only "not what was expected"."""
    kind, ctx, last = err["type"], err.get("ctx") or {}, (err["loc"] or ("",))[-1]
    if kind in ("value_error", "assertion_error"):
        return str(err["msg"]).removeprefix("Value error, ").removeprefix(
            "Assertion failed, "
        ), False
    if kind == "missing":
        return f"field {last!r} is missing", False
    if kind == "extra_forbidden":
        return f"there is no field {last!r} (fields: {', '.join(part.fields)})", False
    unit = "character" if kind.startswith("string_") else "item"
    if kind.endswith(("too_short", "too_long")):
        n = ctx.get("min_length" if kind.endswith("short") else "max_length")
        least = "needs at least" if kind.endswith("short") else "takes at most"
        return f"{least} {n} {unit}{'s' if n != 1 else ''}", False
    return f"{_said(err.get('input'), part.item)} is not {part.expected}", True
