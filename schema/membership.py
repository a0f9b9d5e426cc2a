"""Membership: the cluster's name, its groups and its machines (internal features).

These features are edited by cluster operations (create, join, add a group, move a
machine ...), never by a feature editor, and are replicated like every other setting.
``cluster`` has no factory default: its record is written when the cluster is created,
so ``factory_value`` must not be called for it (it would report the missing name).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from schema.access import public_key_line
from schema.feature import CLUSTER_ONLY, Feature, Kind, Reference
from schema.fields import (
    DOMAIN_RE,
    NAME_RE,
    IpAddress,
    Model,
    Name,
    Port,
    RowName,
    checked,
)

SERIAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


class Cluster(Model):
    name: Name
    # Fixed at create: links compare it, so renaming the cluster never splits it.
    id: Name | None = None


class Group(Model):
    """A group has no settings of its own besides its name (the row name)."""


class Machine(Model):
    serial: Annotated[str, AfterValidator(checked(SERIAL_RE, "a serial number"))]
    group: RowName
    address: IpAddress | None = None
    ssh_port: Port = 22
    ccs_port: Port | None = None
    transport: Literal["ssh", "ccs"] = "ssh"
    host_key: Annotated[str, Field(min_length=1, max_length=16384)] | None = None
    machine_key: Annotated[str, Field(min_length=1, max_length=16384)] | None = None
    disconnected: bool = False

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
    row_name_hint="a group name: letters, digits, '_', '.', '-' (64 at most)",
)

MACHINES = Feature(
    command="machines",
    title="Machines",
    kind=Kind.TABLE,
    model=Machine,
    levels=CLUSTER_ONLY,
    default={},
    references=(Reference(path="group", target="groups"),),
    internal=True,
    row_name=re.compile(rf"{DOMAIN_RE.pattern}\Z"),
    row_name_hint="a fully qualified host name",
)


class Prepared(Model):
    """A machine registered with PREPJOIN: it may join with its key, no passphrase."""

    serial: Annotated[str, AfterValidator(checked(SERIAL_RE, "a serial number"))]
    machine_key: Annotated[str, Field(max_length=16384), AfterValidator(public_key_line)]


PREPJOIN = Feature(
    command="prepjoin",
    title="Machines prepared to join",
    kind=Kind.TABLE,
    model=Prepared,
    levels=CLUSTER_ONLY,
    default={},
    internal=True,
    row_name=re.compile(rf"{DOMAIN_RE.pattern}\Z"),
    row_name_hint="the joining machine's fully qualified host name",
    description="PREPJOIN NEW adds a row (a pending change); a join with the key removes it",
)

MEMBERSHIP_FEATURES = [CLUSTER, GROUPS, MACHINES, PREPJOIN]
