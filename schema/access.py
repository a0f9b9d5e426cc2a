"""Who may administer the cluster, and how: users and SSH settings (cluster level only).

Passphrases are never stored: ``userconfig`` keeps only the output of
``hash_passphrase`` (scrypt), and refuses anything else.  The table is empty by
factory default; ``clusterd init`` creates the first admin user with a passphrase the
operator types, so no known passphrase ships with the software.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from clusterd.schema.feature import CLUSTER_ONLY, Feature, Kind
from clusterd.schema.fields import Hint, Model, Token, unique

# --- passphrases -------------------------------------------------------------------

MIN_PASSPHRASE_LENGTH = 8
SALT_BYTES = 16
HASH_BYTES = 32
SCRYPT_R = 8
SCRYPT_P = 1
# The most memory one hash may need to verify: a replicated hash must not let a peer
# make every machine allocate gigabytes.
MAX_SCRYPT_MEMORY = 64 * 1024 * 1024

_HASH_RE = re.compile(
    r"scrypt\$([1-9][0-9]{0,9})\$([1-9][0-9]{0,3})\$([1-9][0-9]{0,3})"
    r"\$([A-Za-z0-9+/]{22}==)\$([A-Za-z0-9+/]{43}=)"
)


def _scrypt_memory(n: int, r: int, p: int) -> int:
    # What OpenSSL allocates: the B blocks (p * 128 * r) and V (128 * r * (n + 2)).
    return 128 * r * (n + 2 + p)


def _check_cost(n: int, r: int, p: int) -> None:
    if n < 2 or n & (n - 1):
        raise ValueError(f"scrypt n must be a power of two of at least 2, not {n}")
    if _scrypt_memory(n, r, p) > MAX_SCRYPT_MEMORY:
        raise ValueError("scrypt parameters need too much memory")


def _scrypt(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        passphrase.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=_scrypt_memory(n, r, p) + 1024 * 1024,
        dklen=HASH_BYTES,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_passphrase(passphrase: str, *, n: int = 2**14) -> str:
    """The stored form of a passphrase: ``scrypt$n$r$p$salt_b64$hash_b64``."""
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise ValueError(f"a passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters long")
    _check_cost(n, SCRYPT_R, SCRYPT_P)
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(passphrase, salt, n, SCRYPT_R, SCRYPT_P)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _parse(hashed: str) -> tuple[int, int, int, bytes, bytes] | None:
    match = _HASH_RE.fullmatch(hashed)
    if match is None:
        return None
    n, r, p = (int(match.group(i)) for i in (1, 2, 3))
    try:
        _check_cost(n, r, p)
        salt = base64.b64decode(match.group(4), validate=True)
        digest = base64.b64decode(match.group(5), validate=True)
    except (ValueError, binascii.Error):
        return None
    return n, r, p, salt, digest


def verify_passphrase(passphrase: str, hashed: str) -> bool:
    """Whether ``passphrase`` is the one ``hashed`` was made from (False if malformed)."""
    parsed = _parse(hashed)
    if parsed is None:
        return False
    n, r, p, salt, digest = parsed
    return hmac.compare_digest(_scrypt(passphrase, salt, n, r, p), digest)


def _hashed(value: str) -> str:
    if _parse(value) is None:
        raise ValueError("passphrase must be stored as a hash; use passwd")
    return value


# --- userconfig --------------------------------------------------------------------


class User(Model):
    full_name: Annotated[str, Field(max_length=128)] = ""
    role: Literal["admin", "operator", "read-only", "guest"]
    passphrase_hash: Annotated[str, AfterValidator(_hashed)]


USER_NAME_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\Z")

USERCONFIG = Feature(
    command="userconfig",
    title="Users",
    kind=Kind.TABLE,
    model=User,
    levels=CLUSTER_ONLY,
    default={},
    row_name=USER_NAME_RE,
    row_name_hint="a lower-case user name of at most 32 characters",
    description="empty by factory default: 'clusterd init' creates the admin user",
    secrets=("passphrase_hash",),
)

# --- sshconfig ---------------------------------------------------------------------

_PUBLIC_KEY_RE = re.compile(
    r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( .*)?"
)


def public_key_line(value: str) -> str:
    if not _PUBLIC_KEY_RE.fullmatch(value):
        raise ValueError("not an OpenSSH public key line ('ssh-ed25519 AAAA... comment')")
    return value


def _user_name(value: str) -> str:
    if not USER_NAME_RE.match(value):
        raise ValueError(f"not a user name: {value!r}")
    return value


class AdminKey(Model):
    user: Annotated[str, AfterValidator(_user_name), Hint("user name", ("admin", "ops"))]
    key: Annotated[
        str,
        Field(max_length=16384),
        AfterValidator(public_key_line),
        Hint("OpenSSH public key line", ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 admin@example.com",)),
    ]


Algorithms = Annotated[list[Token], Field(min_length=1), unique()]

KEX_ALGORITHMS = (
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "diffie-hellman-group14-sha256",
)
ENCRYPTION_ALGORITHMS = (
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes128-ctr",
)
MAC_ALGORITHMS = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
)
HOST_KEY_ALGORITHMS = ("ssh-ed25519", "rsa-sha2-256", "rsa-sha2-512", "ecdsa-sha2-nistp256")


class SshConfig(Model):
    admin_keys: list[AdminKey] = Field(default_factory=list)
    kex_algorithms: Algorithms = Field(default_factory=lambda: list(KEX_ALGORITHMS))
    encryption_algorithms: Algorithms = Field(default_factory=lambda: list(ENCRYPTION_ALGORITHMS))
    mac_algorithms: Algorithms = Field(default_factory=lambda: list(MAC_ALGORITHMS))
    host_key_algorithms: Algorithms = Field(default_factory=lambda: list(HOST_KEY_ALGORITHMS))


SSHCONFIG = Feature(
    command="sshconfig",
    title="SSH Settings",
    kind=Kind.RECORD,
    model=SshConfig,
    levels=CLUSTER_ONLY,
    default={
        "admin_keys": [],
        "kex_algorithms": list(KEX_ALGORITHMS),
        "encryption_algorithms": list(ENCRYPTION_ALGORITHMS),
        "mac_algorithms": list(MAC_ALGORITHMS),
        "host_key_algorithms": list(HOST_KEY_ALGORITHMS),
    },
    description="algorithms are listed in order of preference",
)

ACCESS_FEATURES = [USERCONFIG, SSHCONFIG]
