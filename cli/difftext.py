"""Settings values, and the differences between two of them, as indented lines to read.

Nothing is cut: a value is written whole, one field per line, nested values indented
under their field, list items after ``- ``, a text with line breaks as continuation
lines under ``|`` (so no line ever holds a break inside a value).  A difference is
written field by field: a changed short value as ``field: old → new``, an added or
removed field or row with ``+`` or ``-`` before each of its lines, and a changed list
or text as a line diff (its lines unchanged, removed ``-`` or added ``+``).

>>> for line in diff({"servers": ["a"], "tz": "UTC"}, {"servers": ["a", "b"], "tz": "CET"}):
...     print(line)
    servers:
      - "a"
  +   - "b"
    tz: "UTC" → "CET"
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

WIDE = 100  # a changed value longer than this goes on lines of its own, old then new


def scalar(value: Any) -> str:
    """One value on one line (JSON: strings quoted, escapes for line breaks)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _multiline(value: Any) -> bool:
    return isinstance(value, str) and "\n" in value


def _nested(value: Any) -> bool:
    return isinstance(value, Mapping | list) and bool(value)


def pretty(value: Any) -> list[str]:
    """``value`` as lines, each nested level indented two more spaces."""
    if isinstance(value, Mapping) and value:
        return [line for key, item in value.items() for line in _keyed(str(key), item)]
    if isinstance(value, list) and value:
        lines = []
        for item in value:
            first, *rest = pretty(item)
            lines += [f"- {first}", *(f"  {line}" for line in rest)]
        return lines
    if _multiline(value):
        return ["|", *(f"  {line}" for line in value.split("\n"))]
    return [scalar(value)]


def _keyed(key: str, value: Any) -> list[str]:
    if _nested(value):
        return [f"{key}:", *(f"  {line}" for line in pretty(value))]
    first, *rest = pretty(value)
    return [f"{key}: {first}", *rest]


def lines(value: Any, indent: int = 4) -> list[str]:
    """``pretty`` lines, indented."""
    return [" " * indent + line for line in pretty(value)]


Mark = tuple[str, int, str]  # (" ", "-" or "+"; depth; text)


def _all(mark: str, depth: int, value: Any, key: str | None = None) -> list[Mark]:
    found = pretty(value) if key is None else _keyed(key, value)
    return [(mark, depth, line) for line in found]


def _short(old: Any, new: Any) -> bool:
    one = not (_nested(old) or _nested(new) or _multiline(old) or _multiline(new))
    return one and len(scalar(old)) + len(scalar(new)) <= WIDE


def _marks(old: Any, new: Any, depth: int) -> list[Mark]:
    if old == new:
        return []
    if old is None:
        return _all("+", depth, new)
    if new is None:
        return _all("-", depth, old)
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found: list[Mark] = []
        for key in [*old, *(k for k in new if k not in old)]:
            if key not in new:
                found += _all("-", depth, old[key], str(key))
            elif key not in old:
                found += _all("+", depth, new[key], str(key))
            elif old[key] != new[key] and _short(old[key], new[key]):
                found.append((" ", depth, f"{key}: {scalar(old[key])} → {scalar(new[key])}"))
            elif old[key] != new[key]:
                found.append((" ", depth, f"{key}:"))
                found += _marks(old[key], new[key], depth + 1)
        return found
    if _short(old, new):
        return [(" ", depth, f"{scalar(old)} → {scalar(new)}")]
    a, b = pretty(old), pretty(new)
    found = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            found += [(" ", depth, line) for line in a[i1:i2]]
            continue
        found += [("-", depth, line) for line in a[i1:i2]]
        found += [("+", depth, line) for line in b[j1:j2]]
    return found


def diff(old: Any, new: Any, indent: int = 2) -> list[str]:
    """The lines saying how ``new`` differs from ``old`` (``None``: not there): the
    mark (``-``, ``+`` or a space) at ``indent``, the text two columns further."""
    return [f"{' ' * indent}{mark} {'  ' * depth}{text}" for mark, depth, text in
            _marks(old, new, 0)]  # fmt: skip
