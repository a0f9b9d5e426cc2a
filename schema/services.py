"""Directory, authentication, time, alert and unsubscribe features (clusterable).

The second half of the mail features (see ``schema.mail``): LDAP server profiles and
queries, SMTP authentication profiles, NTP, the time zone, alert recipients and the
global unsubscribe table.  All may be defined at every level.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from clusterd.schema.feature import ALL_LEVELS, Feature, Kind, Reference
from clusterd.schema.fields import (
    ADDRESS_PATTERN_RE,
    EMAIL_RE,
    Hint,
    Host,
    Model,
    Port,
    RowName,
    unique,
)

# --- shared by the models below ------------------------------------------------------


def _user_name(value: str) -> str:
    """A user name as Postfix's ``user:password`` tables hold it: the first ':' ends it."""
    if any(ch.isspace() or ch == ":" or not ch.isprintable() for ch in value):
        raise ValueError("a user name has no whitespace, ':' or control characters")
    return value


def _password(value: str) -> str:
    """A password that fits on one line of a Postfix table or ``.cf`` file, which trims
    the ends of a value: printable characters, none of them space at either end."""
    if not value.isprintable():
        raise ValueError("a password has no newline or other control characters")
    if value != value.strip():
        raise ValueError("a password does not start or end with whitespace")
    return value


UserName = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_user_name)]
Password = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_password)]
LdapAttribute = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9-]{0,63}$")]


def _unset(value: object) -> bool:
    return value is None


# The default of an optional field added to a model that already had rows: left out of
# the canonical JSON while unset, so a row that does not use it reads as it did before.
ADDED = Field(default=None, exclude_if=_unset)

# --- ldapconfig --------------------------------------------------------------------


class LdapProfile(Model):
    """How to reach one LDAP directory."""

    kind: Literal["profile"]
    hostnames: Annotated[list[Host], Field(min_length=1), unique()]
    port: Port = 389
    base_dn: Annotated[str, Field(min_length=1, max_length=1024)]
    auth: Literal["anonymous", "password"] = "anonymous"
    bind_dn: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    bind_password: Password | None = ADDED
    connection_security: Literal["none", "starttls", "ssl"] = "none"

    @model_validator(mode="after")
    def _bind(self) -> Self:
        if self.auth == "password" and self.bind_dn is None:
            raise ValueError("auth 'password' needs a bind_dn")
        if self.auth == "password" and self.bind_password is None:
            raise ValueError("auth 'password' needs a bind_password")
        return self


class LdapQuery(Model):
    """One query run against the directory of an LDAP profile.  ``query_string`` names
    the address looked up as ``{a}``, its local part as ``{u}`` and its domain as
    ``{d}``; ``result_attribute`` is the attribute of the entries found that is the
    answer (the rewritten address of a routing or masquerading query; unset: ``mail``)."""

    kind: Literal["query"]
    profile: RowName
    query_type: Literal["accept", "routing", "masquerade", "group", "smtpauth"]
    query_string: Annotated[str, Field(min_length=1, max_length=1024)]
    result_attribute: LdapAttribute | None = ADDED


LdapEntry = Annotated[LdapProfile | LdapQuery, Field(discriminator="kind")]


# --- smtpauthconfig ----------------------------------------------------------------


class ForwardServer(Model):
    shorthand: ClassVar[str] = "host"  # the shell's forward_servers=auth.example.com:587

    host: Host
    port: Port = 25


class SmtpAuthProfile(Model):
    """How SMTP clients authenticate: "ldap" and "forward" profiles check the clients of
    a listener; an "outgoing" profile is what this gateway gives the servers of a route
    (``smtproutes`` ``smtp_auth_profile``)."""

    type: Literal["ldap", "forward", "outgoing"]
    ldap_query: RowName | None = None
    forward_servers: list[ForwardServer] = Field(default_factory=list)
    username: UserName | None = ADDED
    password: Password | None = ADDED

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.type == "ldap" and self.ldap_query is None:
            raise ValueError("an 'ldap' profile needs an ldap_query")
        if self.type == "forward" and not self.forward_servers:
            raise ValueError("a 'forward' profile needs at least one forward server")
        if self.type == "outgoing" and (self.username is None or self.password is None):
            raise ValueError("an 'outgoing' profile needs a username and a password")
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
    timezone: Annotated[
        str, AfterValidator(_time_zone), Hint("time zone", ("Europe/Paris", "America/New_York"))
    ] = "UTC"


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
    secrets=("bind_password",),
)

SMTPAUTHCONFIG = Feature(
    command="smtpauthconfig",
    title="SMTP Authentication Profiles",
    kind=Kind.TABLE,
    model=SmtpAuthProfile,
    levels=ALL_LEVELS,
    default={},
    references=(Reference(path="ldap_query", target="ldapconfig", where=("kind", "query")),),
    secrets=("password",),
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
