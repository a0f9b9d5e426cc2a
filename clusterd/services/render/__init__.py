"""Renderers: the effective configuration of one machine, made into a service's files.

A renderer is a function ``(values, hostname, options) -> Rendered``: ``values`` are the
machine's effective values by feature (what ``effective.json`` holds), ``options`` the
target's local ``options`` table.  It returns every file of the target's directory
(and symbolic links, for a file that must point elsewhere), per map file, how many
entries it holds (the guard against emptied maps), and which files hold a secret (a
password: written readable by their owner only).  A renderer is pure: no I/O, so its
exact output is unit-tested.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Rendered:
    files: dict[str, str]
    maps: dict[str, int] = field(default_factory=dict)  # map file -> entries
    links: dict[str, str] = field(default_factory=dict)  # name -> where it points
    private: set[str] = field(default_factory=set)  # files holding a secret: mode 0600


class RenderError(ValueError):
    """A value the service's files cannot say (named, never written half)."""


Renderer = Callable[[Mapping[str, Any], str, Mapping[str, Any]], Rendered]


def renderers() -> dict[str, tuple[Renderer, tuple[str, ...]]]:
    """The built-in renderers by name, with the features each reads."""
    from clusterd.services.render import chrony, postfix, resolv, timezone

    return {
        "postfix": (postfix.render, postfix.FEATURES),
        "resolv": (resolv.render, resolv.FEATURES),
        "chrony": (chrony.render, chrony.FEATURES),
        "timezone": (timezone.render, timezone.FEATURES),
    }
