"""What a configuration feature is: the contract between the catalogue and the store.

A *feature* is what one configuration command edits (``dnsconfig``, ``smtproutes``, ...).
It is either a single **record** (one pydantic model) or a **table** of named rows
(every row one pydantic model, the row name kept outside the model).  The store keeps
settings per feature per mode and never looks inside a value except through this
module: ``Feature.validate_record`` / ``Feature.validate_row`` turn user input into
the canonical JSON the store keeps, and ``Feature.references`` says which fields name
entries of other features.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from clusterd.schema.validation import InvalidSetting, problems_from

JSON = dict[str, Any]


class Level(enum.Enum):
    """The three levels of the hierarchy, most general first."""

    CLUSTER = "cluster"
    GROUP = "group"
    MACHINE = "machine"


ALL_LEVELS = frozenset(Level)
CLUSTER_ONLY = frozenset({Level.CLUSTER})
MACHINE_ONLY = frozenset({Level.MACHINE})


class Kind(enum.Enum):
    RECORD = "record"
    TABLE = "table"


@dataclass(frozen=True, kw_only=True)
class Reference:
    """A field whose value names a row of another table feature.

    ``path`` is the dotted field path inside a record or row; a path step that is a
    list is walked element by element (``hat.sender_groups`` ... ).  The value found
    there is a row name (or a list of row names).  ``where`` restricts the target rows
    to those whose field has a given value (a listener's disclaimer must be a text
    resource of type ``disclaimer``).  An empty or ``None`` value refers to nothing.
    """

    path: str
    target: str
    where: tuple[str, str] | None = None

    def names_in(self, value: Mapping[str, Any]) -> Iterator[str]:
        """Every row name this reference makes inside one record or row value."""
        yield from _walk(value, self.path.split("."))


def _walk(value: Any, steps: list[str]) -> Iterator[str]:
    if isinstance(value, list):
        for item in value:
            yield from _walk(item, steps)
        return
    if not steps:
        if isinstance(value, str) and value:
            yield value
        return
    if isinstance(value, Mapping):
        yield from _walk(value.get(steps[0]), steps[1:])


ROW_NAME = re.compile(r"^[^\s#][^\s]{0,253}$")


# eq=False: a feature is equal only to itself, and hashable (its default is a dict).
@dataclass(frozen=True, kw_only=True, eq=False)
class Feature:
    """One configuration feature of the catalogue.

    ``model`` is the record model (RECORD) or the row model (TABLE; may be a
    discriminated union given as a type annotation).  ``default`` is the factory value:
    the record, or the rows by name, as plain JSON.  ``levels`` says at which levels the
    feature may be defined inside a cluster (a standalone machine keeps everything at
    its own machine mode).  ``network`` features stay at machine level on create and
    survive a join.  ``internal`` features (membership) are edited by cluster
    operations, not by a feature editor.
    """

    command: str
    title: str
    kind: Kind
    model: Any
    levels: frozenset[Level]
    default: Any = None
    references: tuple[Reference, ...] = ()
    network: bool = False
    internal: bool = False
    row_name: re.Pattern[str] = ROW_NAME
    row_name_hint: str = "a name without spaces, not starting with '#'"
    description: str = ""
    secrets: tuple[str, ...] = ()  # fields never shown: ``shown`` prints "set" instead
    _adapter: TypeAdapter[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_adapter", TypeAdapter(self.model))

    @property
    def is_table(self) -> bool:
        return self.kind is Kind.TABLE

    def shown(self, value: Any) -> Any:
        """``value`` (this feature's record, or its table of rows) as it may be shown to
        anyone: every secret field that holds something reads ``"set"``.

        >>> from clusterd.schema.catalogue import CATALOGUE
        >>> CATALOGUE["userconfig"].shown({"bob": {"role": "admin", "passphrase_hash": "x"}})
        {'bob': {'role': 'admin', 'passphrase_hash': 'set'}}
        """
        if not self.secrets or not isinstance(value, Mapping):
            return value
        if self.is_table:
            return {name: self._mask(row) for name, row in value.items()}
        return self._mask(value)

    def _mask(self, row: Any) -> Any:
        if not isinstance(row, Mapping):
            return row
        return {k: ("set" if k in self.secrets and v else v) for k, v in row.items()}

    def validate_record(self, data: Mapping[str, Any]) -> JSON:
        """The canonical JSON of a record; raises InvalidSetting, one line per bad field."""
        if self.is_table:
            raise InvalidSetting([f"{self.command}: is a table; edit its rows by name"])
        return self._validate(data, row=None)

    def validate_row(self, name: str, data: Mapping[str, Any]) -> JSON:
        """The canonical JSON of one row; raises InvalidSetting, one line per bad field."""
        if not self.is_table:
            raise InvalidSetting([f"{self.command}: is a single record, it has no rows"])
        if not isinstance(name, str) or not self.row_name.fullmatch(name):
            raise InvalidSetting(
                [f"{self.command} row {name!r}: bad row name, expected {self.row_name_hint}"]
            )
        return self._validate(data, row=name)

    def _validate(self, data: Mapping[str, Any], row: str | None) -> JSON:
        try:
            parsed = self._adapter.validate_python(dict(data))
        except ValidationError as exc:
            tags = _union_tags(self._adapter)
            raise InvalidSetting(problems_from(self.command, row, exc, union_tags=tags)) from None
        except (TypeError, ValueError) as exc:
            where = f"{self.command} row {row!r}" if row is not None else self.command
            raise InvalidSetting([f"{where}: {exc}"]) from None
        dumped = _dump(parsed)
        if not isinstance(dumped, dict):
            raise InvalidSetting([f"{self.command}: a value must be an object of fields"])
        return dumped

    def factory_value(self) -> JSON:
        """The factory default, validated: the record, or {row name: row}."""
        if self.is_table:
            rows: Mapping[str, Any] = self.default or {}
            return {name: self.validate_row(name, row) for name, row in rows.items()}
        return self.validate_record(self.default or {})


def _union_tags(adapter: TypeAdapter[Any]) -> frozenset[str]:
    """The tags of a discriminated union model (pydantic puts them in error locations)."""
    schema: Any = adapter.core_schema
    if schema.get("type") == "definitions":
        schema = schema["schema"]
    if schema.get("type") == "tagged-union":
        return frozenset(str(tag) for tag in schema["choices"])
    return frozenset()


def _dump(parsed: Any) -> Any:
    if isinstance(parsed, BaseModel):
        return parsed.model_dump(mode="json")
    return parsed


class Catalogue:
    """Every feature by command name, in a stable order."""

    def __init__(self, features: list[Feature]) -> None:
        self._by_command: dict[str, Feature] = {}
        for feature in features:
            if feature.command in self._by_command:
                raise ValueError(f"feature {feature.command!r} declared twice")
            self._by_command[feature.command] = feature

    def __getitem__(self, command: str) -> Feature:
        try:
            return self._by_command[command]
        except KeyError:
            raise UnknownFeature(command) from None

    def __contains__(self, command: object) -> bool:
        return command in self._by_command

    def __iter__(self) -> Iterator[Feature]:
        return iter(self._by_command.values())

    def __len__(self) -> int:
        return len(self._by_command)

    def commands(self) -> list[str]:
        return list(self._by_command)

    def select(self, keep: Callable[[Feature], bool]) -> list[Feature]:
        return [f for f in self if keep(f)]


class UnknownFeature(InvalidSetting):
    """Raised when a command name is not a feature of the catalogue."""

    def __init__(self, command: str) -> None:
        super().__init__([f"unknown feature {command!r}"])
        self.command = command
