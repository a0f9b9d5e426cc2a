"""Membership: the cluster's name, its groups and its machines (internal features).

These features are edited by cluster operations (create, join, add a group, move a
machine ...), never by a feature editor, and are replicated like every other setting.
``cluster`` has no factory default: its record is written when the cluster is created,
so ``factory_value`` must not be called for it (it would report the missing name).

Each fact a membership operation changes is a unit of its own (``docs/membership.md``):
a machine's identity and reachability (``machines``), its group (``placement``), its
DISCONNECT flag (``detached``), its removal (``removed``).  Groups are rows keyed by an
id fixed at creation; their ``name`` is a field, so a rename writes no machine.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from clusterd.schema.access import public_key_line
from clusterd.schema.feature import CLUSTER_ONLY, Feature, Kind, Reference
from clusterd.schema.fields import (
    DOMAIN_RE,
    NAME_RE,
    IpAddress,
    Model,
    Name,
    Port,
    checked,
)

SERIAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


class Cluster(Model):
    name: Name
    # Fixed at create: links compare it, so renaming the cluster never splits it.
    id: Name | None = None


class Group(Model):
    """A group, keyed by its id; ``name`` (None: the id itself) is what people use."""

    name: Name | None = None


def _host_table(command: str, title: str, model: type[Model], **more: Any) -> Feature:
    """An internal table of the cluster, one row per machine, keyed by host name."""
    return Feature(
        **{
            "command": command,
            "title": title,
            "kind": Kind.TABLE,
            "model": model,
            "levels": CLUSTER_ONLY,
            "default": {},
            "internal": True,
            "row_name": re.compile(rf"{DOMAIN_RE.pattern}\Z"),
            "row_name_hint": "a fully qualified host name",
            **more,
        }
    )


class Machine(Model):
    """Who a member is and how to reach it (its group and flag are units of their own)."""

    serial: Annotated[str, AfterValidator(checked(SERIAL_RE, "a serial number"))]
    address: IpAddress | None = None
    ssh_port: Port = 22
    ccs_port: Port | None = None
    transport: Literal["ssh", "ccs"] = "ssh"
    host_key: Annotated[str, Field(min_length=1, max_length=16384)] | None = None
    machine_key: Annotated[str, Field(min_length=1, max_length=16384)] | None = None

    @model_validator(mode="after")
    def _ccs_port(self) -> Self:
        if self.transport == "ccs" and self.ccs_port is None:
            raise ValueError("transport 'ccs' needs a ccs_port")
        return self


CLUSTER = Feature(
    command="cluster",
    title="Cluster",
    kind=Kind.RECORD,
    model=Cluster,
    levels=CLUSTER_ONLY,
    default=None,
    internal=True,
    description="written when the cluster is created; has no factory value",
)

GROUPS = Feature(
    command="groups",
    title="Groups",
    kind=Kind.TABLE,
    model=Group,
    levels=CLUSTER_ONLY,
    default={},
    internal=True,
    row_name=re.compile(rf"{NAME_RE.pattern}\Z"),
    row_name_hint="a group id: letters, digits, '_', '.', '-' (64 at most)",
)

MACHINES = _host_table("machines", "Machines", Machine)


class Placement(Model):
    """The group a machine is in, by the group's id."""

    group: Name


PLACEMENT = _host_table(
    "placement",
    "Machine groups",
    Placement,
    references=(Reference(path="group", target="groups"),),
)


class Detached(Model):
    """A machine's DISCONNECT flag."""

    disconnected: bool = False


DETACHED = _host_table("detached", "Disconnected machines", Detached)


class Removed(Model):
    """A machine removed from the cluster (or a name a machine left): what it was, so
    that members can tell it."""

    serial: Annotated[str, AfterValidator(checked(SERIAL_RE, "a serial number"))]
    machine_key: Annotated[str, Field(min_length=1, max_length=16384)] | None = None
    by: Annotated[str, Field(max_length=64)] = ""  # the user who removed it
    at: float = 0.0  # when (seconds since the epoch)
    # Not removed but renamed (the serial is a member under this name): see
    # clusterd.core.membership.rename_machine.
    renamed_to: Annotated[str, AfterValidator(checked(DOMAIN_RE, "a host name"))] | None = None


REMOVED = _host_table("removed", "Removed machines", Removed)


class Prepared(Model):
    """A machine registered with PREPJOIN: it may join with its key, no passphrase."""

    serial: Annotated[str, AfterValidator(checked(SERIAL_RE, "a serial number"))]
    machine_key: Annotated[str, Field(max_length=16384), AfterValidator(public_key_line)]


PREPJOIN = _host_table(
    "prepjoin",
    "Machines prepared to join",
    Prepared,
    row_name_hint="the joining machine's fully qualified host name",
    description="PREPJOIN NEW adds a row (a pending change); a join with the key removes it",
)

MEMBERSHIP_FEATURES = [CLUSTER, GROUPS, MACHINES, PLACEMENT, DETACHED, REMOVED, PREPJOIN]
