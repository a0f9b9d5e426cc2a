"""What a target says: read from ``targets.d/*.toml`` beside ``clusterd.toml`` (local files
that nothing replicated can write; ``docs/services.md``).

Each file holds one or more ``[[target]]`` tables.  Unknown keys, bad values, two
targets of one name or one path are refused with the file and the key, before the
daemon starts.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clusterd.core.errors import ConfigError
from clusterd.schema.catalogue import CATALOGUE

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
WAIT_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s)?(?::(\d+(?:\.\d+)?)(ms|s)?)?")
BUILT_IN = ("postfix", "resolv", "chrony", "timezone")
GENERATIONS = 5


def _seconds(number: str, unit: str | None) -> float:
    return float(number) / (1000 if unit == "ms" else 1)


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    renderer: str | None = None  # a built-in renderer
    templates: dict[str, Path] = {}  # file name -> Jinja2 template (users' own files)
    features: list[str] = []  # what it reads (a built-in renderer adds its own)
    path: Path | None = None  # the link clusterd swaps; None: no files (a hook)
    validate_: str | None = Field(None, alias="validate")
    reload: str | None = None
    probe: str | None = None  # "smtp HOST:PORT ...", or a command
    # s after the reload before the probe: a service may apply a reload after the command
    # returns (Postfix's master does), and a probe too early sees the old one.
    settle: Annotated[float, Field(ge=0, le=3)] = 1.0
    wait: str = "0.2s"  # MIN[:MAX]; MAX is 4 x MIN when left out
    timeout: Annotated[float, Field(gt=0, le=3600)] = 30.0
    max_shrink: Annotated[float, Field(ge=0, le=1)] = 0.5
    file_mode: str = "0644"
    options: dict[str, Any] = {}  # the renderer's (local: instance paths, extra settings)
    changed_arguments: bool = False  # append the changed features to reload (the old hook)
    # One member of each group applies first; the others wait until it applied and
    # probed the same commits healthily, then apply after a random delay up to
    # ``canary_delay`` s (docs/services.md, "Canary rollout").
    canary: bool = False
    canary_delay: Annotated[float, Field(ge=0, le=600)] = 2.0

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError("letters, digits, '_', '.', '-' (64 at most)")
        return value

    @field_validator("renderer")
    @classmethod
    def _renderer(cls, value: str | None) -> str | None:
        if value is not None and value not in BUILT_IN:
            raise ValueError(f"no built-in renderer {value!r} ({', '.join(BUILT_IN)})")
        return value

    @field_validator("features")
    @classmethod
    def _features(cls, value: list[str]) -> list[str]:
        for feature in value:
            if feature not in CATALOGUE:
                raise ValueError(f"no feature {feature!r}")
        return value

    @field_validator("validate_", "reload", "probe")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None and not shlex.split(value):
            raise ValueError("an empty command line")
        return value

    @field_validator("wait")
    @classmethod
    def _wait(cls, value: str) -> str:
        if not WAIT_RE.fullmatch(value):
            raise ValueError("MIN[:MAX], each a number of seconds, or with 'ms' or 's'")
        return value

    @field_validator("file_mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        if not re.fullmatch(r"0?[0-7]{3}", value):
            raise ValueError("an octal mode such as 0644")
        return value

    @model_validator(mode="after")
    def _complete(self) -> Target:
        if self.renderer and self.templates:
            raise ValueError("a built-in renderer or templates, not both")
        if (self.renderer or self.templates) and self.path is None:
            raise ValueError("'path' names where the files go")
        if self.path is not None and not self.path.is_absolute():
            raise ValueError("'path' must be absolute")
        if not (self.renderer or self.templates or self.reload):
            raise ValueError("a target renders files (renderer, templates) or runs 'reload'")
        if self.templates and not self.features:
            raise ValueError("templates read the features listed in 'features'")
        for name in self.templates:
            if not NAME_RE.fullmatch(name):
                raise ValueError(f"file name {name!r}: letters, digits, '_', '.', '-'")
        return self

    @property
    def validate_command(self) -> str | None:
        return self.validate_

    @property
    def reads(self) -> frozenset[str]:
        from clusterd.services.render import renderers

        built_in = renderers()[self.renderer][1] if self.renderer else ()
        return frozenset(self.features) | frozenset(built_in)

    @property
    def waits(self) -> tuple[float, float]:
        """(quiet for MIN, at most MAX after the first change), in seconds."""
        match = WAIT_RE.fullmatch(self.wait)
        assert match is not None
        low = _seconds(match[1], match[2])
        high = _seconds(match[3], match[4]) if match[3] else 4 * low
        return low, max(low, high)

    @property
    def mode(self) -> int:
        return int(self.file_mode, 8)


def load(directory: Path, hook: Target | None = None) -> list[Target]:
    """The targets of ``directory`` (``targets.d``), files in name order; ``hook``: the
    old ``publish_hook`` as a target of its own."""
    found: list[Target] = [hook] if hook is not None else []
    files = sorted(directory.glob("*.toml")) if directory.is_dir() else []
    for path in files:
        try:
            tables = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        unknown = set(tables) - {"target"}
        if unknown or not isinstance(tables.get("target", []), list):
            raise ConfigError(f"{path}: only [[target]] tables belong here")
        for i, table in enumerate(tables.get("target", [])):
            try:
                found.append(Target.model_validate(table))
            except ValidationError as exc:
                problems = [f"{path}: target {i + 1}: {'.'.join(str(p) for p in e['loc'])}: "
                            f"{e['msg']}" for e in exc.errors()]  # fmt: skip
                raise ConfigError("\n".join(problems)) from None
    names = [t.name for t in found]
    paths = [t.path for t in found if t.path is not None]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{directory}: two targets named {name!r}")
    for p in paths:
        if paths.count(p) > 1:
            raise ConfigError(f"{directory}: two targets write {p}")
    return found
