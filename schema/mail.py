"""The mail features: clusterable settings that may be defined at every level.

This module holds DNS, SMTP routes, listeners, destination controls, bounce profiles
and text resources; ``schema.services`` holds the rest (LDAP, SMTP authentication,
NTP, time zone, alerts, unsubscribe), listed after them in ``MAIL_FEATURES``.

Each feature pairs a pydantic model (the record, or one row of a table) with its
factory default and the references its fields make to rows of other tables.  A field
that names a row of another table is a plain string here; whether that row exists is
checked by the store through ``Feature.references``.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from clusterd.schema.feature import ALL_LEVELS, Feature, Kind, Reference
from clusterd.schema.fields import (
    ADDRESS_PATTERN_RE,
    DOMAIN,
    Domain,
    Hint,
    Host,
    IpAddress,
    Model,
    Name,
    Port,
    Priority,
    RowName,
    SenderPattern,
    unique,
)
from clusterd.schema.services import ADDED, SERVICE_FEATURES

# --- dnsconfig ---------------------------------------------------------------------


class DnsServer(Model):
    noun: ClassVar[str] = "DNS server"
    shorthand: ClassVar[str] = "address"  # the shell's servers=10.0.0.53,10.0.0.54

    address: IpAddress
    priority: Priority = 0


class AlternateDomain(Model):
    """Queries for ``domain`` go to ``servers`` rather than to the usual resolvers."""

    domain: Domain
    servers: Annotated[list[IpAddress], Field(min_length=1), unique()]


class DnsConfig(Model):
    mode: Literal["internet-root", "local"] = "internet-root"
    servers: list[DnsServer] = Field(default_factory=list)
    timeout_seconds: Annotated[int, Field(ge=1, le=600)] = 60
    alternate_domains: list[AlternateDomain] = Field(default_factory=list)

    @model_validator(mode="after")
    def _local_needs_servers(self) -> Self:
        if self.mode == "local" and not self.servers:
            raise ValueError("mode 'local' needs at least one DNS server")
        return self


# --- smtproutes --------------------------------------------------------------------


class RouteDestination(Model):
    shorthand: ClassVar[str] = "host"  # the shell's destinations=mx1.example.com:25,...

    host: Host
    port: Port = 25
    priority: Priority = 0


class SmtpRoute(Model):
    destinations: Annotated[list[RouteDestination], Field(min_length=1)]
    smtp_auth_profile: RowName | None = ADDED  # an "outgoing" smtpauthconfig profile


# --- listenerconfig ----------------------------------------------------------------


class ListenerLdapQuery(Model):
    kind: Literal["accept", "routing", "masquerade", "group"]
    query: RowName


class SenderGroup(Model):
    name: Name
    senders: list[SenderPattern] = Field(default_factory=list)
    policy: Literal["ACCEPT", "REJECT", "TCPREFUSE", "RELAY", "THROTTLED"]


def _recipient(value: str) -> str:
    if value != "ALL" and not ADDRESS_PATTERN_RE.fullmatch(value):
        raise ValueError(f"not a recipient pattern: {value!r}")
    return value


class RatEntry(Model):
    recipient: Annotated[
        str,
        AfterValidator(_recipient),
        Hint("recipient pattern (address, domain, @domain or ALL)", ("@example.com", "ALL")),
    ]
    action: Literal["ACCEPT", "REJECT"]


class Listener(Model):
    """One listener: where it listens, its host access table (HAT) and recipient
    access table (RAT), and the profiles it uses."""

    interface: RowName
    port: Port = 25
    type: Literal["public", "private"] = "public"
    bounce_profile: RowName | None = None
    disclaimer_above: RowName | None = None
    disclaimer_below: RowName | None = None
    smtp_auth_profile: RowName | None = None
    ldap_queries: list[ListenerLdapQuery] = Field(default_factory=list)
    hat: list[SenderGroup] = Field(default_factory=list)
    rat: list[RatEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.type == "public" and not self.rat:
            raise ValueError(
                "a public listener without RAT entries is an open relay; "
                "add at least one recipient to 'rat'"
            )
        groups = [group.name for group in self.hat]
        for name in groups:
            if groups.count(name) > 1:
                raise ValueError(f"sender group {name!r} is defined twice in 'hat'")
        kinds = [use.kind for use in self.ldap_queries]
        for kind in kinds:
            if kinds.count(kind) > 1:
                raise ValueError(f"more than one {kind!r} LDAP query")
        return self


# --- destconfig --------------------------------------------------------------------


class DestinationControl(Model):
    max_concurrent_connections: Annotated[int, Field(ge=1, le=1000)] = 500
    max_messages_per_connection: Annotated[int, Field(ge=1, le=1000)] = 50
    max_recipients_per_hour: Annotated[int, Field(ge=1)] | None = None
    tls: Literal["none", "preferred", "required"] = "none"
    bounce_profile: RowName | None = None


# --- bounceconfig ------------------------------------------------------------------


class BounceProfile(Model):
    max_retries: Annotated[int, Field(ge=0, le=10000)] = 100
    max_queue_lifetime_seconds: Annotated[int, Field(ge=0, le=30 * 86400)] = 259200
    initial_retry_seconds: Annotated[int, Field(ge=1, le=86400)] = 60
    max_retry_seconds: Annotated[int, Field(ge=1, le=86400)] = 3600
    hard_bounce_messages: bool = True
    send_delay_warnings: bool = False

    @model_validator(mode="after")
    def _retry_order(self) -> Self:
        if self.initial_retry_seconds > self.max_retry_seconds:
            raise ValueError(
                f"initial_retry_seconds ({self.initial_retry_seconds}) must not exceed "
                f"max_retry_seconds ({self.max_retry_seconds})"
            )
        return self


# --- textconfig --------------------------------------------------------------------

TEXT_MAX_BYTES = 64 * 1024


class TextResource(Model):
    type: Literal["disclaimer", "notification", "bounce", "antivirus"]
    encoding: Literal["us-ascii", "utf-8", "iso-8859-1"] = "utf-8"
    text: Annotated[str, Field(min_length=1)]

    @model_validator(mode="after")
    def _fits(self) -> Self:
        try:
            size = len(self.text.encode(self.encoding))
        except UnicodeEncodeError:
            raise ValueError(f"the text cannot be encoded as {self.encoding}") from None
        if size > TEXT_MAX_BYTES:
            raise ValueError(f"the text is {size} bytes long; at most {TEXT_MAX_BYTES} allowed")
        return self


# --- the features ------------------------------------------------------------------

DNSCONFIG = Feature(
    command="dnsconfig",
    title="DNS",
    kind=Kind.RECORD,
    model=DnsConfig,
    levels=ALL_LEVELS,
    default={"mode": "internet-root", "servers": [], "timeout_seconds": 60},
)

SMTPROUTES = Feature(
    command="smtproutes",
    title="SMTP Routes",
    kind=Kind.TABLE,
    model=SmtpRoute,
    levels=ALL_LEVELS,
    default={},
    row_name=re.compile(rf"(?:ALL|\.?{DOMAIN})\Z"),
    row_name_hint="a domain, '.domain' for its subdomains, or 'ALL'",
    description="mail for a domain goes to its destinations, lowest priority first",
    references=(
        Reference(path="smtp_auth_profile", target="smtpauthconfig", where=("type", "outgoing")),
    ),
)

LISTENERCONFIG = Feature(
    command="listenerconfig",
    title="Listeners (including HAT, RAT, bounce profiles)",
    kind=Kind.TABLE,
    model=Listener,
    levels=ALL_LEVELS,
    default={},
    references=(
        Reference(path="interface", target="interfaceconfig"),
        Reference(path="bounce_profile", target="bounceconfig"),
        Reference(path="disclaimer_above", target="textconfig", where=("type", "disclaimer")),
        Reference(path="disclaimer_below", target="textconfig", where=("type", "disclaimer")),
        Reference(path="smtp_auth_profile", target="smtpauthconfig"),
        Reference(path="ldap_queries.query", target="ldapconfig", where=("kind", "query")),
    ),
)

DESTCONFIG = Feature(
    command="destconfig",
    title="Destination Controls",
    kind=Kind.TABLE,
    model=DestinationControl,
    levels=ALL_LEVELS,
    default={
        "Default": {
            "max_concurrent_connections": 500,
            "max_messages_per_connection": 50,
            "max_recipients_per_hour": None,
            "tls": "none",
            "bounce_profile": None,
        }
    },
    references=(Reference(path="bounce_profile", target="bounceconfig"),),
    row_name=re.compile(rf"(?:Default|{DOMAIN})\Z"),
    row_name_hint="a domain, or 'Default'",
    description="limits are applied per machine",
)

BOUNCECONFIG = Feature(
    command="bounceconfig",
    title="Bounce Profiles",
    kind=Kind.TABLE,
    model=BounceProfile,
    levels=ALL_LEVELS,
    default={
        "Default": {
            "max_retries": 100,
            "max_queue_lifetime_seconds": 259200,
            "initial_retry_seconds": 60,
            "max_retry_seconds": 3600,
            "hard_bounce_messages": True,
            "send_delay_warnings": False,
        }
    },
)

TEXTCONFIG = Feature(
    command="textconfig",
    title="Text Resources",
    kind=Kind.TABLE,
    model=TextResource,
    levels=ALL_LEVELS,
    default={},
)

MAIL_FEATURES = [
    DNSCONFIG,
    SMTPROUTES,
    LISTENERCONFIG,
    DESTCONFIG,
    BOUNCECONFIG,
    TEXTCONFIG,
    *SERVICE_FEATURES,
]
