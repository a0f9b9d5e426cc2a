"""Directory, authentication, time, alert and unsubscribe features (clusterable).

The second half of the mail features (see ``schema.mail``): LDAP server profiles and
queries, SMTP authentication profiles, NTP, the time zone, alert recipients and the
global unsubscribe table.  All may be defined at every level.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from clusterd.schema.feature import ALL_LEVELS, Feature, Kind, Reference
from clusterd.schema.fields import ADDRESS_PATTERN_RE, EMAIL_RE, Host, Model, Port, RowName, unique

# --- ldapconfig --------------------------------------------------------------------


class LdapProfile(Model):
    """How to reach one LDAP directory."""

    kind: Literal["profile"]
    hostnames: Annotated[list[Host], Field(min_length=1), unique()]
    port: Port = 389
    base_dn: Annotated[str, Field(min_length=1, max_length=1024)]
    auth: Literal["anonymous", "password"] = "anonymous"
    bind_dn: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    connection_security: Literal["none", "starttls", "ssl"] = "none"

    @model_validator(mode="after")
    def _bind(self) -> Self:
        if self.auth == "password" and self.bind_dn is None:
            raise ValueError("auth 'password' needs a bind_dn")
        return self


class LdapQuery(Model):
    """One query run against the directory of an LDAP profile."""

    kind: Literal["query"]
    profile: RowName
    query_type: Literal["accept", "routing", "masquerade", "group", "smtpauth"]
    query_string: Annotated[str, Field(min_length=1, max_length=1024)]


LdapEntry = Annotated[LdapProfile | LdapQuery, Field(discriminator="kind")]


# --- smtpauthconfig ----------------------------------------------------------------


class ForwardServer(Model):
    host: Host
    port: Port = 25


class SmtpAuthProfile(Model):
    type: Literal["ldap", "forward"]
    ldap_query: RowName | None = None
    forward_servers: list[ForwardServer] = Field(default_factory=list)

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.type == "ldap" and self.ldap_query is None:
            raise ValueError("an 'ldap' profile needs an ldap_query")
        if self.type == "forward" and not self.forward_servers:
            raise ValueError("a 'forward' profile needs at least one forward server")
        return self


# --- ntpconfig, settz --------------------------------------------------------------


class NtpConfig(Model):
    servers: Annotated[list[Host], Field(min_length=1), unique()]
    source_interface: RowName | None = None


@functools.cache
def time_zones() -> frozenset[str]:
    """The names of the tz database (computed once: it reads the disk)."""
    return frozenset(zoneinfo.available_timezones())


def _time_zone(value: str) -> str:
    if value not in time_zones():
        raise ValueError(f"unknown time zone {value!r}")
    return value


class TimeZone(Model):
    timezone: Annotated[str, AfterValidator(_time_zone)] = "UTC"


# --- alertconfig, unsubscribe ------------------------------------------------------

AlertClass = Literal["all", "antivirus", "antispam", "clustering", "hardware", "system", "updater"]
Severity = Literal["critical", "warning", "information"]


class AlertRecipient(Model):
    classes: Annotated[list[AlertClass], Field(min_length=1), unique()]
    severities: Annotated[list[Severity], Field(min_length=1), unique()]


class Unsubscribe(Model):
    """Kept tiny: the table may hold 100,000 rows."""

    comment: Annotated[str, Field(max_length=200)] = ""


# --- the features ------------------------------------------------------------------

LDAPCONFIG = Feature(
    command="ldapconfig",
    title="LDAP Server Profiles and Queries",
    kind=Kind.TABLE,
    model=LdapEntry,
    levels=ALL_LEVELS,
    default={},
    references=(Reference(path="profile", target="ldapconfig", where=("kind", "profile")),),
    description="rows of kind 'profile' say how to reach a directory; rows of kind "
    "'query' run a query against a profile",
)

SMTPAUTHCONFIG = Feature(
    command="smtpauthconfig",
    title="SMTP Authentication Profiles",
    kind=Kind.TABLE,
    model=SmtpAuthProfile,
    levels=ALL_LEVELS,
    default={},
    references=(Reference(path="ldap_query", target="ldapconfig", where=("kind", "query")),),
)

NTPCONFIG = Feature(
    command="ntpconfig",
    title="NTP",
    kind=Kind.RECORD,
    model=NtpConfig,
    levels=ALL_LEVELS,
    default={"servers": ["pool.ntp.org"], "source_interface": None},
    references=(Reference(path="source_interface", target="interfaceconfig"),),
)

SETTZ = Feature(
    command="settz",
    title="Time Zone",
    kind=Kind.RECORD,
    model=TimeZone,
    levels=ALL_LEVELS,
    default={"timezone": "UTC"},
)

ALERTCONFIG = Feature(
    command="alertconfig",
    title="Alerts",
    kind=Kind.TABLE,
    model=AlertRecipient,
    levels=ALL_LEVELS,
    default={},
    row_name=re.compile(rf"{EMAIL_RE.pattern}\Z"),
    row_name_hint="an email address",
)

UNSUBSCRIBE = Feature(
    command="unsubscribe",
    title="Global Unsubscribe",
    kind=Kind.TABLE,
    model=Unsubscribe,
    levels=ALL_LEVELS,
    default={},
    row_name=re.compile(rf"{ADDRESS_PATTERN_RE.pattern}\Z"),
    row_name_hint="user@domain, user@, @domain, @.domain or domain (at most 254 characters)",
    description="mail to a matching recipient is never delivered",
)

SERVICE_FEATURES = [LDAPCONFIG, SMTPAUTHCONFIG, NTPCONFIG, SETTZ, ALERTCONFIG, UNSUBSCRIBE]
