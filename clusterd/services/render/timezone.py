"""The time zone from ``settz``: ``timezone`` (as ``/etc/timezone``) and ``localtime``, a
link to the zone's file under ``zoneinfo`` (the target option, default
``/usr/share/zoneinfo``), for ``/etc/localtime`` to point at."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clusterd.services.render import Rendered

FEATURES = ("settz",)


def render(values: Mapping[str, Any], hostname: str, options: Mapping[str, Any]) -> Rendered:
    zone = (values.get("settz") or {}).get("timezone") or "UTC"
    zoneinfo = str(options.get("zoneinfo", "/usr/share/zoneinfo")).rstrip("/")
    return Rendered({"timezone": f"{zone}\n"}, links={"localtime": f"{zoneinfo}/{zone}"})
