"""Network features: what makes one machine reachable (machine level only).

These are ``network`` features: they stay at machine level when a cluster is created
and survive a join, since no two machines share an address.  Interfaces have no
factory rows: each machine's interfaces are set up on that machine (by ``clusterd
init`` or the installer), never copied from another.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Self

from pydantic import Field, model_validator

from clusterd.schema.feature import MACHINE_ONLY, Feature, Kind
from clusterd.schema.fields import Fqdn, IpAddress, IpNetwork, IPv4, IPv6, Model

# Where the ports a machine listens on are set: one place, the machine's own.
PORTS_ELSEWHERE = (
    "the SSH and CCS ports are not interface settings: CCS is turned on or off with "
    "'clusterconfig ccs on|off' on the machine (ccs_port and ssh_port in its "
    "clusterd.toml), and LISTDETAIL shows what members use"
)


class Interface(Model):
    """One network interface of a machine: address, prefix, host name.  (Ports are not
    here: ``PORTS_ELSEWHERE``.)"""

    address: IpAddress
    prefix: Annotated[int, Field(ge=0, le=128)]
    hostname: Fqdn

    @model_validator(mode="before")
    @classmethod
    def _no_ports(cls, data: Any) -> Any:
        if isinstance(data, dict) and {"ssh_port", "ccs_enabled", "ccs_port"} & set(data):
            raise ValueError(PORTS_ELSEWHERE)
        return data

    @model_validator(mode="after")
    def _prefix_fits(self) -> Self:
        width = ipaddress.ip_address(self.address).max_prefixlen
        if self.prefix > width:
            raise ValueError(
                f"prefix {self.prefix} is too long for {self.address} (at most {width})"
            )
        return self


class HostName(Model):
    hostname: Fqdn


class Gateway(Model):
    ipv4: IPv4 | None = None
    ipv6: IPv6 | None = None


class Route(Model):
    destination: IpNetwork
    gateway: IpAddress

    @model_validator(mode="after")
    def _same_version(self) -> Self:
        network = ipaddress.ip_network(self.destination)
        gateway = ipaddress.ip_address(self.gateway)
        if network.version != gateway.version:
            raise ValueError(
                f"destination {self.destination} is IPv{network.version} "
                f"but gateway {self.gateway} is IPv{gateway.version}"
            )
        return self


INTERFACECONFIG = Feature(
    command="interfaceconfig",
    title="Network Interfaces",
    kind=Kind.TABLE,
    model=Interface,
    levels=MACHINE_ONLY,
    default={},
    network=True,
    row_name=re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}\Z"),
    row_name_hint="an interface name: a letter, then letters, digits, '_', '.', '-' (32 at most)",
    description="no factory rows: every machine's interfaces are set up on that machine",
)

SETHOSTNAME = Feature(
    command="sethostname",
    title="Host Name",
    kind=Kind.RECORD,
    model=HostName,
    levels=MACHINE_ONLY,
    default={"hostname": "localhost.localdomain"},
    network=True,
    description="committing a new name renames the machine on every member: its serial, "
    "settings, group and links stay (docs/membership.md)",
)

SETGATEWAY = Feature(
    command="setgateway",
    title="Default Gateway",
    kind=Kind.RECORD,
    model=Gateway,
    levels=MACHINE_ONLY,
    default={"ipv4": None, "ipv6": None},
    network=True,
)

ROUTECONFIG = Feature(
    command="routeconfig",
    title="Static Routes",
    kind=Kind.TABLE,
    model=Route,
    levels=MACHINE_ONLY,
    default={},
    network=True,
)

NETWORK_FEATURES = [INTERFACECONFIG, SETHOSTNAME, SETGATEWAY, ROUTECONFIG]
