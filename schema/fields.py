"""Field types shared by the feature models: ports, host names, addresses, patterns.

Each type is an ``Annotated`` alias usable as a pydantic field annotation.  Values are
checked with readable messages (``not a host name: 'a b'``) rather than raw regular
expressions, and kept as plain strings so the canonical JSON stays simple.  Every
pattern is matched with ``fullmatch``: a trailing newline is never accepted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class Model(BaseModel):
    """The base of every record and row model: no unknown fields, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# One DNS label: letters, digits and inner hyphens, at most 63 characters.
LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# A host name: one or more labels; a domain or FQDN: two or more labels.
HOSTNAME_RE = re.compile(rf"(?=.{{1,253}}\Z){LABEL}(?:\.{LABEL})*")
DOMAIN_RE = re.compile(rf"(?=.{{1,253}}\Z){LABEL}(?:\.{LABEL})+")
DOMAIN = rf"(?:{LABEL}(?:\.{LABEL})+)"
# The local part of an address: no spaces, no '@', not starting with '#' or '.'.
LOCAL_PART = r"[^\s@#.][^\s@]{0,63}"
EMAIL_RE = re.compile(rf"(?=.{{3,254}}\Z){LOCAL_PART}@{DOMAIN}")
TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._+-]{0,127}")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# An address pattern: user@domain, user@ (any domain), @domain, @.domain (its
# subdomains), domain, .domain; at most 254 characters.
ADDRESS_PATTERN_RE = re.compile(
    rf"(?=.{{1,254}}\Z)(?:{LOCAL_PART}@(?:{DOMAIN})?|@\.?{DOMAIN}|\.?{DOMAIN})"
)
# A sender pattern of a host access table: an address, network, host name, ".domain",
# "ALL", ...: anything without spaces, not starting with '#'.
SENDER_RE = re.compile(r"[^\s#]\S{0,253}")


@dataclass(frozen=True)
class Hint:
    """What a value of a field type is called, and examples of it: read by the shell's
    help and errors (``schema.words``), ignored by pydantic.  ``plural`` where adding
    "s" to ``what`` is wrong."""

    what: str
    examples: tuple[str, ...]
    plural: str = ""


def host_key(name: str) -> str:
    """A host name as clusterd keeps it: lower case, no trailing dot (DNS names are
    case-insensitive; ``NewYork.Example.com.`` is ``newyork.example.com``).

    >>> host_key(" NewYork.Example.com. ")
    'newyork.example.com'
    """
    return name.strip().lower().rstrip(".")


def checked(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    """A validator refusing a string that ``pattern`` does not fully match."""

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"not {what}: {value!r}")
        return value

    return check


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"not an IPv4 address: {value!r}") from None


def _ipv6(value: str) -> str:
    try:
        return str(ipaddress.IPv6Address(value))
    except ValueError:
        raise ValueError(f"not an IPv6 address: {value!r}") from None


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"not an IP network: {value!r}") from None


def _host(value: str) -> str:
    """A host name, or an IP address (normalised)."""
    if ":" not in value and not value.replace(".", "").isdigit() and HOSTNAME_RE.fullmatch(value):
        return value  # the common case, without an exception from ipaddress
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not HOSTNAME_RE.fullmatch(value):
        raise ValueError(f"not a host name or IP address: {value!r}")
    return value


def _unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice")
        seen.add(value)
    return values


Port = Annotated[int, Field(ge=1, le=65535)]
Priority = Annotated[int, Field(ge=0, le=65535)]
Hostname = Annotated[
    str,
    AfterValidator(checked(HOSTNAME_RE, "a host name")),
    Hint("host name", ("mail", "mail.example.com")),
]
Fqdn = Annotated[
    str,
    AfterValidator(checked(DOMAIN_RE, "a fully qualified host name")),
    Hint("fully qualified host name", ("mx1.example.com", "mx2.example.com")),
]
Domain = Annotated[
    str,
    AfterValidator(checked(DOMAIN_RE, "a domain name")),
    Hint("domain name", ("example.com", "example.org")),
]
Host = Annotated[
    str,
    AfterValidator(_host),
    Hint(
        "host name or IP address",
        ("mx1.example.com", "mx2.example.com"),
        plural="host names or IP addresses",
    ),
]
Email = Annotated[
    str,
    AfterValidator(checked(EMAIL_RE, "an email address")),
    Hint("email address", ("postmaster@example.com", "ops@example.com")),
]
IpAddress = Annotated[str, AfterValidator(_ip), Hint("IP address", ("10.0.0.53", "10.0.0.54"))]
IPv4 = Annotated[str, AfterValidator(_ipv4), Hint("IPv4 address", ("10.0.0.1", "10.0.0.2"))]
IPv6 = Annotated[str, AfterValidator(_ipv6), Hint("IPv6 address", ("2001:db8::1", "2001:db8::2"))]
IpNetwork = Annotated[
    str, AfterValidator(_network), Hint("IP network", ("10.1.0.0/16", "2001:db8::/32"))
]
# A name from a fixed vocabulary we do not enumerate (an SSH algorithm, ...).
Token = Annotated[str, AfterValidator(checked(TOKEN_RE, "a name")), Hint("name", ("name",))]
Name = Annotated[
    str,
    AfterValidator(checked(NAME_RE, "a name (letters, digits, '_', '.', '-')")),
    Hint("name (letters, digits, '_', '.', '-')", ("main", "backup")),
]
AddressPattern = Annotated[
    str,
    AfterValidator(checked(ADDRESS_PATTERN_RE, "an address, domain or '@domain' pattern")),
    Hint("address, domain or @domain pattern", ("user@example.com", "@example.org")),
]
SenderPattern = Annotated[
    str,
    AfterValidator(checked(SENDER_RE, "a sender pattern")),
    Hint("sender pattern (address, network, host, .domain, ALL)", ("10.1.0.0/16", ".example.com")),
]
# The name of a row of another table (see Reference); checked against that table elsewhere.
RowName = Annotated[str, Field(min_length=1, max_length=254)]


def unique() -> AfterValidator:
    """Annotate a list of strings so that an item listed twice is refused."""
    return AfterValidator(_unique)
