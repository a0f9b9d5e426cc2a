"""Turning validation failures into one readable line per bad field."""

from __future__ import annotations

from collections.abc import Collection

from pydantic import ValidationError


class InvalidSetting(ValueError):
    """Raised when a value, a row name or a feature name is not acceptable.

    ``problems`` holds one line per bad field: ``feature row 'name' field 'a.b': why``.
    Nothing is stored when this is raised.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems) or ["invalid setting"]
        super().__init__("; ".join(self.problems))


def problems_from(
    command: str, row: str | None, exc: ValidationError, *, union_tags: Collection[str] = ()
) -> list[str]:
    """One line per error of a pydantic ValidationError, in the project's words.

    ``union_tags`` are the tags of a discriminated union model: pydantic starts the
    location of every error with the tag of the variant it tried, which is not a field.
    """
    where = f"{command} row {row!r}" if row is not None else command
    lines = []
    for err in exc.errors(include_url=False):
        parts = list(err["loc"])
        if parts and parts[0] in union_tags:
            parts = parts[1:]
        loc = ".".join(str(part) for part in parts if not _is_union_tag(part))
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"{where} field {loc!r}: {msg}" if loc else f"{where}: {msg}")
    return lines


def _is_union_tag(part: object) -> bool:
    # Plain unions put the member tried (``function-after[...]``) in the location; it
    # says nothing to a user.  Discriminated unions are handled by ``union_tags``.
    return isinstance(part, str) and part.startswith("function-")
