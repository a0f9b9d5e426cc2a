"""Configuration files: what ``saveconfig`` writes and ``loadconfig`` reads (XML).

::

    <clusterconfig format="1" kind="cluster" name="americas" saved-by="..." saved-at="...">
      <cluster>   <feature name="settz">{"timezone": "UTC"}</feature> ... </cluster>
      <group name="Paris"> <feature .../> ... </group>
      <machine name="newyork.example.com"> <feature .../> ... </machine>
    </clusterconfig>

A standalone machine's file has ``kind="standalone"`` and one ``<machine>``.  Each
feature's definition is JSON inside the element (exact, and readable).  Reading goes
through defusedxml: entity declarations, DTDs and external references are refused, and
so is anything that is not this shape; every value is validated against the catalogue
before anything is applied.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET  # writing only; reading uses defusedxml
from dataclasses import dataclass, field
from typing import Any

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from clusterd.schema.catalogue import CATALOGUE
from clusterd.schema.validation import InvalidSetting

FORMAT = "1"
MAX_FILE = 64 * 1024 * 1024


class BadConfigFile(InvalidSetting):
    """Raised when a configuration file cannot be read: malformed, hostile or invalid."""


@dataclass
class ConfigFile:
    kind: str  # "cluster" or "standalone"
    name: str
    cluster: dict[str, Any] = field(default_factory=dict)  # feature -> definition
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)


def _features(parent: ET.Element, features: dict[str, Any]) -> None:
    for command, value in sorted(features.items()):
        child = ET.SubElement(parent, "feature", name=command)
        child.text = json.dumps(value, sort_keys=True)


def dump(config: ConfigFile, saved_by: str, saved_at: str) -> bytes:
    root = ET.Element("clusterconfig", {"format": FORMAT, "kind": config.kind,
                      "name": config.name, "saved-by": saved_by, "saved-at": saved_at})  # fmt: skip
    if config.kind == "cluster":
        _features(ET.SubElement(root, "cluster"), config.cluster)
        for group, features in sorted(config.groups.items()):
            _features(ET.SubElement(root, "group", name=group), features)
    for machine, features in sorted(config.machines.items()):
        _features(ET.SubElement(root, "machine", name=machine), features)
    ET.indent(root)
    text: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return text + b"\n"


def _read_features(element: Any, where: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if (element.text or "").strip():
        raise BadConfigFile([f"{where}: text outside <feature> elements"])
    for child in element:
        name = child.get("name", "")
        if child.tag != "feature" or not name or len(child) or (child.tail or "").strip():
            raise BadConfigFile([f"{where}: expected only <feature name=...>JSON</feature>"])
        if name not in CATALOGUE.commands() or CATALOGUE[name].internal:
            raise BadConfigFile([f"{where}: unknown feature {name!r}"])
        if name in found:
            raise BadConfigFile([f"{where}: feature {name} appears twice"])
        try:
            value = json.loads(child.text or "")
        except (ValueError, RecursionError) as exc:
            raise BadConfigFile([f"{where}: feature {name}: not JSON ({exc})"]) from None
        if not isinstance(value, dict):
            raise BadConfigFile([f"{where}: feature {name}: expected a JSON object"])
        feature = CATALOGUE[name]
        try:
            if feature.is_table:
                value = {row: feature.validate_row(row, data) for row, data in value.items()}
            else:
                value = feature.validate_record(value)
        except InvalidSetting as exc:
            raise BadConfigFile([f"{where}: {p}" for p in exc.problems]) from None
        found[name] = value
    return found


def load(data: bytes) -> ConfigFile:
    """Parse and validate a file; raises BadConfigFile with the reason."""
    if len(data) > MAX_FILE:
        raise BadConfigFile([f"the file is larger than {MAX_FILE} bytes"])
    try:
        root = SafeET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise BadConfigFile([f"refused: the file uses forbidden XML ({exc})"]) from None
    except ET.ParseError as exc:
        raise BadConfigFile([f"not well-formed XML: {exc}"]) from None
    except (LookupError, ValueError) as exc:  # an encoding Python does not know, utf-32
        raise BadConfigFile([f"unreadable XML declaration: {exc}"]) from None
    if root.tag != "clusterconfig" or root.get("format") != FORMAT:
        raise BadConfigFile([f"not a clusterd configuration file (format {FORMAT})"])
    kind = root.get("kind")
    if kind not in ("cluster", "standalone"):
        raise BadConfigFile([f"unknown kind {kind!r}"])
    config = ConfigFile(kind, root.get("name", ""))
    seen: set[tuple[str, str]] = set()
    for element in root:
        name = element.get("name", "")
        if (element.tag, name) in seen:
            raise BadConfigFile([f"<{element.tag} {name}> appears twice"])
        seen.add((element.tag, name))
        if element.tag == "cluster" and kind == "cluster":
            config.cluster = _read_features(element, "cluster")
        elif element.tag == "group" and kind == "cluster" and name:
            config.groups[name] = _read_features(element, f"group {name}")
        elif element.tag == "machine" and name:
            config.machines[name] = _read_features(element, f"machine {name}")
        else:
            raise BadConfigFile([f"unexpected <{element.tag}> in a {kind} file"])
    if kind == "standalone" and len(config.machines) != 1:
        raise BadConfigFile(["a standalone file holds exactly one machine"])
    return config
