"""Joining a cluster: the wire exchange between a joining machine and a member.

The joining machine connects to a member's admin SSH port (passphrase of a cluster
admin, or its machine key registered with PREPJOIN) or to its CCS port (PREPJOIN key
only), opens the ``clusterd-join`` subsystem and sends one ``JoinRequest`` line; the
member answers one ``JoinAnswer`` line and closes.  ``check`` requests change nothing
(the dry run); a real request makes the member admit the machine and send the
cluster's state with the answer.

The member's host key is fetched first (``probe``) so a person can compare its
fingerprint (SHA256, as OpenSSH prints it); every later connection pins that key.
Every failure comes back as ``JoinRefused`` with a sentence saying what went wrong.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import asyncssh
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from clusterd.core.errors import ClusterdError
from clusterd.mesh.messages import SnapshotBody
from clusterd.schema.fields import DOMAIN_RE, NAME_RE, checked, host_key
from clusterd.schema.membership import SERIAL_RE

SUBSYSTEM = "clusterd-join"
KEY_HOW = "this machine's key (is it registered there with PREPJOIN NEW, and committed?)"
KEY_USER = "clusterd-join"  # the user a machine joining with a PREPJOIN key logs in as
MAX_REQUEST = 1 << 20
# What asyncssh adds to the key exchange list by itself: not algorithms a side chose.
_KEX_MARKERS = ("ext-info-", "kex-strict-")


class JoinRefused(ClusterdError):
    """A join that did not happen, and why; nothing changed on either side."""


class KeyNotRegistered(JoinRefused):
    """The member does not know this machine's key (yet): PREPJOIN NEW and commit it."""

    code = "not-registered"


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class JoinRequest(Wire):
    """Checked before anything is logged: a host name, a serial, a group name, a
    version, each a plain token (no spaces, no control characters)."""

    check: bool
    hostname: Annotated[
        str,
        BeforeValidator(lambda v: host_key(v) if isinstance(v, str) else v),
        AfterValidator(checked(DOMAIN_RE, "a host name")),
    ]
    serial: Annotated[str, AfterValidator(checked(SERIAL_RE, "a serial number"))]
    software: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:+-]{1,64}$")]
    group: Annotated[str, AfterValidator(checked(NAME_RE, "a group name"))]
    machine: dict[str, Any]  # the membership row: address, ports, transport, keys


class JoinAnswer(Wire):
    ok: bool
    error: str = ""
    cluster: str = ""
    member: str = ""
    software: str = ""
    snapshot: SnapshotBody | None = None  # the cluster's state, typed as a state transfer's


@dataclass(frozen=True, slots=True)
class Joiner:
    """Who opened a join session: a cluster admin (passphrase) or a prepared machine."""

    kind: Literal["passphrase", "key"]
    name: str  # the admin user, or the host name the key was registered for
    key: str = ""
    role: str = "admin"  # of the user, for a passphrase login


@dataclass(frozen=True, slots=True)
class Algorithms:
    """SSH algorithms offered, in order of preference (from ``sshconfig``)."""

    kex: tuple[str, ...] = ()
    encryption: tuple[str, ...] = ()
    mac: tuple[str, ...] = ()
    host_key: tuple[str, ...] = ()

    @classmethod
    def from_sshconfig(cls, value: dict[str, Any]) -> Algorithms:
        return cls(
            tuple(value["kex_algorithms"]),
            tuple(value["encryption_algorithms"]),
            tuple(value["mac_algorithms"]),
            tuple(value["host_key_algorithms"]),
        )

    def server_options(self) -> dict[str, Any]:
        return {"kex_algs": list(self.kex), "encryption_algs": list(self.encryption),
                "mac_algs": list(self.mac)}  # fmt: skip

    def client_options(self) -> dict[str, Any]:
        return {**self.server_options(), "server_host_key_algs": list(self.host_key)}


def fingerprint(key: asyncssh.SSHKey) -> str:
    """``SHA256:...`` exactly as ``ssh-keygen -l`` and ``ssh`` print it."""
    return str(key.get_fingerprint("sha256"))


def mismatch(exc: asyncssh.KeyExchangeFailed, where: str, ours: Algorithms | None = None) -> str:
    """Turn asyncssh's 'No matching X algorithm found, sent A and received B' into advice.

    The text comes from whichever side gave up first: when the far side did, its
    "sent" list is its own, so the lists are told apart by what this machine offers."""
    text = str(exc.reason)
    kind, _, rest = text.partition(" algorithm found, sent ")
    sent, _, received = rest.partition(" and received ")
    if not rest:
        return f"SSH negotiation with {where} failed: {text}"
    kind = kind.removeprefix("No matching ")

    def names(algs: str) -> list[str]:
        return [a for a in algs.split(",") if a and not a.startswith(_KEX_MARKERS)]

    mine, theirs = names(sent), names(received)
    offered = set() if ours is None else {*ours.kex, *ours.encryption, *ours.mac, *ours.host_key}
    if offered and not set(mine) & offered and set(theirs) & offered:
        mine, theirs = theirs, mine
    return (
        f"SSH algorithm mismatch with {where}: no common {kind} algorithm. "
        f"This machine offers: {', '.join(mine) or 'nothing'}. "
        f"{where} offers: {', '.join(theirs) or 'nothing'}. "
        f"Add one algorithm both accept to sshconfig on either side."
    )


class BannerClient(asyncssh.SSHClient):
    """Keeps the reasons a server gives in authentication banners."""

    def __init__(self) -> None:
        self.banners: list[str] = []

    def auth_banner_received(self, msg: str, lang: str) -> None:
        self.banners.append(msg.strip())


def _refused(
    exc: BaseException, where: str, client: BannerClient | None, how: str, algs: Algorithms
) -> JoinRefused:
    if isinstance(exc, asyncssh.KeyExchangeFailed):
        return JoinRefused(mismatch(exc, where, algs))
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return JoinRefused(
            f"{where} presented a host key other than the one confirmed: refusing to go on"
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        said = client.banners[-1] if client and client.banners else ""
        refused = KeyNotRegistered if how == KEY_HOW else JoinRefused
        return refused(f"{where} refused {how}" + (f": {said}" if said else ""))
    if isinstance(exc, TimeoutError):
        return JoinRefused(f"{where} did not answer in time")
    text = str(exc) or type(exc).__name__
    return JoinRefused(f"cannot reach {where}: {text}")


async def probe(address: str, port: int, algs: Algorithms, timeout: float) -> asyncssh.SSHKey:
    """The member's host key, before any authentication."""
    where = f"{address}:{port}"
    try:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(
                address,
                port,
                kex_algs=list(algs.kex),
                server_host_key_algs=list(algs.host_key),
                config=None,
            ),
            timeout,
        )
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise _refused(exc, where, None, "the connection", algs) from None
    if key is None:
        raise JoinRefused(f"{where} presented no host key")
    return key


async def call(
    address: str,
    port: int,
    *,
    host_key: asyncssh.SSHKey,
    request: JoinRequest,
    algs: Algorithms,
    timeout: float,
    passphrase: tuple[str, str] | None = None,
    machine_key: asyncssh.SSHKey | None = None,
) -> JoinAnswer:
    """One join exchange; ``passphrase`` is (user, passphrase), else ``machine_key``."""
    where = f"{address}:{port}"
    client = BannerClient()
    if passphrase is not None:
        auth: dict[str, Any] = {"username": passphrase[0], "password": passphrase[1],
                                "client_keys": None, "preferred_auth": "password"}  # fmt: skip
        how = f"the passphrase of user {passphrase[0]!r}"
    elif machine_key is not None:
        auth = {"username": KEY_USER, "client_keys": [machine_key], "preferred_auth": "publickey"}
        how = KEY_HOW
    else:
        raise JoinRefused("a join needs the admin passphrase or a key registered with PREPJOIN")
    try:
        conn, _ = await asyncio.wait_for(
            asyncssh.create_connection(
                lambda: client,
                address,
                port,
                known_hosts=([host_key], [], []),
                agent_path=None,
                config=None,
                **auth,
                **algs.client_options(),
            ),
            timeout,
        )
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise _refused(exc, where, client, how, algs) from None
    try:
        async with conn:
            process = await asyncio.wait_for(
                conn.create_process(subsystem=SUBSYSTEM, encoding=None), timeout
            )
            process.stdin.write(request.model_dump_json().encode() + b"\n")
            process.stdin.write_eof()
            raw = await asyncio.wait_for(process.stdout.read(), timeout * 10)
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise _refused(exc, where, client, how, algs) from None
    try:
        answer = JoinAnswer.model_validate_json(raw)
    except ValidationError:
        raise JoinRefused(f"{where} sent an answer that is not a join answer") from None
    if not answer.ok:
        raise JoinRefused(answer.error)
    return answer


@dataclass
class JoinLine:
    """The member side of a join session: collects one request line."""

    buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> JoinRequest | str | None:
        """The request once complete, an error sentence if malformed, else None."""
        self.buf += data
        line, newline, _ = bytes(self.buf).partition(b"\n")
        if len(line) > MAX_REQUEST:
            return "join request too long"
        if not newline:
            return None
        try:
            return JoinRequest.model_validate_json(line)
        except ValidationError as exc:
            return f"malformed join request: {str(exc).splitlines()[0]}"
