"""The configuration schema: the feature catalogue and the restricted-command table."""

from __future__ import annotations

from clusterd.schema.catalogue import CATALOGUE
from clusterd.schema.feature import (
    ALL_LEVELS,
    CLUSTER_ONLY,
    MACHINE_ONLY,
    Catalogue,
    Feature,
    Kind,
    Level,
    Reference,
    UnknownFeature,
)
from clusterd.schema.restrictions import (
    COMMANDS,
    CommandInfo,
    Restriction,
    UnknownCommand,
    restriction_of,
    switch_prompt,
)
from clusterd.schema.validation import InvalidSetting

__all__ = [
    "ALL_LEVELS",
    "CATALOGUE",
    "CLUSTER_ONLY",
    "COMMANDS",
    "MACHINE_ONLY",
    "Catalogue",
    "CommandInfo",
    "Feature",
    "InvalidSetting",
    "Kind",
    "Level",
    "Reference",
    "Restriction",
    "UnknownCommand",
    "UnknownFeature",
    "restriction_of",
    "switch_prompt",
]
